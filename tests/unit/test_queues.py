"""The Celery settings every process shares, and who may import what (the API hands work
over by task name and never loads torch or diffusers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kombu import Queue  # type: ignore[attr-defined]

from stepanim.queues import ENCODE_QUEUE, NOTIFY_QUEUE, RENDER_QUEUE, ROUTES, STREAM_QUEUE, make_celery
from stepanim.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_queues_are_explicit_and_tasks_are_acknowledged_after_they_ran() -> None:
    conf = make_celery(Settings(_env_file=None, visibility_timeout=7200, task_time_limit_seconds=3000)).conf  # type: ignore[call-arg]
    assert [q.name for q in conf.task_queues] == [RENDER_QUEUE, ENCODE_QUEUE, NOTIFY_QUEUE, STREAM_QUEUE]
    assert all(isinstance(q, Queue) for q in conf.task_queues)
    assert conf.task_create_missing_queues is False  # a typo in a queue name fails instead of making a queue
    assert conf.task_acks_late is True and conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1  # one job per process: no job waits behind a long one
    assert conf.broker_transport_options["visibility_timeout"] == 7200
    assert (conf.task_soft_time_limit, conf.task_time_limit) == (3000, 3060)
    assert {route["queue"] for route in ROUTES.values()} == {RENDER_QUEUE, ENCODE_QUEUE, NOTIFY_QUEUE, STREAM_QUEUE}


def imported_by(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return out.split()


HEAVY = ("torch", "diffusers", "transformers", "worker", "encoder", "notify")


def test_the_api_imports_neither_torch_nor_the_workers() -> None:
    modules = imported_by(
        "from api.app import create_app\nfrom stepanim.settings import Settings\ncreate_app(Settings(_env_file=None))"
    )
    assert "fastapi" in modules and "celery" in modules
    assert [m for m in modules if m.split(".")[0] in HEAVY] == []


def test_the_shared_package_imports_neither_fastapi_nor_torch() -> None:
    modules = imported_by(
        "import stepanim.jobs, stepanim.store, stepanim.storage, stepanim.queues, stepanim.lifecycle, "
        "stepanim.webhooks, stepanim.reconcile, stepanim.public"
    )
    assert [m for m in modules if m.split(".")[0] in (*HEAVY, "fastapi", "starlette")] == []

"""JSON logs carry the job id in every process; /metrics counts what the workers did."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.faults.conftest import Receiver, Service, body, wait_for

pytestmark = pytest.mark.slow


def test_one_job_id_threads_through_every_process_log(make_service: Callable[..., Service]) -> None:
    service = make_service(backend="local")
    receiver = Receiver()
    receiver.up()
    steps = 7
    job_id = service.post(body(steps=steps, webhook=receiver.url))
    service.wait_terminal([job_id])
    wait_for(lambda: receiver.deliveries, timeout=60, what="webhook")
    receiver.down()

    for process, expected in (
        ("api", "POST /animations 202"),
        ("render", "task ended"),
        ("encode", "task ended"),
        ("notify", "task ended"),
    ):
        lines = [line for line in service.log(process) if line.get("job_id") == job_id]
        assert any(line["message"] == expected for line in lines), (process, lines)
        assert {line["service"] for line in lines} == {"api" if process == "api" else _service(process)}

    m = service.metrics()
    assert m["stepanim_jobs_finished_total{status=succeeded}"] == 1
    assert m["stepanim_render_step_seconds_count"] == steps
    assert m["stepanim_render_step_seconds_sum"] > 0
    assert m["stepanim_encode_seconds_count"] == 1
    assert m["stepanim_jobs{status=queued}"] == 0
    assert m["stepanim_queue_depth{queue=render}"] == 0
    assert m["stepanim_reconciler_runs_total"] >= 1


def _service(process: str) -> str:
    return {"render": "worker", "encode": "encoder", "notify": "notify"}[process]

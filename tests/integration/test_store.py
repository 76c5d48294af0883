"""The job store and lifecycle against a real redis-server."""

import threading
import uuid

import pytest

from stepanim import lifecycle
from stepanim.admission import admit_now
from stepanim.jobs import Job, JobImage, JobStatus
from stepanim.queues import NOTIFY_QUEUE, make_celery
from stepanim.request import AnimationCreate
from stepanim.services import Services
from stepanim.settings import Settings
from stepanim.storage import LocalStorage
from stepanim.store import JobNotFound, JobStore
from tests.integration.job_support import admitted_job


@pytest.fixture
def svc(redis_url: str, tmp_path) -> Services:  # type: ignore[no-untyped-def]
    settings = Settings(_env_file=None, redis_url=redis_url)  # type: ignore[call-arg]
    return Services(
        settings=settings,
        store=JobStore.from_url(redis_url),
        storage=LocalStorage(tmp_path, secret="s" * 16, base_url="http://x", ttl_seconds=60),
        celery=make_celery(settings),
    )


def new_job(svc: Services, **request: object) -> Job:
    return admitted_job(svc, AnimationCreate.model_validate({"prompt": "p", **request}))


def test_create_and_get(svc: Services) -> None:
    job = new_job(svc)
    assert svc.store.get(job.id) == job
    # The same id again never overwrites the record (the admission of a retried call): nothing is written.
    changed = job.model_copy(update={"seed": 2})
    assert admit_now(svc.store, changed).outcome == "created"
    assert svc.store.get(job.id) == job and len(svc.store.events(job.id)) == 1
    with pytest.raises(JobNotFound):
        svc.store.get(uuid.uuid4().hex)


def test_lifecycle_records_timestamps_and_events(svc: Services) -> None:
    job = new_job(svc)
    lifecycle.start_rendering(svc, job.id)
    lifecycle.record_progress(svc, job.id, step=1, total=20, latest_frames=["k1"])
    lifecycle.record_progress(svc, job.id, step=1, total=20, latest_frames=["k1"])  # repeated: ignored
    lifecycle.start_encoding(svc, job.id, [JobImage(batch_index=0, seed=1, frames=["k1"])])
    done = lifecycle.finish_encoding(svc, job.id, videos=None)
    assert done.status == JobStatus.succeeded
    assert done.started_at is not None and done.finished_at is not None
    assert done.started_at <= done.finished_at
    kinds = [(e.type, getattr(e, "status", getattr(e, "step", None))) for _, e in svc.store.events(job.id)]
    assert kinds == [
        ("status", "queued"),
        ("status", "rendering"),
        ("progress", 1),
        ("status", "encoding"),
        ("status", "succeeded"),
    ]


def test_illegal_transition_is_refused(svc: Services) -> None:
    job = new_job(svc)
    lifecycle.cancel(svc, job.id)
    with pytest.raises(lifecycle.TransitionError):
        lifecycle.start_rendering(svc, job.id)
    assert lifecycle.cancel(svc, job.id).status == JobStatus.canceled  # repeating is a no-op


def test_a_cancel_limited_to_some_statuses_leaves_the_others_alone(svc: Services) -> None:
    # The API read the job as queued; a render worker took it meanwhile: the worker must stop it
    # (so that run_on_incomplete can still encode its steps), not the API.
    job = new_job(svc)
    lifecycle.start_rendering(svc, job.id)
    only = frozenset({JobStatus.queued, JobStatus.encoding})
    with pytest.raises(lifecycle.TransitionError):
        lifecycle.cancel(svc, job.id, only_from=only)
    assert svc.store.get(job.id).status == JobStatus.rendering
    lifecycle.start_encoding(svc, job.id, [])
    assert lifecycle.cancel(svc, job.id, only_from=only).status == JobStatus.canceled
    assert lifecycle.cancel(svc, job.id, only_from=only).status == JobStatus.canceled  # repeating: a no-op


def test_terminal_transition_enqueues_webhook_once(svc: Services) -> None:
    job = new_job(svc, webhook="http://127.0.0.1:9/hook")
    lifecycle.fail(svc, job.id, "x", "boom")
    lifecycle.fail(svc, job.id, "x", "boom")
    assert svc.store.redis.llen(NOTIFY_QUEUE) == 1


def test_concurrent_updates_are_not_lost(svc: Services) -> None:
    job = new_job(svc)
    lifecycle.start_rendering(svc, job.id)

    def bump(start: int) -> None:
        for step in range(start, 200, 4):
            lifecycle.record_progress(svc, job.id, step=step, total=200, latest_frames=[])

    threads = [threading.Thread(target=bump, args=(s,)) for s in range(1, 5)]
    for t in threads:
        t.start()
    svc.store.request_cancel(job.id)
    for t in threads:
        t.join()
    assert svc.store.get(job.id).progress.step == 199
    assert svc.store.cancel_requested(job.id)

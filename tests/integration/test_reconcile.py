"""Leases and the reconciler against a real redis-server and real Celery messages."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from stepanim import leases, lifecycle, reconcile
from stepanim.broker import Broker, message_job
from stepanim.jobs import Job, JobStatus, utcnow
from stepanim.queues import ENCODE_QUEUE, RENDER_QUEUE, RENDER_TASK, enqueue_encode, enqueue_render, make_celery
from stepanim.request import AnimationCreate
from stepanim.services import Services
from stepanim.settings import Settings
from stepanim.storage import LocalStorage
from stepanim.store import JobStore
from tests.integration.job_support import admitted_job


@pytest.fixture
def svc(redis_url: str, tmp_path: Path) -> Services:
    settings = Settings(_env_file=None, redis_url=redis_url, lease_seconds=2, reconcile_max_requeues=2)  # type: ignore[call-arg]
    return Services(
        settings=settings,
        store=JobStore.from_url(redis_url),
        storage=LocalStorage(tmp_path, secret="s" * 16, base_url="http://x", ttl_seconds=60),
        celery=make_celery(settings),
    )


def new_job(svc: Services, *, age: float = 60) -> Job:
    """A job created ``age`` seconds ago."""
    return admitted_job(svc, AnimationCreate(prompt="p"), age=age)


def set_status(svc: Services, job_id: str, status: JobStatus, *, age: float = 60) -> None:
    def apply(job: Job) -> Job:
        job.status = status
        job.updated_at = utcnow() - timedelta(seconds=age)
        return job

    svc.store.update(job_id, apply)


def queued_jobs(svc: Services, queue: str) -> list[str]:
    waiting, _ = Broker(svc.redis).broker_messages([queue])
    return [found[1] for raw in waiting if (found := message_job(raw)) is not None]


def task(task_id: str | None = None, retries: int = 0) -> SimpleNamespace:
    return SimpleNamespace(request=SimpleNamespace(id=task_id or uuid.uuid4().hex, retries=retries), name=RENDER_TASK)


def test_celery_messages_are_read_back_to_their_job(svc: Services) -> None:
    enqueue_render(svc.celery, "a" * 32)
    enqueue_encode(svc.celery, "b" * 32)
    waiting, _ = Broker(svc.redis).broker_messages([RENDER_QUEUE, ENCODE_QUEUE])
    found = {message_job(raw) for raw in waiting}
    assert found == {("stepanim.render", "a" * 32), ("stepanim.encode", "b" * 32)}
    assert Broker(svc.redis).queue_depth(RENDER_QUEUE) == 1
    assert message_job(b"not json") is None


def test_a_queued_job_whose_message_vanished_is_requeued_once(svc: Services) -> None:
    lost = new_job(svc)
    waiting = new_job(svc)
    fresh = new_job(svc, age=0)  # just stored; its message may be on its way
    enqueue_render(svc.celery, waiting.id)

    report = reconcile.reconcile_once(svc)
    assert report.actions == {"requeue_render": 1, "keep": 2}
    assert sorted(queued_jobs(svc, RENDER_QUEUE)) == sorted([waiting.id, lost.id])
    assert fresh.id not in queued_jobs(svc, RENDER_QUEUE)

    # Its message now waits in the queue: the next pass leaves it alone.
    assert reconcile.reconcile_once(svc).actions == {"keep": 3}


def acquire(svc: Services, job_id: str, worker: Any) -> bool:
    return (
        leases.acquire_lease(svc.leases, job_id, stage="render", task=worker, ttl=svc.settings.lease_seconds)
        is not None
    )


def test_a_rendering_job_is_requeued_only_after_its_lease_expired(svc: Services) -> None:
    job = new_job(svc)
    set_status(svc, job.id, JobStatus.rendering)
    worker = task()
    assert acquire(svc, job.id, worker)
    try:
        # The heartbeat keeps the lease well past its 2 s length.
        time.sleep(3)
        assert reconcile.reconcile_once(svc).actions == {"keep": 1}
        # A second delivery of the same job is refused while the lease lives.
        assert not acquire(svc, job.id, task())
    finally:
        lease = leases.held.pop(worker.request.id)
    # The worker dies: no release, no more heartbeats; the lease runs out.
    lease._stop_beating()
    time.sleep(2.5)
    assert reconcile.reconcile_once(svc).actions == {"requeue_render": 1}
    assert queued_jobs(svc, RENDER_QUEUE) == [job.id]


def test_an_encoding_job_is_requeued_to_the_encoder(svc: Services) -> None:
    job = new_job(svc)
    set_status(svc, job.id, JobStatus.encoding)
    assert reconcile.reconcile_once(svc).actions == {"requeue_encode": 1}
    assert queued_jobs(svc, ENCODE_QUEUE) == [job.id]


def test_a_retry_inherits_the_lease_and_nobody_else_does(svc: Services) -> None:
    job = new_job(svc)
    set_status(svc, job.id, JobStatus.rendering)
    first = task()
    assert acquire(svc, job.id, first)
    leases.on_task_postrun(task_id=first.request.id, task=first, state="RETRY")
    # Handed over: kept for the retry's countdown, so the reconciler leaves the job alone...
    assert reconcile.reconcile_once(svc).actions == {"keep": 1}
    # ...a stranger cannot take it...
    assert not acquire(svc, job.id, task())
    # ...and the retry (same task id, one more retry) can.
    retry = task(first.request.id, retries=1)
    assert acquire(svc, job.id, retry)
    leases.on_task_postrun(task_id=retry.request.id, task=retry, state="SUCCESS")
    assert svc.leases.holders([(job.id, "render")]) == [None]


def test_a_job_that_keeps_losing_its_worker_fails_as_lost(svc: Services) -> None:
    job = new_job(svc)
    for _ in range(svc.settings.reconcile_max_requeues):
        assert reconcile.reconcile_once(svc).actions == {"requeue_render": 1}
        svc.store.redis.delete(RENDER_QUEUE)  # the worker that took it died again
        assert reconcile.reconcile_once(svc).actions == {"keep": 1}  # its resent task may be on its way
        svc.store.redis.delete(svc.store.keys.resent(job.id))  # a lease later
    report = reconcile.reconcile_once(svc)
    assert report.failed_lost == [job.id]
    failed = svc.store.get(job.id)
    assert failed.status == JobStatus.failed
    assert failed.error is not None and failed.error.code == "lost"
    assert svc.store.open_job_ids() == []


def test_terminal_jobs_leave_the_open_set(svc: Services) -> None:
    job = new_job(svc)
    other = new_job(svc)
    lifecycle.cancel(svc, job.id)
    assert svc.store.open_job_ids() == [other.id]
    svc.store.delete(other.id)
    assert svc.store.open_job_ids() == []


def test_only_one_of_two_reconcilers_acts(svc: Services) -> None:
    assert svc.leases.try_lock("reconcile", "a", ttl=5)
    assert not svc.leases.try_lock("reconcile", "b", ttl=5)
    assert svc.leases.try_lock("reconcile", "a", ttl=5)  # renewing our own

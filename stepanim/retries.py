"""What the worker tasks share: re-reading the job a task was sent for, and the retry policy
(storage hiccups are retried, then the job fails)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Task

from stepanim import lifecycle
from stepanim.jobs import Job
from stepanim.services import Services

log = logging.getLogger(__name__)


def current_job(svc: Services, job_id: str, *, task: str) -> Job | None:
    """The job's record as it is now, or None (logged) where it no longer exists: a task
    delivered after its job expired or was deleted has nothing to do."""
    job = svc.store.find(job_id)
    if job is None:
        log.warning("%s: job %s no longer exists", task, job_id)
    return job


def retry_or_fail(
    task: Task, svc: Services, job_id: str, error: Exception, *, fail: Callable[[str, str], None] | None = None
) -> None:
    """Retry ``task`` with exponential backoff; when retries run out, fail the job
    (or call ``fail(code, message)``, e.g. to fail one rendition instead)."""
    if task.request.retries >= (task.max_retries or 0):
        if fail is None:
            lifecycle.fail(svc, job_id, "storage_error", str(error))
        else:
            fail("storage_error", str(error))
        return
    log.warning("job %s: storage error, retrying: %s", job_id, error)
    raise task.retry(exc=error, countdown=min(60, 2 ** (task.request.retries + 1)))

"""What the worker tasks share: re-reading the job a task was sent for, how an exception from its
work ends the job, and the retry policy (storage hiccups are retried, then the job fails)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Task

from stepanim import lifecycle
from stepanim.failures import Canceled, JobFailure
from stepanim.jobs import Job
from stepanim.services import Services
from stepanim.storage import StorageError

log = logging.getLogger(__name__)


def current_job(svc: Services, job_id: str, *, task: str) -> Job | None:
    """The job's record as it is now, or None (logged) where it no longer exists: a task
    delivered after its job expired or was deleted has nothing to do."""
    job = svc.store.find(job_id)
    if job is None:
        log.warning("%s: job %s no longer exists", task, job_id)
    return job


# What a task's work may raise that ends its job as expected (anything else is a bug).
ENDS_THE_JOB = (Canceled, JobFailure, StorageError)


def end_job(task: Task, svc: Services, job_id: str, error: Exception) -> None:
    """End the job as ``error`` (one of ``ENDS_THE_JOB``) says: a cancel cancels it, a
    :class:`JobFailure` fails it with its code, a storage error retries the task (``retry_or_fail``)."""
    if isinstance(error, Canceled):
        log.info("job %s: canceled while it ran: %s", job_id, error)
        lifecycle.cancel(svc, job_id)  # the API has usually done so already: a no-op then
    elif isinstance(error, JobFailure):
        lifecycle.fail(svc, job_id, error.code, str(error))
    else:
        retry_or_fail(task, svc, job_id, error)


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

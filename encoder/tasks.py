"""The encode task: thin. Re-reads the job, encodes its frames, marks it succeeded."""

from __future__ import annotations

import logging
import time
from functools import cache

from celery import Task

from encoder.app import app
from encoder.ffmpeg import FfmpegError
from encoder.job import encode_job
from stepanim import lifecycle, metrics, reconcile
from stepanim.jobs import JobStatus
from stepanim.queues import ENCODE_TASK
from stepanim.retries import retry_or_fail
from stepanim.services import Services
from stepanim.settings import get_settings
from stepanim.storage import NotFound, StorageError
from stepanim.store import JobNotFound

log = logging.getLogger(__name__)


@cache
def services() -> Services:
    return Services.from_settings(get_settings(), celery=app)


@app.task(name=ENCODE_TASK, bind=True, max_retries=5)
def encode_task(self: Task, job_id: str) -> None:
    svc = services()
    try:
        job = svc.store.get(job_id)
    except JobNotFound:
        log.warning("encode: job %s no longer exists", job_id)
        return
    if job.status != JobStatus.encoding:
        return  # finished, canceled, or a duplicate delivery
    if not reconcile.acquire_lease(svc, job_id, stage="encode", task=self):
        return  # another live worker encodes this job (ops: lease, see stepanim/reconcile.py)
    started = time.monotonic()
    try:
        video = encode_job(job, svc)
    except (FfmpegError, NotFound, ValueError) as e:
        # NotFound: a frame or the manifest is missing; retrying cannot bring it back.
        lifecycle.fail(svc, job_id, "encode_error", str(e))
        return
    except StorageError as e:
        retry_or_fail(self, svc, job_id, e)
        return
    metrics.encode_finished(svc.store, seconds=time.monotonic() - started)  # ops: /metrics
    lifecycle.succeed(svc, job_id, video)

"""The notify task: one webhook delivery attempt, retried with backoff on failure."""

from __future__ import annotations

import logging
import random
from functools import cache

from celery import Task

from notify.app import app
from stepanim import webhooks
from stepanim.public import to_public
from stepanim.queues import NOTIFY_TASK
from stepanim.services import Services
from stepanim.settings import get_settings
from stepanim.store import JobNotFound

log = logging.getLogger(__name__)


@cache
def services() -> Services:
    return Services.from_settings(get_settings(), celery=app)


def backoff(retries: int, *, base: float = 5.0, cap: float = 3600.0) -> float:
    """Exponential backoff with full jitter: up to base * 2**retries seconds, at most cap."""
    return random.uniform(0, min(cap, base * 2**retries))


@app.task(name=NOTIFY_TASK, bind=True, max_retries=None)
def notify_task(self: Task, job_id: str, event: str) -> None:
    svc = services()
    try:
        job = svc.store.get(job_id)
    except JobNotFound:
        return
    if job.request.webhook is None:
        return
    body = webhooks.payload(event, to_public(job, svc))
    attempt = webhooks.deliver(
        str(job.request.webhook),
        body,
        msg_id=f"msg_{job_id}_{event}",
        secret=svc.settings.webhook_secret,
        timeout=svc.settings.webhook_timeout_seconds,
    )
    if attempt.delivered:
        log.info("webhook %s for job %s delivered", event, job_id)
        return
    attempts = self.request.retries + 1
    if attempt.retryable and attempts < svc.settings.webhook_max_attempts:
        delay = attempt.retry_after if attempt.retry_after is not None else backoff(self.request.retries)
        log.warning("webhook %s for job %s failed (%s); retry in %.0fs", event, job_id, attempt.error, delay)
        raise self.retry(countdown=delay)
    log.error("webhook %s for job %s given up after %d attempts: %s", event, job_id, attempts, attempt.error)

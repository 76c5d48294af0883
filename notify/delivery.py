"""Deliver one attempt of one job event: plain code that the notify task calls."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from stepanim import metrics, webhooks
from stepanim.grid_public import grid_public
from stepanim.jobs import Job
from stepanim.public import to_public
from stepanim.services import Services
from stepanim.settings import ANONYMOUS_KEY_ID

log = logging.getLogger(__name__)


def event_time(job: Job, event: str) -> float:
    """When the event happened (the payload's timestamp; stable across attempts)."""
    if event == "animation.started" and job.started_at is not None:
        return job.started_at.timestamp()
    if event in webhooks.TERMINAL_EVENTS and job.finished_at is not None:
        return job.finished_at.timestamp()
    return job.updated_at.timestamp()


def deliver_job_event(svc: Services, job_id: str, event: str, number: int) -> float | None:
    """Make attempt ``number`` of the job's ``event`` webhook; returns when to try again, or None.

    Nothing is sent when the job is gone, has no webhook, did not ask for this event,
    or when this attempt was already made (a duplicate task): every attempt is counted
    in Redis and only the task that records attempt n may schedule attempt n + 1.
    """
    job = svc.store.find(job_id)
    if job is None or job.request.webhook is None or event not in job.request.webhook_events:
        return None
    step = job.progress.step if event == "animation.progress" else None
    name = event if job.kind == "animation" else event.replace("animation.", "grid.", 1)  # a grid's are grid.*
    msg_id = webhooks.message_id(job_id, name, step=step)
    if svc.webhooks.attempts(msg_id) >= number:
        log.info("webhook %s attempt %d was already made", msg_id, number)
        return None
    settings = svc.settings
    public = to_public(job, svc) if job.kind == "animation" else grid_public(job, svc)
    body = webhooks.payload(name, public, at=datetime.fromtimestamp(event_time(job, event), UTC))
    attempt = webhooks.deliver(
        str(job.request.webhook),
        body,
        msg_id=msg_id,
        secrets=webhooks.current_secrets(svc.webhooks, settings, job.key_id or ANONYMOUS_KEY_ID),
        timeout=settings.webhook_timeout_seconds,
        allow=settings.outbound_allow,
    )
    delay = None
    if event in webhooks.TERMINAL_EVENTS:
        delay = webhooks.retry_delay(
            attempt,
            number,
            schedule=settings.webhook_retry_schedule,
            jitter=settings.webhook_retry_jitter,
            max_retry_after=settings.webhook_max_retry_after,
        )
    now = time.time()
    next_at = now + delay if delay is not None else None
    if not svc.webhooks.advance(msg_id, number):
        log.info("webhook %s attempt %d was recorded by another task", msg_id, number)
        return None
    svc.webhooks.record(
        job_id,
        webhooks.attempt_record(msg_id=msg_id, event=name, number=number, attempt=attempt, at=now, next_at=next_at),
    )
    if attempt.delivered:
        log.info("webhook %s delivered (attempt %d)", msg_id, number)
        return next_at
    metrics.count(svc.store, "stepanim_webhook_failures")
    if next_at is not None:
        log.warning("webhook %s attempt %d failed (%s); next in %.1fs", msg_id, number, attempt.error, delay)
    else:
        log.error("webhook %s attempt %d failed (%s); no more attempts", msg_id, number, attempt.error)
    return next_at

"""The notify task: one webhook attempt, and the hand-off to the next one.

Why retries hop instead of using one long countdown: Celery keeps a task with an ETA
unacknowledged in the worker's memory until it is due, and the Redis transport hands
any message unacknowledged for longer than ``visibility_timeout`` to a worker again,
so a 10-hour countdown (the retry schedule runs for about 27 hours) would run twice,
or more. So a retry is a chain of short hops: a task that is not due yet enqueues
itself again with a countdown of at most :func:`hop_seconds` (a quarter of the
visibility timeout, at most an hour) and the same due time. A restarted worker loses
nothing (the hop is acknowledged late and redelivered), and a duplicated hop does no
harm: the attempts made of each message are counted in Redis, and only the task that
records attempt n schedules attempt n + 1 (``notify.delivery``).
"""

from __future__ import annotations

import logging
import time
from functools import cache

from celery import Task

from notify.app import app
from notify.delivery import deliver_job_event
from stepanim.queues import NOTIFY_QUEUE, NOTIFY_TASK
from stepanim.services import Services
from stepanim.settings import get_settings

log = logging.getLogger(__name__)


@cache
def services() -> Services:
    return Services.from_settings(get_settings(), celery=app)


def hop_seconds(visibility_timeout: float) -> float:
    """Longest countdown of one hop: well inside the visibility timeout."""
    return max(1.0, min(3600.0, visibility_timeout / 4))


@app.task(name=NOTIFY_TASK, bind=True, ignore_result=True)
def notify_task(self: Task, job_id: str, event: str, attempt: int = 1, due: float | None = None) -> None:
    svc = services()
    if due is not None and time.time() < due:
        schedule(job_id, event, attempt, due, hop=hop_seconds(svc.settings.visibility_timeout))
        return
    next_at = deliver_job_event(svc, job_id, event, attempt)
    if next_at is not None:
        schedule(job_id, event, attempt + 1, next_at, hop=hop_seconds(svc.settings.visibility_timeout))


def schedule(job_id: str, event: str, attempt: int, due: float, *, hop: float) -> None:
    countdown = max(0.0, min(due - time.time(), hop))
    notify_task.apply_async(
        args=[job_id, event], kwargs={"attempt": attempt, "due": due}, countdown=countdown, queue=NOTIFY_QUEUE
    )

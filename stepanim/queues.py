"""Queue and task names, the Celery app factory, and hand-off helpers.

Processes hand work to each other by task *name*, so the API never imports the
render worker (torch, diffusers) or the encoder.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue  # type: ignore[attr-defined]

from stepanim.settings import Settings

RENDER_QUEUE = "render"
ENCODE_QUEUE = "encode"
NOTIFY_QUEUE = "notify"
STREAM_QUEUE = "stream"  # encodes that follow a render as its frames land (encoder, threads pool)

RENDER_TASK = "stepanim.render"
ENCODE_TASK = "stepanim.encode"
NOTIFY_TASK = "stepanim.notify"
STREAM_TASK = "stepanim.stream"  # the encode that runs while the frames arrive (encoder.stream)
GRID_TASK = "stepanim.grid"  # a grid's fan-out and, once its cells are done, its composition (the encoder)

ROUTES = {
    RENDER_TASK: {"queue": RENDER_QUEUE},
    ENCODE_TASK: {"queue": ENCODE_QUEUE},
    NOTIFY_TASK: {"queue": NOTIFY_QUEUE},
    GRID_TASK: {"queue": ENCODE_QUEUE},
    STREAM_TASK: {"queue": STREAM_QUEUE},
}


def make_celery(settings: Settings, *, include: list[str] | None = None) -> Celery:
    app = Celery("stepanim", broker=settings.celery_broker_url, include=include or [])
    app.conf.update(
        task_queues=[Queue(name) for name in (RENDER_QUEUE, ENCODE_QUEUE, NOTIFY_QUEUE, STREAM_QUEUE)],  # type: ignore[no-untyped-call]
        task_create_missing_queues=False,
        task_routes=ROUTES,
        task_default_queue=NOTIFY_QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        task_serializer="json",
        accept_content=["json"],
        # Bound the longest task (settings check it stays below visibility_timeout); the soft
        # limit raises in the task, the hard one a minute later ends the process.
        task_soft_time_limit=settings.task_time_limit_seconds,
        task_time_limit=settings.task_time_limit_seconds + 60,
    )
    return app


def enqueue_render(app: Celery, job_id: str) -> None:
    app.send_task(RENDER_TASK, args=[job_id], queue=RENDER_QUEUE)


def enqueue_renders(app: Celery, job_ids: list[str]) -> None:
    """The render tasks of several jobs, in order, through one producer (the API's task sender)."""
    with app.producer_or_acquire() as producer:
        for job_id in job_ids:
            app.send_task(RENDER_TASK, args=[job_id], queue=RENDER_QUEUE, producer=producer)


def enqueue_encode(app: Celery, job_id: str) -> None:
    app.send_task(ENCODE_TASK, args=[job_id], queue=ENCODE_QUEUE)


def enqueue_stream(app: Celery, job_id: str) -> None:
    """The streaming encode of a job whose render has just started (``encoder.stream``)."""
    app.send_task(STREAM_TASK, args=[job_id], queue=STREAM_QUEUE)


def enqueue_rendition(app: Celery, job_id: str, rendition_id: str) -> None:
    """The encode task, for one rendition of a finished job's stored frames."""
    app.send_task(ENCODE_TASK, args=[job_id], kwargs={"rendition_id": rendition_id}, queue=ENCODE_QUEUE)


def enqueue_grid(app: Celery, grid_id: str) -> None:
    """The grid task: it fans the grid out to its cells, or composes it once they are done (idempotent)."""
    app.send_task(GRID_TASK, args=[grid_id], queue=ENCODE_QUEUE)


def enqueue_notify(app: Celery, job_id: str, event: str) -> None:
    app.send_task(NOTIFY_TASK, args=[job_id, event], queue=NOTIFY_QUEUE)

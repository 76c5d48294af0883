"""Job status transitions: the one place that changes a job's status.

Each transition checks that it is allowed, records timestamps, appends an event to
the job's stream and, for terminal states, enqueues the webhook. A transition to the
status the job already has is a no-op (tasks may run twice), so callers can retry.
"""

from __future__ import annotations

from collections.abc import Callable

from stepanim.jobs import ErrorInfo, ImageFrames, Job, JobStatus, Progress, VideoInfo, can_transition, utcnow
from stepanim.queues import enqueue_notify
from stepanim.services import Services


class TransitionError(Exception):
    """The job is in a state that does not allow the requested change."""

    def __init__(self, job_id: str, current: JobStatus, target: JobStatus) -> None:
        super().__init__(f"job {job_id} is {current}, cannot become {target}")
        self.current = current
        self.target = target


def transition(svc: Services, job_id: str, target: JobStatus, *, change: Callable[[Job], None] | None = None) -> Job:
    changed = False

    def apply(job: Job) -> Job | None:
        nonlocal changed
        if job.status == target:
            return None
        if not can_transition(job.status, target):
            raise TransitionError(job_id, job.status, target)
        now = utcnow()
        job.status = target
        job.updated_at = now
        if target == JobStatus.rendering:
            job.started_at = now
        if target.is_terminal():
            job.finished_at = now
        if change is not None:
            change(job)
        changed = True
        return job

    job = svc.store.update(job_id, apply, event={"type": "status", "status": target.value})
    if changed and target.is_terminal():
        _closed(svc, job)
    if changed and target.is_terminal() and job.request.webhook is not None:
        enqueue_notify(svc.celery, job_id, f"animation.{target.value}")
    return job


def _closed(svc: Services, job: Job) -> None:
    """A job just became terminal: out of the reconciler's open set, into the counters."""
    from stepanim import metrics

    svc.store.mark_closed(job.id)
    metrics.count(svc.store, "stepanim_jobs_finished", status=job.status.value)
    if job.error is not None:
        metrics.count(svc.store, "stepanim_job_errors", code=job.error.code)


def start_rendering(svc: Services, job_id: str) -> Job:
    return transition(svc, job_id, JobStatus.rendering)


def start_encoding(svc: Services, job_id: str, frames: list[str], *, images: list[ImageFrames] | None = None) -> Job:
    def record(job: Job) -> None:
        job.frames = frames
        if images is not None:
            job.images = images

    return transition(svc, job_id, JobStatus.encoding, change=record)


def succeed(svc: Services, job_id: str, video: VideoInfo | None) -> Job:
    def record(job: Job) -> None:
        job.video = video

    return transition(svc, job_id, JobStatus.succeeded, change=record)


def fail(svc: Services, job_id: str, code: str, message: str) -> Job:
    def record(job: Job) -> None:
        job.error = ErrorInfo(code=code, message=message)

    return transition(svc, job_id, JobStatus.failed, change=record)


def cancel(svc: Services, job_id: str) -> Job:
    return transition(svc, job_id, JobStatus.canceled)


def record_progress(
    svc: Services,
    job_id: str,
    *,
    step: int,
    total: int,
    latest_frame: str | None,
    elapsed_seconds: float | None = None,
    eta_seconds: float | None = None,
) -> Job:
    """Record that ``step`` of ``total`` steps is captured. Never moves progress backwards."""

    def apply(job: Job) -> Job | None:
        if job.status != JobStatus.rendering or step <= job.progress.step:
            return None
        job.progress = Progress(
            step=step,
            total=total,
            latest_frame=latest_frame,
            elapsed_seconds=elapsed_seconds,
            eta_seconds=eta_seconds,
        )
        job.updated_at = utcnow()
        return job

    return svc.store.update(job_id, apply, event={"type": "progress", "step": step, "total": total})

"""Job status transitions: the one place that changes a job's status.

Each transition checks that it is allowed, records timestamps, appends an event to
the job's stream and enqueues the webhook the client asked for (``animation.started``,
the terminal events; progress is throttled in :func:`record_progress`). A terminal
transition also frees the job's place in its API key's concurrent-job quota. A
transition to the status the job already has is a no-op (tasks may run twice), so
callers can retry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from stepanim import metrics
from stepanim.admission import release_place
from stepanim.events import CellEvent, ProgressEvent, RenditionEvent, StageEvent, StatusEvent
from stepanim.jobs import (
    ArchiveInfo,
    ErrorInfo,
    Job,
    JobImage,
    JobStatus,
    Progress,
    Rendition,
    RenditionStatus,
    Stage,
    VideoInfo,
    can_transition,
    utcnow,
)
from stepanim.naming import upfront_rendition_id
from stepanim.queues import enqueue_grid, enqueue_notify
from stepanim.services import Services
from stepanim.video_options import MAX_RENDITIONS


class TransitionError(Exception):
    """The job is in a state that does not allow the requested change."""

    def __init__(self, job_id: str, current: JobStatus, target: JobStatus) -> None:
        super().__init__(f"job {job_id} is {current}, cannot become {target}")
        self.current = current
        self.target = target


def transition(
    svc: Services,
    job_id: str,
    target: JobStatus,
    *,
    change: Callable[[Job], None] | None = None,
    only_from: frozenset[JobStatus] | None = None,
) -> Job:
    """Move the job to ``target`` (a no-op if it is there already); ``only_from`` narrows the
    statuses it may come from. :class:`TransitionError` otherwise."""
    changed = False

    def apply(job: Job) -> Job | None:
        nonlocal changed
        if job.status == target:
            return None
        if not can_transition(job.status, target) or (only_from is not None and job.status not in only_from):
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

    job = svc.store.update(job_id, apply, event=StatusEvent(status=target))
    if changed and target.is_terminal():
        _closed(svc, job)
    if changed and target in WEBHOOK_EVENT_OF:
        _notify(svc, job, WEBHOOK_EVENT_OF[target])
    if changed and job.parent is not None and job.cell is not None:
        _cell_changed(svc, job)
    return job


def _cell_changed(svc: Services, cell: Job) -> None:
    """A grid's cell moved on: the grid's stream says so, and a finished cell wakes the grid task
    (which composes the grid once every cell is done)."""
    assert cell.parent is not None and cell.cell is not None
    svc.store.append(cell.parent, CellEvent(cell=cell.cell, id=cell.id, status=cell.status))
    if cell.status.is_terminal():
        enqueue_grid(svc.celery, cell.parent)


def _closed(svc: Services, job: Job) -> None:
    """A job just became terminal: out of the reconciler's open set and its key's quota, into the counters."""
    svc.store.mark_closed(job.id)
    if job.key_id is not None:
        release_place(svc.redis, svc.keys, job.key_id, job.id)
    metrics.count(svc.store, "stepanim_jobs_finished", status=job.status.value)
    if job.error is not None:
        metrics.count(svc.store, "stepanim_job_errors", code=job.error.code)


# The webhook event of each status change that has one.
WEBHOOK_EVENT_OF = {
    JobStatus.rendering: "animation.started",
    JobStatus.succeeded: "animation.succeeded",
    JobStatus.failed: "animation.failed",
    JobStatus.canceled: "animation.canceled",
}


def _notify(svc: Services, job: Job, event: str) -> None:
    if job.request.webhook is not None and event in job.request.webhook_events:
        enqueue_notify(svc.celery, job.id, event)


def start_rendering(svc: Services, job_id: str) -> Job:
    return transition(svc, job_id, JobStatus.rendering)


def start_encoding(svc: Services, job_id: str, images: list[JobImage]) -> Job:
    """The render is done: record every image's frames and hand the job to the encoder."""

    def record(job: Job) -> None:
        job.images = images

    return transition(svc, job_id, JobStatus.encoding, change=record)


def fail(svc: Services, job_id: str, code: str, message: str) -> Job:
    def record(job: Job) -> None:
        job.error = ErrorInfo(code=code, message=message)

    return transition(svc, job_id, JobStatus.failed, change=record)


def cancel(svc: Services, job_id: str, *, only_from: frozenset[JobStatus] | None = None) -> Job:
    return transition(svc, job_id, JobStatus.canceled, only_from=only_from)


# A queued job has no worker yet and an encoding job's encoder watches the flag: they end at once.
ENDED_AT_ONCE = frozenset({JobStatus.queued, JobStatus.encoding})


def request_cancel(svc: Services, job_id: str) -> Job:
    """A client's cancel: set the job's flag; a queued or encoding job is canceled now, a rendering
    one by its worker within a step. Returns the job as it is then (unchanged if it had finished)."""
    svc.store.request_cancel(job_id)
    try:
        # Only while no render worker holds it: one that started meanwhile stops within a step, and
        # a job that asked for run_on_incomplete then still becomes a video of the steps it made.
        return cancel(svc, job_id, only_from=ENDED_AT_ONCE)
    except TransitionError:
        return svc.store.get(job_id)


def enter_stage(svc: Services, job_id: str, stage: Stage) -> Job:
    """What a rendering job is doing before its first step: ``loading_model``, then ``sampling``
    (shown as ``progress.stage``, and as a ``stage`` event)."""

    def apply(job: Job) -> Job | None:
        if job.status != JobStatus.rendering or job.progress.stage == stage:
            return None
        job.progress.stage = stage
        job.updated_at = utcnow()
        return job

    return svc.store.update(job_id, apply, event=StageEvent(stage=stage))


def record_progress(
    svc: Services,
    job_id: str,
    *,
    step: int,
    total: int,
    latest_frames: list[str],
    elapsed_seconds: float | None = None,
    eta_seconds: float | None = None,
    earlier_steps: Sequence[tuple[int, list[str]]] = (),
) -> Job:
    """Record that ``step`` of ``total`` steps is captured; ``latest_frames`` are that step's
    frame keys, one per image of the batch. Never moves progress backwards.

    ``earlier_steps`` ((step, frame keys) pairs) were captured since the last record: each
    gets its own progress event, written with this record in one transaction.

    Sends the ``animation.progress`` webhook when asked for, at most once per
    ``settings.webhook_progress_interval_seconds`` per job (best effort, not retried).
    """
    changed = False

    def apply(job: Job) -> Job | None:
        nonlocal changed
        if job.status != JobStatus.rendering or step <= job.progress.step:
            return None
        job.progress = Progress(
            stage="sampling",
            step=step,
            total=total,
            latest_frames=latest_frames,
            elapsed_seconds=elapsed_seconds,
            eta_seconds=eta_seconds,
        )
        job.updated_at = utcnow()
        changed = True
        return job

    events = [ProgressEvent(step=n, total=total, frames=keys) for n, keys in [*earlier_steps, (step, latest_frames)]]
    job = svc.store.update(job_id, apply, event=events)
    if (
        changed
        and job.request.webhook is not None
        and "animation.progress" in job.request.webhook_events
        and svc.store.throttle(job_id, "progress-webhook", svc.settings.webhook_progress_interval_seconds)
    ):
        enqueue_notify(svc.celery, job_id, "animation.progress")
    return job


def finish_encoding(
    svc: Services,
    job_id: str,
    *,
    videos: list[VideoInfo] | None,
    archive: ArchiveInfo | None = None,
    frames_deleted: bool = False,
) -> Job:
    """``succeed`` for the encoder: every image's video (in batch order; None for a frames-only
    job, which has the archive instead), and whether the frames were deleted."""

    def record(job: Job) -> None:
        if videos is not None:
            if len(videos) != len(job.images):
                raise ValueError(f"{len(videos)} videos for the {len(job.images)} images of job {job_id}")
            for image, video in zip(job.images, videos, strict=True):
                image.video = video
        job.frames_archive = archive
        job.frames_deleted = frames_deleted

    return transition(svc, job_id, JobStatus.succeeded, change=record)


# Renditions: more videos of a job's frames. A rendition has its own status; the job's does not change.


class RenditionRefused(Exception):
    """A rendition cannot be added to this job (``code`` says why)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def add_rendition(svc: Services, job_id: str, rendition: Rendition) -> Job:
    """Add a queued rendition to a succeeded job whose frames are still stored."""

    def apply(job: Job) -> Job:
        if job.status != JobStatus.succeeded:
            raise RenditionRefused(
                "not_ready", f"the animation is {job.status}; only a succeeded one can be re-encoded"
            )
        if job.frames_deleted:
            raise RenditionRefused(
                "frames_deleted", "the frames of this animation were deleted after encoding (keep_frames was false)"
            )
        if job.kind == "animation" and not job.frame_keys():  # a grid composes its cells' frames
            raise RenditionRefused("no_frames", "this animation has no stored frames")
        if len(job.renditions) >= MAX_RENDITIONS:
            raise RenditionRefused("limit_exceeded", f"an animation has at most {MAX_RENDITIONS} renditions")
        job.renditions.append(rendition)
        job.updated_at = utcnow()
        return job

    return svc.store.update(job_id, apply, event=RenditionEvent(id=rendition.id, status=rendition.status))


def add_upfront_renditions(svc: Services, job_id: str) -> Job:
    """Records for the renditions the request asked for, with ids that are the same on every retry."""

    def apply(job: Job) -> Job | None:
        have = {r.id for r in job.renditions}
        now = utcnow()
        new = [
            Rendition(id=rid, options=options, created_at=now)
            for index, options in enumerate(job.request.renditions)
            if (rid := upfront_rendition_id(job.id, index)) not in have
        ]
        if not new:
            return None
        job.renditions.extend(new)
        job.updated_at = now
        return job

    return svc.store.update(job_id, apply)


def remove_rendition(svc: Services, job_id: str, rendition_id: str) -> Job:
    """Take back a rendition that could not be queued."""

    def apply(job: Job) -> Job | None:
        kept = [r for r in job.renditions if r.id != rendition_id]
        if len(kept) == len(job.renditions):
            return None
        job.renditions = kept
        return job

    return svc.store.update(job_id, apply)


def rendition_status(
    svc: Services,
    job_id: str,
    rendition_id: str,
    status: RenditionStatus,
    *,
    videos: list[VideoInfo] | None = None,
    error: ErrorInfo | None = None,
) -> Job:
    """Move a rendition forward (queued -> encoding -> succeeded | failed); finished ones never change.
    ``videos``: one per image of the job, in batch order."""

    def apply(job: Job) -> Job | None:
        for rendition in job.renditions:
            if rendition.id == rendition_id:
                if rendition.status.is_terminal() or rendition.status == status:
                    return None
                rendition.status = status
                rendition.videos = list(videos or [])
                rendition.error = error
                now = utcnow()
                if status.is_terminal():
                    rendition.finished_at = now
                job.updated_at = now
                return job
        return None

    return svc.store.update(job_id, apply, event=RenditionEvent(id=rendition_id, status=status))

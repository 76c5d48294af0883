"""The encoder's tasks: thin. Each re-reads its job and hands the work to plain code.

- encode: encodes a rendered job's frames, marks it succeeded; the same task makes a
  rendition (``rendition_id``) of a finished job (or grid) from its stored frames;
- stream: starts with a job's render and encodes its frames as they are stored
  (``encoder.stream``); it holds the job's encode lease, so the encode task that the render
  sends at its end finds the job taken. Whatever the stream cannot finish it hands back
  to the encode task, which makes the video from the stored frames;
- grid: moves a grid on (``stepanim.grid_flow``: fan-out, wait, fail) and, once its cells are
  done, composes its video (``encoder.grid``).

When the worker starts it publishes what its ffmpeg supports.
"""

from __future__ import annotations

import logging
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Any

from celery import Task
from celery.signals import worker_ready

from encoder import capabilities
from encoder.app import app
from encoder.grid import compose_video
from encoder.job import delete_frames, download_images, encode_job, encode_rendition, make_renditions
from encoder.stream import Abandon, Stopped, stream_job
from stepanim import grid_flow, leases, lifecycle, metrics
from stepanim.cancel import CancelWatch
from stepanim.failures import EncodeError, JobFailure
from stepanim.jobs import ErrorInfo, JobStatus, RenditionStatus
from stepanim.manifest import Manifest
from stepanim.queues import ENCODE_TASK, GRID_TASK, STREAM_TASK, enqueue_encode
from stepanim.retries import ENDS_THE_JOB, current_job, end_job, retry_or_fail
from stepanim.services import Services
from stepanim.settings import get_settings
from stepanim.storage import NotFound, StorageError
from stepanim.video_options import streamable

log = logging.getLogger(__name__)


@cache
def services() -> Services:
    return Services.from_settings(get_settings(), celery=app)


@worker_ready.connect
def publish_capabilities(**_: Any) -> None:
    """Keep what this worker's ffmpeg supports published for the API (refreshed in a thread)."""
    capabilities.start_publishing(services())


@app.task(name=ENCODE_TASK, bind=True, max_retries=5)
def encode_task(self: Task, job_id: str, rendition_id: str | None = None) -> None:
    svc = services()
    job = current_job(svc, job_id, task="encode")
    if job is None:
        return
    if rendition_id is not None:
        rendition_task(self, svc, job_id, rendition_id)
        return
    if job.status != JobStatus.encoding:
        return  # finished, canceled, or a duplicate delivery
    if leases.acquire_lease(svc.leases, job_id, stage="encode", task=self, ttl=svc.settings.lease_seconds) is None:
        return  # another live worker encodes this job (see stepanim/leases.py)
    started = time.monotonic()
    try:
        outcome = encode_job(job, svc)
    except NotFound as e:  # a frame or the manifest is missing; retrying cannot bring it back
        lifecycle.fail(svc, job_id, EncodeError.code, f"a stored frame or the manifest is missing: {e}")
        return
    except ENDS_THE_JOB as e:
        end_job(self, svc, job_id, e)
        return
    metrics.encode_finished(svc.store, seconds=time.monotonic() - started)  # ops: /metrics
    job = lifecycle.finish_encoding(
        svc, job_id, videos=outcome.videos, archive=outcome.archive, frames_deleted=outcome.frames_deleted
    )
    if outcome.frames_deleted:
        delete_frames(job, svc)


@app.task(name=STREAM_TASK, bind=True)
def stream_task(self: Task, job_id: str) -> None:
    svc = services()
    job = svc.store.find(job_id)
    if job is None:
        return
    if job.status not in (JobStatus.rendering, JobStatus.encoding) or not streamable(job.request.animation):
        return
    lease = leases.acquire_lease(svc.leases, job_id, stage="encode", task=self, ttl=svc.settings.lease_seconds)
    if lease is None:
        return  # the encode task (or another stream) has the job
    try:
        streamed = stream_job(job, svc, lost=lease.lost.is_set)
        job = svc.store.get(job_id)
        if job.request.renditions:  # asked for up front: made after the stream, from the stored frames
            with tempfile.TemporaryDirectory(prefix=f"renditions-{job_id[:8]}-") as tmp:
                folders = download_images(job, Path(tmp), svc)
                make_renditions(job, svc, folders=folders, manifest=Manifest.load(svc.storage, job_id))
    except (Stopped, Abandon, JobFailure, StorageError) as e:
        if isinstance(e, Stopped):
            log.info("stream: job %s: %s", job_id, e)
        else:
            log.warning("stream: job %s goes to the post-hoc encode: %s", job_id, e)
        leases.release_lease(self)  # free before the encode task looks
        if svc.store.get(job_id).status == JobStatus.encoding:
            enqueue_encode(svc.celery, job_id)  # the render's own may have been turned away while the stream held it
        return
    metrics.encode_finished(svc.store, seconds=streamed.tail_seconds)  # a stream: its tail only
    keep = job.request.animation.keep_frames
    try:
        job = lifecycle.finish_encoding(svc, job_id, videos=streamed.videos, frames_deleted=not keep)
    except lifecycle.TransitionError as e:  # canceled as the videos were uploaded
        log.info("stream: job %s: %s", job_id, e)
        return
    log.info(
        "stream: job %s published %.3fs after its render ended (%s)",
        job_id,
        streamed.tail_seconds,
        streamed.describe(),
    )
    if not keep:
        delete_frames(job, svc)


def rendition_task(task: Task, svc: Services, job_id: str, rendition_id: str) -> None:
    job = svc.store.get(job_id)
    rendition = next((r for r in job.renditions if r.id == rendition_id), None)
    if rendition is None or rendition.status.is_terminal():
        return

    def failed(code: str, message: str) -> None:
        lifecycle.rendition_status(
            svc, job_id, rendition_id, RenditionStatus.failed, error=ErrorInfo(code=code, message=message)
        )

    lifecycle.rendition_status(svc, job_id, rendition_id, RenditionStatus.encoding)
    try:
        if job.kind == "grid":
            cells = grid_flow.cell_jobs(svc, job)
            videos = [compose_video(job, cells, svc, options=rendition.options, rendition_id=rendition_id)]
        else:
            videos = encode_rendition(job, rendition, svc)
    except NotFound as e:
        failed("frames_missing", f"a stored frame or the manifest is gone, cannot re-encode: {e}")
        return
    except JobFailure as e:
        failed(e.code, str(e))
        return
    except StorageError as e:
        retry_or_fail(task, svc, job_id, e, fail=failed)
        return
    lifecycle.rendition_status(svc, job_id, rendition_id, RenditionStatus.succeeded, videos=videos)


@app.task(name=GRID_TASK, bind=True, max_retries=5)
def grid_task(self: Task, grid_id: str) -> None:
    svc = services()
    grid = current_job(svc, grid_id, task="grid")
    if grid is None or grid.status.is_terminal():
        return
    if leases.acquire_lease(svc.leases, grid_id, stage="grid", task=self, ttl=svc.settings.lease_seconds) is None:
        return  # another live worker moves this grid on
    grid = svc.store.get(grid_id)  # as it is now that we hold it
    composing = grid_flow.advance(svc, grid)
    if composing is None:
        return
    started = time.monotonic()
    try:
        with CancelWatch(svc.store, grid_id) as cancel:
            video = compose_video(composing, grid_flow.cell_jobs(svc, composing), svc, should_stop=cancel.is_set)
    except NotFound as e:  # retrying cannot bring it back
        lifecycle.fail(svc, grid_id, EncodeError.code, f"a cell's frame is missing: {e}")
        return
    except ENDS_THE_JOB as e:
        end_job(self, svc, grid_id, e)
        return
    metrics.encode_finished(svc.store, seconds=time.monotonic() - started)
    try:
        lifecycle.finish_encoding(svc, grid_id, videos=[video])
    except lifecycle.TransitionError as e:  # canceled as the video was uploaded
        log.info("grid %s: %s", grid_id, e)

"""The render task: thin. Re-reads the job, calls plain code, hands off to encode."""

from __future__ import annotations

import logging
import os
import socket
from functools import cache
from typing import Any

from celery import Task
from celery.signals import worker_ready, worker_shutdown

from stepanim import adapter_shapes, adapters, leases, lifecycle, metrics, model_catalog
from stepanim.jobs import JobStatus
from stepanim.published import Publisher, expiry
from stepanim.queues import RENDER_TASK, enqueue_encode, enqueue_stream
from stepanim.retries import ENDS_THE_JOB, current_job, end_job
from stepanim.services import Services
from stepanim.settings import get_settings
from stepanim.video_options import streamable
from worker.adapters import text_encoder_lora_problem
from worker.app import app
from worker.pipelines import PipelineCache
from worker.render import render

log = logging.getLogger(__name__)


@cache
def services() -> Services:
    return Services.from_settings(get_settings(), celery=app)


@cache
def pipelines() -> PipelineCache:
    return PipelineCache(get_settings())


WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"  # this worker's published models (the main process's id)


@worker_ready.connect
def publish_models(**_: Any) -> None:
    """Tell the API which models and adapters this worker has (GET /capabilities lists them), and
    keep telling it (stepanim.published): the folders are scanned again at every refresh."""
    svc = services()
    published = svc.published
    period = svc.settings.publish_interval_seconds

    def publish() -> None:
        settings = svc.settings
        models = model_catalog.scan(settings.models_dir)
        found = adapters.scan(
            settings.adapters_path,
            adapter_shapes.model_shapes(settings.models_dir),
            text_encoder_loras=text_encoder_lora_problem(),
        )
        published.set_models(WORKER_ID, models, ttl=expiry(period), adapters=found)
        log.debug("models published: %s", ", ".join(m.name for m in models) or "none")

    Publisher("render worker models", publish, lambda: published.has_models(WORKER_ID), period=period).start()


@worker_shutdown.connect
def withdraw_models(**_: Any) -> None:
    """A stopping worker no longer offers its models."""
    try:
        services().published.withdraw_models(WORKER_ID)
    except Exception as e:  # Redis away: they expire by themselves
        log.warning("models not withdrawn: %s", e)


@app.task(name=RENDER_TASK, bind=True, max_retries=5)
def render_task(self: Task, job_id: str) -> None:
    svc = services()
    job = current_job(svc, job_id, task="render")
    if job is None or job.status.is_terminal():
        return  # gone, canceled while queued, or a duplicate delivery of a finished job
    if job.status == JobStatus.encoding:
        enqueue_encode(svc.celery, job_id)  # a redelivery after the render was done
        return
    if svc.store.cancel_requested(job_id):
        lifecycle.cancel(svc, job_id)
        return
    if leases.acquire_lease(svc.leases, job_id, stage="render", task=self, ttl=svc.settings.lease_seconds) is None:
        return  # another live worker renders this job (see stepanim/leases.py)
    try:
        job = lifecycle.start_rendering(svc, job_id)
    except lifecycle.TransitionError as e:
        log.info("render: job %s ended before it started: %s", job_id, e)  # canceled meanwhile
        return
    if svc.settings.streaming and streamable(job.request.animation):
        enqueue_stream(svc.celery, job_id)  # its encode follows the frames as they are stored (encoder.stream)
    try:
        result = render(job, svc, pipelines())
    except ENDS_THE_JOB as e:
        end_job(self, svc, job_id, e)
        return
    except Exception as e:
        log.exception("render: job %s failed", job_id)
        lifecycle.fail(svc, job_id, "render_error", f"{type(e).__name__}: {e}")
        return
    metrics.render_finished(svc.store, seconds=result.seconds, steps=result.steps_run)  # ops: /metrics
    if not result.complete:
        # A canceled render handing its partial frames to the encoder (run_on_incomplete): the cancel
        # is acted on; the encoder must stop only for a new one (stepanim.cancel).
        svc.store.clear_cancel(job_id)
    try:
        lifecycle.start_encoding(svc, job_id, result.images())
    except lifecycle.TransitionError as e:
        log.info("render: job %s ended while it rendered: %s", job_id, e)
        return
    enqueue_encode(svc.celery, job_id)

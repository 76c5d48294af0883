"""One render: run the pipeline, capture every step as a frame, write the manifest.

Plain code called by the thin Celery task in ``worker.tasks``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from stepanim import lifecycle
from stepanim.jobs import Job
from stepanim.naming import manifest_key
from stepanim.services import Services
from worker.capture import StepCapture, decode_full
from worker.frames import FrameWriter
from worker.pipelines import PipelineCache, make_scheduler

log = logging.getLogger(__name__)


class RenderCanceled(Exception):
    """A client canceled the job while it rendered."""


@dataclass
class RenderResult:
    frames: list[list[str]]  # frames[batch_index] = frame keys in step order
    steps_run: int
    seconds: float


def manifest(job: Job, result: RenderResult) -> dict[str, Any]:
    req = job.request
    return {
        "job_id": job.id,
        "model": job.model,
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt,
        "width": req.width,
        "height": req.height,
        "steps": req.steps,
        "steps_run": result.steps_run,
        "scheduler": req.scheduler,
        "guidance_scale": req.guidance_scale,
        "seed": job.seed,
        "render_seconds": round(result.seconds, 3),
        "animations": [
            {"batch_index": i, "seed": job.seed + i, "frames": keys} for i, keys in enumerate(result.frames)
        ],
    }


def render(job: Job, svc: Services, pipes: PipelineCache) -> RenderResult:
    req = job.request
    base = pipes.get(job.model)
    scheduler = make_scheduler(base, req.scheduler)
    pipe = type(base)(**{**base.components, "scheduler": scheduler})
    pipe.set_progress_bar_config(disable=True)
    capture = StepCapture(scheduler)
    capture.install()
    started = time.perf_counter()

    def on_frame(step: int, key: str) -> None:
        lifecycle.record_progress(svc, job.id, step=step, total=req.steps, latest_frame=key)

    writer = FrameWriter(
        storage=svc.storage,
        decode=lambda latents: decode_full(pipe.vae, latents),
        job_id=job.id,
        prompt=req.prompt,
        seeds=[job.seed],
        on_frame=on_frame,
        queue_size=svc.settings.frame_queue_size,
    )
    steps = 0

    def on_step_end(_pipe: Any, _i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        nonlocal steps
        latents = capture.pop()
        if latents is not None:
            steps += 1
            writer.submit(steps, latents)
        if svc.store.cancel_requested(job.id):
            raise RenderCanceled(job.id)
        return kwargs

    try:
        pipe(
            prompt=req.prompt,
            negative_prompt=req.negative_prompt or None,
            width=req.width,
            height=req.height,
            num_inference_steps=req.steps,
            guidance_scale=req.guidance_scale,
            generator=torch.Generator(device="cpu").manual_seed(job.seed),
            output_type="latent",  # every step is captured; the final VAE decode is not needed
            callback_on_step_end=on_step_end,
        )
    except RenderCanceled:
        # Run on incomplete data: a canceled render still becomes a video of the steps it made.
        if not (req.animation.run_on_incomplete and steps > 0):
            raise
    finally:
        writer.close()
    result = RenderResult(frames=writer.keys, steps_run=steps, seconds=time.perf_counter() - started)
    body = json.dumps(manifest(job, result), indent=2).encode()
    svc.storage.put_bytes(manifest_key(job.id), body, "application/json")
    log.info("job %s rendered %d steps in %.2fs", job.id, steps, result.seconds)
    return result

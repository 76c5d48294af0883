"""One render: run the pipeline, capture every step as a frame, write the manifest.

Plain code called by the thin Celery task in ``worker.tasks``. Everything that can
refuse a job (model, scheduler, decoder, init image, adapter files) is resolved before
sampling starts, so a refused job leaves no frames. The job's LoRAs and embeddings are on
the pipeline for its sampling only (``worker.adapters``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stepanim import lifecycle
from stepanim.cancel import CancelWatch
from stepanim.failures import Canceled, DecoderUnavailable, InvalidInput, ModelError
from stepanim.families import FACTS, check_size
from stepanim.jobs import Job, JobImage
from stepanim.manifest import Manifest, ManifestImage
from stepanim.request import CaptureOptions, FrameDecoder, FrameResolution, FrameSource
from stepanim.services import Services
from worker.adapters import JobAdapters, applied, resolve
from worker.capture import CaptureMode, StepCapture, decode_approx, decode_full, latent_family, unpack_for_decoding
from worker.frames import Decoder, FrameWriter
from worker.inputs import load_init_image
from worker.pipelines import PipelineCache, pipeline_for, resolve_model
from worker.schedulers import make_scheduler

log = logging.getLogger(__name__)


class RenderCanceled(Canceled):
    """A client canceled the job while it rendered."""


@dataclass
class RenderResult:
    frames: list[list[str]]  # frames[batch_index] = frame keys in step order
    seeds: list[int]  # seeds[batch_index] = that image's real seed
    steps_run: int
    total: int  # steps the sampler was to run
    seconds: float
    complete: bool = True  # False: canceled, and returned for run_on_incomplete

    def images(self) -> list[JobImage]:
        pairs = zip(self.seeds, self.frames, strict=True)
        return [JobImage(batch_index=i, seed=seed, frames=keys) for i, (seed, keys) in enumerate(pairs)]


def frame_size(options: CaptureOptions, *, width: int, height: int) -> tuple[int, int]:
    """(height, width) of the frames: the image's, or a quarter of each side, times the upscale factor."""
    if options.resolution == FrameResolution.quarter:
        height, width = height // 4, width // 4
    return height * options.upscale, width * options.upscale


def make_decoder(pipes: PipelineCache, pipe: Any, options: CaptureOptions, *, width: int, height: int) -> Decoder:
    """The function that turns a batch of captured latents into frames of the requested size
    (Flux's packed latents are unpacked first, with the pipeline's own helper)."""
    size = frame_size(options, width=width, height=height)
    try:
        family = latent_family(pipe)
    except ValueError as e:
        raise DecoderUnavailable(str(e)) from e
    unpack = unpack_for_decoding(pipe, family, width=width, height=height)
    if options.decoder == FrameDecoder.approx:
        return lambda latents: decode_approx(unpack(latents), family, size=size)
    vae = pipes.taesd(family) if options.decoder == FrameDecoder.taesd else pipes.full_vae(pipe)
    return lambda latents: decode_full(vae, unpack(latents), size=size)


def manifest(
    job: Job,
    result: RenderResult,
    *,
    family: str,
    sampler: str,
    complete: bool = True,
    adapters: JobAdapters | None = None,
) -> Manifest:
    req = job.request
    adapters = adapters or JobAdapters()
    return Manifest(
        job_id=job.id,
        model=job.model,
        family=family,
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        width=req.width,
        height=req.height,
        steps=req.steps,
        steps_run=result.steps_run,
        total_steps=result.total,
        complete=complete,
        scheduler=sampler,
        schedule=req.schedule,
        guidance_scale=req.guidance_scale,
        seed=job.seed,
        batch_size=req.batch_size,
        capture=req.capture.model_dump(mode="json"),
        init_image=req.init_image.upload_id if req.init_image is not None else None,
        strength=req.img2img_strength() if req.init_image is not None else None,
        loras=adapters.lora_uses(),
        embeddings=adapters.embedding_uses(),
        render_seconds=round(result.seconds, 3),
        images=[ManifestImage(batch_index=i.batch_index, seed=i.seed, frames=i.frames) for i in result.images()],
    )


def estimate_remaining(sampled_at: dict[int, float], *, step: int, total: int) -> float | None:
    """Seconds of sampling left, from the pace of the steps after the first (which carries the
    warm-up); None until that pace is known from at least 3 steps and a tenth of the run."""
    if step < max(3, total // 10) or 1 not in sampled_at or step not in sampled_at:
        return None
    pace = (sampled_at[step] - sampled_at[1]) / (step - 1)
    return pace * max(total - step, 0)


def render(job: Job, svc: Services, pipes: PipelineCache) -> RenderResult:
    """Render ``job``, every step a frame."""
    req = job.request
    lifecycle.enter_stage(svc, job.id, "loading_model")  # seconds for a cold model; clients show it
    base = pipes.get(job.model)
    try:
        family = latent_family(base)
    except ValueError as e:
        raise ModelError(str(e)) from e
    facts = FACTS[family]
    img2img = req.init_image is not None
    sampler = req.scheduler or facts.default_sampler  # none asked: the model's own (the API fills it in too)
    seeds = req.seeds(job.seed)
    generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]  # one per image
    try:  # what the API checks too, from the model's family; a job queued before it knew is refused here
        check_size(family, width=req.width, height=req.height)
        scheduler = make_scheduler(
            base,
            sampler,
            req.schedule,
            family=family,
            seed=seeds,  # DPM++ SDE: a Brownian tree per image, each from its own seed
            img2img=img2img,
            steps=req.steps,
            generators=generators,
        )
    except ValueError as e:
        raise InvalidInput(str(e)) from e
    init_image = None
    if req.init_image is not None:
        init_image = load_init_image(req.init_image, svc.storage, svc.settings, width=req.width, height=req.height)
    source = Path(resolve_model(job.model, svc.settings))
    adapters = resolve(svc.settings, req, model=job.model, model_folder=source if source.is_dir() else None)
    pipe = pipeline_for(base, scheduler=scheduler, img2img=img2img)
    decode = make_decoder(pipes, pipe, req.capture, width=req.width, height=req.height)
    total = req.denoising_steps()
    mode: CaptureMode = "noisy" if req.capture.source == FrameSource.noisy else "denoised"
    capture = StepCapture(scheduler, mode=mode).install()
    sampled_at: dict[int, float] = {}  # step -> seconds since sampling started, written by the sampling thread
    started = time.perf_counter()

    def on_frames(written: list[tuple[int, list[str]]]) -> None:  # the frame thread, after these steps are stored
        step, keys = written[-1]
        elapsed = sampled_at.get(step, time.perf_counter() - started)
        eta = estimate_remaining(sampled_at, step=step, total=total)
        lifecycle.record_progress(
            svc,
            job.id,
            step=step,
            total=total,
            latest_frames=keys,
            elapsed_seconds=round(elapsed, 3),
            eta_seconds=None if eta is None else round(eta, 3),
            earlier_steps=written[:-1],
        )

    writer = FrameWriter(
        storage=svc.storage,
        decode=decode,
        job_id=job.id,
        prompt=req.prompt,
        seeds=seeds,
        on_frames=on_frames,
        queue_size=svc.settings.frame_queue_size,
        progress_interval=svc.settings.progress_interval_seconds,
    )
    steps = 0
    canceled = CancelWatch(svc.store, job.id)  # told by Redis pub/sub: no Redis call per step

    def on_step_end(_pipe: Any, _i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        nonlocal steps
        latents = capture.pop()
        if latents is not None:  # None after the extra model calls of Heun and PNDM
            steps += 1
            sampled_at[steps] = time.perf_counter() - started
            writer.submit(steps, latents)
        if canceled.is_set():
            # Raising stops the pipeline at once: no further step, no final VAE decode.
            raise RenderCanceled(job.id)
        return kwargs

    inputs: dict[str, Any] = {"image": init_image, "strength": req.img2img_strength()} if init_image is not None else {}
    if init_image is None or facts.flow:  # SD3 and Flux img2img take the size too (Flux: else 1024x1024)
        inputs.update(width=req.width, height=req.height)
    if facts.negative_prompt:  # FLUX.1 has none (its pipeline uses one only for "true CFG", true_cfg_scale > 1)
        inputs.update(negative_prompt=req.negative_prompt or None)

    def finish(*, complete: bool) -> RenderResult:
        result = RenderResult(
            frames=writer.keys,
            seeds=seeds,
            steps_run=steps,
            total=total,
            seconds=time.perf_counter() - started,
            complete=complete,
        )
        manifest(job, result, family=family, sampler=sampler, complete=complete, adapters=adapters).save(svc.storage)
        return result

    try:
        try:
            with canceled, applied(pipes, job.model, base, adapters):  # this job's LoRAs and embeddings only
                lifecycle.enter_stage(svc, job.id, "sampling")
                pipe(
                    prompt=req.prompt,
                    num_inference_steps=req.steps,
                    guidance_scale=req.guidance_scale,
                    num_images_per_prompt=len(seeds),
                    generator=generators,
                    output_type="latent",  # every step is captured; the final VAE decode is not needed
                    callback_on_step_end=on_step_end,
                    **inputs,
                )
        finally:
            capture.uninstall()
            writer.close()  # the frames of every sampled step are written, also when canceled
    except RenderCanceled:
        partial = finish(complete=False)  # a canceled render keeps a manifest of its partial frames
        # Run on incomplete data: a canceled render still becomes a video of the steps it made.
        if req.animation.run_on_incomplete and steps > 0:
            return partial
        raise
    result = finish(complete=True)
    log.info("job %s rendered %d steps in %.2fs", job.id, steps, result.seconds)
    return result

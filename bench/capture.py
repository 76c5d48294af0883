"""Capture overhead: the same model, seed and steps rendered plainly and with per-step capture.

    python -m bench.capture [--model sd|sdxl|sd3|flux] [--steps 30] [--size 64] [--rounds 7] [--device cpu]
                            [--storage local]

``--model`` picks the tiny random-weight model of a family (``worker.tiny_model``); its
scheduler defaults to the family's default sampler (Euler a for SD/SDXL, Euler for SD3/Flux).

*plain* is what a render costs without this service's capture: one pipeline call with
the final VAE decode and no step callback. The *capture* variants time ``worker.render``,
the code the render worker runs: every step captured, decoded off the sampling thread,
written as PNG to local storage, progress and the cancel flag in a real redis-server.
The job record it renders is stored and moved to ``rendering`` before the clock starts:
that is the API's and the task's work, done for every job whether or not it is captured.
``--storage s3`` writes the frames to the S3-compatible server named by the
``STEPANIM_S3_*`` environment, as the render worker does (the bucket must exist).
Rounds interleave the variants (ABBA order); each figure is the median of its rounds and
each ratio is capture/plain measured in the same run: wall time (medians, and fastest
rounds, the least disturbed on a shared machine), this process's CPU time (all its
threads), and *paired*: the median over rounds of each round's capture/plain, which
cancels the drift of a machine whose speed changes from one second to the next, with a 95%
bootstrap interval around it (``bench.stats``; more rounds narrow it).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.stats import median_interval, paired_ratios
from scripts.devstack import Stack
from stepanim import lifecycle
from stepanim.admission import admit_now
from stepanim.families import FACTS, FAMILIES, Family
from stepanim.jobs import Job, utcnow
from stepanim.request import AnimationCreate
from stepanim.services import Services
from stepanim.settings import Settings
from worker.pipelines import PipelineCache, pipeline_for
from worker.render import render
from worker.schedulers import make_scheduler
from worker.tiny_model import build_tiny_model

PROMPT = "a photo of a red cat"
SEED = 1234


def plain_run(pipes: PipelineCache, *, family: Family, steps: int, size: int, scheduler: str) -> None:
    base = pipes.get(f"tiny-{family}")
    generators = [torch.Generator(device="cpu").manual_seed(SEED)]
    made = make_scheduler(base, scheduler, family=family, seed=SEED, generators=generators)
    pipe = pipeline_for(base, scheduler=made, img2img=False)
    pipe(
        prompt=PROMPT,
        num_inference_steps=steps,
        width=size,
        height=size,
        guidance_scale=7.5,
        generator=generators,
        output_type="pil",
    )


def simulate_step_cost(pipe: Any, seconds: float) -> None:
    """Every call of the pipeline's denoiser takes ``seconds`` more, without the interpreter lock
    (a GPU step's kernels run while the Python thread waits): the tiny model's few
    milliseconds become a real model's step, e.g. 0.04 s for SD 1.5 at 512² on a mid-range GPU.
    Once per denoiser: a second call leaves it as it is."""
    denoiser = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    if getattr(denoiser, "_bench_slow", False):
        return
    forward = denoiser.forward

    def slow(*args: Any, **kwargs: Any) -> Any:
        out = forward(*args, **kwargs)
        time.sleep(seconds)
        return out

    denoiser.forward = slow
    denoiser._bench_slow = True


def capture_run(svc: Services, pipes: PipelineCache, request: dict[str, Any]) -> Callable[[], object]:
    """A stored job in ``rendering``, and the render of it (what is timed)."""
    body = AnimationCreate.model_validate(request)
    now = utcnow()
    model = body.model or "tiny-sd"
    job = Job(id=uuid.uuid4().hex, request=body, model=model, seed=SEED, created_at=now, updated_at=now)
    admit_now(svc.store, job)
    job = lifecycle.start_rendering(svc, job.id)
    return lambda: render(job, svc, pipes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", choices=FAMILIES, default="sd", help="the tiny model of this family")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=64, help="width and height in pixels (the tiny model's is 64)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--scheduler", default=None, help="sampler id (default: the family's default sampler)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared machine more threads than free cores make "
        "OpenMP's spinning threads swamp every figure; 0: torch's default)",
    )
    parser.add_argument(
        "--upscale", type=int, default=1, help="frames this many times the image's size (128 x 4: 512² frames)"
    )
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=0.0,
        help="simulated GPU time per denoiser call (e.g. 0.04: SD 1.5 at 512² on a mid-range GPU); 0: none",
    )
    parser.add_argument(
        "--storage",
        choices=["local", "s3"],
        default="local",
        help="where the frames go: a local folder, or the S3 server of the STEPANIM_S3_* environment",
    )
    args = parser.parse_args(argv)
    family: Family = args.model
    scheduler: str = args.scheduler or FACTS[family].default_sampler
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
        root = Path(tmp)
        build_tiny_model(root / "models" / f"tiny-{family}", family=family)
        stack = Stack(workdir=root / "stack", settings={})
        stack.start_redis()
        try:
            settings = Settings(
                _env_file=None,
                redis_url=stack.redis_url,
                storage_backend=args.storage,
                local_storage_dir=root / "storage",
                models_dir=root / "models",
                device=args.device,
            )
            svc = Services.from_settings(settings)
            pipes = PipelineCache(settings)
            if args.step_seconds:
                simulate_step_cost(pipes.get(f"tiny-{family}"), args.step_seconds)
            request = {
                "model": f"tiny-{family}",
                "prompt": PROMPT,
                "steps": args.steps,
                "width": args.size,
                "height": args.size,
                "scheduler": scheduler,
                "seed": SEED,
            }
            upscale = {"upscale": args.upscale}
            # Each variant prepares its run (not timed) and returns it (timed).
            variants: dict[str, Callable[[], Callable[[], object]]] = {
                "plain": lambda: (
                    lambda: plain_run(pipes, family=family, steps=args.steps, size=args.size, scheduler=scheduler)
                ),
                "capture approx quarter": lambda: capture_run(
                    svc,
                    pipes,
                    {**request, "capture": {"decoder": "approx", "resolution": "quarter", **upscale}},
                ),
                "capture approx full": lambda: capture_run(
                    svc, pipes, {**request, "capture": {"decoder": "approx", **upscale}}
                ),
                "capture full (VAE)": lambda: capture_run(
                    svc, pipes, {**request, "capture": {"decoder": "full", **upscale}}
                ),
            }
            for prepare in variants.values():  # warm-up: load the model, fill caches
                prepare()()
            times: dict[str, list[float]] = {name: [] for name in variants}
            cpu: dict[str, list[float]] = {name: [] for name in variants}
            order = list(variants)
            for n in range(args.rounds):
                # ABBA order: a machine that speeds up or slows down within a round favours nobody.
                for name in order if n % 2 == 0 else reversed(order):
                    run = variants[name]()
                    start, start_cpu = time.perf_counter(), time.process_time()
                    run()
                    times[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
        finally:
            stack.stop()

    plain, plain_min, plain_cpu = (
        statistics.median(times["plain"]),
        min(times["plain"]),
        statistics.median(cpu["plain"]),
    )
    print(
        f"model=tiny-{family} device={pipes.device} torch_threads={torch.get_num_threads()} steps={args.steps} "
        f"size={args.size} scheduler={scheduler} rounds={args.rounds} storage={args.storage} "
        f"step_seconds={args.step_seconds} upscale={args.upscale}"
    )
    print(
        f"{'variant':<24} {'median s':>9} {'min s':>7} {'ratio median':>13} {'ratio min':>10} {'ratio cpu':>10}"
        f" {'ratio paired [95% interval]':>28}"
    )
    for name, values in times.items():
        median, fastest, used = statistics.median(values), min(values), statistics.median(cpu[name])
        # Paired: each round's run against the plain run of the same round, then the median of
        # those ratios; the steadiest figure where the machine's speed drifts between rounds.
        paired = median_interval(paired_ratios(values, times["plain"]))
        print(
            f"{name:<24} {median:9.3f} {fastest:7.3f} {median / plain:12.2f}x {fastest / plain_min:9.2f}x "
            f"{used / plain_cpu:9.2f}x {paired!s:>28}"
        )


if __name__ == "__main__":
    main()

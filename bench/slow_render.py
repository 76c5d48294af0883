"""``celery -A bench.slow_render worker -Q render``: the render worker, every denoiser call
``BENCH_STEP_SECONDS`` longer without the interpreter lock (``bench.capture.simulate_step_cost``):
the tiny model's steps become a real model's GPU steps, for end-to-end timings."""

from __future__ import annotations

import os
import time
from typing import Any

from worker.app import app
from worker.pipelines import PipelineCache

__all__ = ["app"]

STEP_SECONDS = float(os.environ.get("BENCH_STEP_SECONDS", "0"))
_get = PipelineCache.get


def _slow_get(self: PipelineCache, model: str) -> Any:
    pipe = _get(self, model)
    denoiser = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    if STEP_SECONDS and not getattr(denoiser, "_bench_slow", False):
        forward = denoiser.forward

        def slow(*args: Any, **kwargs: Any) -> Any:
            out = forward(*args, **kwargs)
            time.sleep(STEP_SECONDS)
            return out

        denoiser.forward = slow
        denoiser._bench_slow = True
    return pipe


PipelineCache.get = _slow_get  # type: ignore[method-assign]

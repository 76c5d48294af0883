"""``celery -A bench.slow_render worker -Q render``: the render worker, every denoiser call
``BENCH_STEP_SECONDS`` longer without the interpreter lock (``bench.capture.simulate_step_cost``):
the tiny model's steps become a real model's GPU steps, for end-to-end timings."""

from __future__ import annotations

import os
from typing import Any

from bench.capture import simulate_step_cost
from worker.app import app
from worker.pipelines import PipelineCache

__all__ = ["app"]

STEP_SECONDS = float(os.environ.get("BENCH_STEP_SECONDS", "0"))
_get = PipelineCache.get


def _slow_get(self: PipelineCache, model: str) -> Any:
    pipe = _get(self, model)
    if STEP_SECONDS:
        simulate_step_cost(pipe, STEP_SECONDS)
    return pipe


PipelineCache.get = _slow_get  # type: ignore[method-assign]

"""What the render tests share: services on a real Redis with local storage and a models folder,
and a pipeline run that collects the latents ``StepCapture`` captured at each step."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from stepanim.services import Services
from stepanim.settings import Settings
from worker.capture import StepCapture

StepEnd = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]


@contextlib.contextmanager
def local_services(redis_url: str, tmp_path: Path, models_dir: Path, **settings: Any) -> Iterator[Services]:
    """Services on ``redis_url``, frames under ``tmp_path/storage``, models from ``models_dir``, on the CPU."""
    services = Services.from_settings(
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            redis_url=redis_url,
            storage_backend="local",
            local_storage_dir=tmp_path / "storage",
            models_dir=models_dir,
            device="cpu",
            **settings,
        )
    )
    try:
        yield services
    finally:
        services.store.redis.close()


def capturing(scheduler: Any) -> tuple[list[torch.Tensor], StepEnd]:
    """Install ``StepCapture`` on ``scheduler``: the list it fills, and the ``callback_on_step_end``
    that fills it (pass it to the pipeline call)."""
    capture = StepCapture(scheduler).install()
    frames: list[torch.Tensor] = []

    def on_step_end(_p: Any, _i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        latents = capture.pop()
        if latents is not None:
            frames.append(latents)
        return kwargs

    return frames, on_step_end

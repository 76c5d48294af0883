"""What the render tests share: services on a real Redis with local storage and a models folder,
and a pipeline run that collects the latents ``StepCapture`` captured at each step."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import worker.render
from stepanim.cancel import CancelWatch
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


@pytest.fixture(name="svc")
def family_services(redis_url: str, family_models_dir: Path, tmp_path: Path) -> Iterator[Services]:
    """Services with the tiny model of every family (import it as ``svc``)."""
    with local_services(redis_url, tmp_path, family_models_dir) as services:
        yield services


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


def record_results(monkeypatch: pytest.MonkeyPatch, pipeline_class: type) -> list[torch.Tensor]:
    """The latents every call of ``pipeline_class`` returns from now on (the class's own ``__call__``, spied)."""
    results: list[torch.Tensor] = []
    call = pipeline_class.__call__

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        output = call(self, *args, **kwargs)
        results.append(output.images)
        return output

    monkeypatch.setattr(pipeline_class, "__call__", spy)
    return results


def cancel_at_step(monkeypatch: pytest.MonkeyPatch, svc: Services, job_id: str, k: int) -> None:
    """Request the job's cancel (as the API does: Redis flag and channel) while step ``k`` samples,
    then wait until the render's cancel watcher has heard it, so the render stops after step ``k``.

    The message arrives in about a millisecond on an idle machine (well within a real model's step):
    waiting for the watcher rather than guessing a time keeps this exact on a loaded one."""
    real_pop = StepCapture.pop
    steps = 0
    watches: list[CancelWatch] = []

    def pop(self: StepCapture) -> Any:  # on the sampling thread, after each step
        nonlocal steps
        latents = real_pop(self)
        if latents is not None:
            steps += 1
            if steps == k:
                svc.store.request_cancel(job_id)
                deadline = time.monotonic() + 10
                while not watches[0].is_set() and time.monotonic() < deadline:
                    time.sleep(0.01)
        return latents

    class RecordedWatch(CancelWatch):
        def __enter__(self) -> CancelWatch:
            watches.append(self)
            return super().__enter__()

    monkeypatch.setattr(StepCapture, "pop", pop)
    monkeypatch.setattr(worker.render, "CancelWatch", RecordedWatch)

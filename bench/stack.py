"""The service as local processes with the tiny model, as the benchmarks run it."""

from __future__ import annotations

from pathlib import Path

from scripts.devstack import UNLIMITED_DEV_SETTINGS, Stack


def tiny_stack(workdir: Path, **settings: str) -> Stack:
    """A (not yet started) stack in ``workdir``: local storage, the tiny model on the CPU,
    development mode without per-key limits; ``settings`` are more ``STEPANIM_*`` values."""
    from worker.tiny_model import build_tiny_model

    models = workdir / "models"
    build_tiny_model(models / "tiny-sd")
    return Stack(
        workdir=workdir,
        settings={
            **UNLIMITED_DEV_SETTINGS,  # no API key, no per-key limits
            "STEPANIM_STORAGE_BACKEND": "local",
            "STEPANIM_LOCAL_STORAGE_DIR": str(workdir / "storage"),
            "STEPANIM_MODELS_DIR": str(models),
            "STEPANIM_DEFAULT_MODEL": "tiny-sd",
            "STEPANIM_DEVICE": "cpu",
            "HF_HUB_OFFLINE": "1",
            **settings,
        },
    )

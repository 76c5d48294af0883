"""The committed digits model with every scheduler the service offers, at its native size and upscaled 2x.

Through ``worker.render`` (the render worker's code) with a real Redis and local storage;
the classifier of ``digits.classifier`` reads the last frame of each run.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digits.classifier import predict_proba
from digits.data import NAMES
from scripts.devstack import ROOT
from stepanim import lifecycle
from stepanim.admission import admit_now
from stepanim.jobs import Job, utcnow
from stepanim.request import AnimationCreate
from stepanim.services import Services
from stepanim.settings import Settings
from tests.integration.render_support import local_services
from worker.pipelines import PipelineCache
from worker.render import render

MODELS = ROOT / "models"
STEPS = 16
# The service's first nine samplers, one digit each (stepanim.samplers lists more, among them LCM and TCD,
# which a model not distilled for them does not draw with).
SCHEDULERS = ("euler", "euler_a", "ddim", "plms", "lms", "heun", "dpmpp_2m", "dpmpp_2m_sde", "unipc")


@pytest.fixture
def svc(redis_url: str, tmp_path: Path) -> Iterator[Services]:
    with local_services(redis_url, tmp_path, MODELS) as services:
        yield services


@pytest.fixture(scope="module")
def pipes() -> PipelineCache:
    assert (MODELS / "digits" / "model_index.json").is_file(), "the committed digits model is missing"
    return PipelineCache(Settings(_env_file=None, models_dir=MODELS, device="cpu"))


def run(svc: Services, pipes: PipelineCache, *, digit: int, scheduler: str, upscale: int) -> list[np.ndarray]:
    body = AnimationCreate.model_validate(
        {
            "prompt": f"the number {NAMES[digit]}",
            "model": "digits",
            "width": 32,
            "height": 32,
            "steps": STEPS,
            "scheduler": scheduler,
            "guidance_scale": 3,
            "seed": 7,
            "capture": {"upscale": upscale},
        }
    )
    now = utcnow()
    job = Job(id=uuid.uuid4().hex, request=body, model="digits", seed=7, created_at=now, updated_at=now)
    admit_now(svc.store, job)
    result = render(lifecycle.start_rendering(svc, job.id), svc, pipes)
    assert result.steps_run == result.total == STEPS, scheduler
    return [np.asarray(Image.open(io.BytesIO(svc.storage.get_bytes(key))).convert("RGB")) for key in result.frames[0]]


# Every scheduler at the native size; a few of them upscaled (the upscale is the same code for all).
@pytest.mark.parametrize(("upscale", "schedulers"), [(1, SCHEDULERS), (2, SCHEDULERS[:3])])
def test_every_scheduler_draws_the_digit_at_native_size_and_upscaled(
    svc: Services, pipes: PipelineCache, upscale: int, schedulers: tuple[str, ...]
) -> None:
    read = {}
    for digit, scheduler in enumerate(schedulers):
        frames = run(svc, pipes, digit=digit, scheduler=scheduler, upscale=upscale)
        assert len(frames) == STEPS
        assert frames[-1].shape == (32 * upscale, 32 * upscale, 3)
        read[scheduler] = (digit, int(predict_proba(np.stack(frames[-1:]))[0].argmax()))
    wrong = {name: pair for name, pair in read.items() if pair[0] != pair[1]}
    # One frame per step with every scheduler; the drawing itself may miss now and then (a 6 M-parameter model).
    assert len(wrong) <= 1, f"(asked, read) where they differ: {wrong}"

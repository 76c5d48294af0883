"""SDXL through the render worker's code: a tiny random-weight SDXL pipeline saved and loaded like a real one.

The pipeline class is detected from the folder (``StableDiffusionXLPipeline``), img2img
shares its weights (``StableDiffusionXLImg2ImgPipeline``), the approx decoder uses SDXL's
latent factors, and every step is one frame with the SDXL-specific added conditioning.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from stepanim import lifecycle
from stepanim.admission import admit_now
from stepanim.jobs import Job, utcnow
from stepanim.naming import upload_key
from stepanim.request import AnimationCreate
from stepanim.services import Services
from stepanim.settings import Settings
from tests.integration.render_support import local_services
from worker.capture import latent_family
from worker.pipelines import PipelineCache, pipeline_for
from worker.render import render
from worker.schedulers import make_scheduler
from worker.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def sdxl_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sdxl-models")
    build_tiny_model(folder / "tiny-sdxl", family="sdxl")
    return folder


@pytest.fixture
def svc(redis_url: str, sdxl_models: Path, tmp_path: Path) -> Iterator[Services]:
    with local_services(redis_url, tmp_path, sdxl_models) as services:
        yield services


@pytest.fixture(scope="module")
def pipes(sdxl_models: Path) -> PipelineCache:
    return PipelineCache(Settings(_env_file=None, models_dir=sdxl_models, device="cpu"))


def new_job(svc: Services, **request: Any) -> Job:
    body = AnimationCreate.model_validate(
        {"prompt": "a red cat", "model": "tiny-sdxl", "width": 64, "height": 64, **request}
    )
    now = utcnow()
    job = Job(id=uuid.uuid4().hex, request=body, model="tiny-sdxl", seed=5, created_at=now, updated_at=now)
    admit_now(svc.store, job)
    return lifecycle.start_rendering(svc, job.id)


def images(svc: Services, keys: list[str]) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(svc.storage.get_bytes(k)))) for k in keys]


def test_the_sdxl_pipeline_is_detected_and_img2img_shares_its_weights(pipes: PipelineCache) -> None:
    base = pipes.get("tiny-sdxl")
    assert type(base).__name__ == "StableDiffusionXLPipeline"
    assert latent_family(base) == "sdxl"
    img2img = pipeline_for(base, scheduler=make_scheduler(base, "euler_a", family="sdxl"), img2img=True)
    assert type(img2img).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert img2img.unet is base.unet and img2img.vae is base.vae


@pytest.mark.parametrize("scheduler", ["euler_a", "dpmpp_2m", "ddim", "heun"])
def test_one_frame_per_step_with_full_and_approx_decoders(svc: Services, pipes: PipelineCache, scheduler: str) -> None:
    for decoder, size in (("full", (64, 64, 3)), ("approx", (16, 16, 3))):
        capture = {"decoder": decoder, "resolution": "quarter" if decoder == "approx" else "full"}
        result = render(new_job(svc, steps=3, scheduler=scheduler, capture=capture), svc, pipes)
        assert result.steps_run == 3 and len(result.frames[0]) == 3, (scheduler, decoder)
        frames = images(svc, result.frames[0])
        assert all(f.shape == size for f in frames), (scheduler, decoder, [f.shape for f in frames])
        assert not np.array_equal(frames[0], frames[-1])  # the steps differ


def test_sdxl_img2img_starts_from_the_init_image(svc: Services, pipes: PipelineCache) -> None:
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    pixels[:, :32] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    upload_id = uuid.uuid4().hex
    svc.storage.put_bytes(upload_key(upload_id), buffer.getvalue(), "image/png")
    job = new_job(svc, steps=10, strength=0.3, init_image={"upload_id": upload_id})
    result = render(job, svc, pipes)
    assert result.steps_run == 3  # int(10 x 0.3)
    assert len(result.frames[0]) == 3

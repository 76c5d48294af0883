"""Every family x every sampler the registry lists for it, rendered by ``worker.render.render``.

For each pair: one frame per step, named 001..N, and the last frame is exactly the decode of
the pipeline's own final latents (what the pipeline call inside ``render`` returned: render
asks for ``output_type="latent"``; Flux's latents unpacked, decoded with the same decoder).
A second check bypasses the last-step rule and shows that the capture's own x0 formula lands
on the result where the sampler's last update is its x0 prediction (every flow sampler here):
a wrong formula (say, the sigma of the next step instead of the one just taken) fails it.
``test_render_flow.py`` checks the other decoders, and that a plain run of the same request
(no callback) gives these same final latents.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import worker.capture
from stepanim import lifecycle
from stepanim.families import FACTS, Family
from stepanim.jobs import Job
from stepanim.request import AnimationCreate
from stepanim.samplers import fitting_samplers
from stepanim.services import Services
from stepanim.settings import Settings
from tests.integration.job_support import admitted_job
from tests.integration.render_support import capturing, family_services, record_results  # noqa: F401 (svc)
from worker.capture import decode_approx, latent_family, unpack_for_decoding
from worker.pipelines import PipelineCache, pipeline_for
from worker.render import render
from worker.schedulers import make_scheduler
from worker.tiny_model import FLUX_SCHNELL_SCHEDULER_CONFIG

STEPS = 4
SIZE = 64
SEED = 21
PROMPT = "a red cat"
MODELS: dict[str, Family] = {
    "tiny-sd": "sd",
    "tiny-sdxl": "sdxl",
    "tiny-sd3": "sd3",
    "tiny-flux": "flux",
    "tiny-flux-schnell": "flux",
}
SCHEDULER_CONFIGS = {"tiny-flux-schnell": FLUX_SCHNELL_SCHEDULER_CONFIG}

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASES = [
    pytest.param(model, family, sampler_id, id=f"{model}-{sampler_id}")
    for model, family in MODELS.items()
    for sampler_id in fitting_samplers(family, scheduler_config=SCHEDULER_CONFIGS.get(model))
]


@pytest.fixture(scope="module")
def pipes(family_models_dir: Path) -> PipelineCache:
    return PipelineCache(
        Settings(_env_file=None, models_dir=family_models_dir, device="cpu", pipeline_cache_size=len(MODELS))
    )


def new_job(svc: Services, model: str, **request: Any) -> Job:
    body = AnimationCreate.model_validate(
        {"prompt": PROMPT, "model": model, "width": SIZE, "height": SIZE, "seed": SEED, **request}
    )
    job = admitted_job(svc, body, model=model, seed=SEED)
    return lifecycle.start_rendering(svc, job.id)


def captured_run(base: Any, family: Family, sampler_id: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Render's pipeline call for the request ``new_job`` makes, with StepCapture installed:
    (the pipeline's own final latents, the latents captured at each step)."""
    generators = [torch.Generator().manual_seed(SEED)]
    scheduler = make_scheduler(base, sampler_id, family=family, seed=SEED, generators=generators)
    pipe = pipeline_for(base, scheduler=scheduler, img2img=False)
    frames, on_step_end = capturing(scheduler)

    extra: dict[str, Any] = {"negative_prompt": None} if FACTS[family].negative_prompt else {}
    latents = pipe(
        prompt=PROMPT,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        generator=generators,
        width=SIZE,
        height=SIZE,
        output_type="latent",
        callback_on_step_end=on_step_end,
        **extra,
    ).images
    return latents, frames


@pytest.mark.parametrize(("model", "family", "sampler_id"), CASES)
def test_one_frame_per_step_and_the_last_is_the_result(
    svc: Services, pipes: PipelineCache, monkeypatch: pytest.MonkeyPatch, model: str, family: Family, sampler_id: str
) -> None:
    base = pipes.get(model)
    assert latent_family(base) == family
    results = record_results(monkeypatch, type(base))  # text-to-image runs base's own class
    job = new_job(svc, model, steps=STEPS, scheduler=sampler_id, capture={"decoder": "approx"})
    result = render(job, svc, pipes)
    assert result.steps_run == result.total == STEPS
    names = [key.rsplit("/", 1)[1] for key in result.frames[0]]
    assert names == [f"0000{step:03d}-{SEED}-{PROMPT}.png" for step in range(1, STEPS + 1)]

    (latents,) = results
    unpack = unpack_for_decoding(base, family, width=SIZE, height=SIZE)
    expected = decode_approx(unpack(latents), family, size=(SIZE, SIZE))[0]
    last = np.asarray(Image.open(io.BytesIO(svc.storage.get_bytes(result.frames[0][-1]))))
    assert np.array_equal(last, expected), f"max difference {np.abs(last.astype(int) - expected).max()}"
    first = np.asarray(Image.open(io.BytesIO(svc.storage.get_bytes(result.frames[0][0]))))
    assert not np.array_equal(first, last)


# The samplers whose last update is their x0 prediction (the last sigma is 0 and the final update
# first order): there the capture's x0 at the last step is the result, also without the rule.
X0_CASES = [
    pytest.param(model, family, sampler_id, id=f"{model}-{sampler_id}")
    for model, family in MODELS.items()
    for sampler_id in fitting_samplers(family, scheduler_config=SCHEDULER_CONFIGS.get(model))
    if FACTS[family].flow or (model == "tiny-sd" and sampler_id in ("euler", "heun", "dpmpp_2m"))
]


@pytest.mark.parametrize(("model", "family", "sampler_id"), X0_CASES)
def test_the_last_x0_prediction_lands_on_the_result(
    pipes: PipelineCache, monkeypatch: pytest.MonkeyPatch, model: str, family: Family, sampler_id: str
) -> None:
    monkeypatch.setattr(worker.capture, "_at_end", lambda _scheduler, _timestep: False)
    base = pipes.get(model)
    latents, frames = captured_run(base, family, sampler_id)
    assert len(frames) == STEPS
    torch.testing.assert_close(frames[-1], latents, rtol=0, atol=1e-5)
    assert not torch.allclose(frames[-2], latents, atol=1e-3)  # an earlier prediction is another image


SCHEDULE_CASES = [
    pytest.param(model, family, sampler_id, schedule, id=f"{model}-{sampler_id}-{schedule}")
    for model, family in MODELS.items()
    if model in ("tiny-sd", "tiny-sd3", "tiny-flux")
    for sampler_id in ("euler", "dpmpp_2m")
    for schedule in fitting_samplers(family).get(sampler_id, ())[1:]
]


@pytest.mark.parametrize(("model", "family", "sampler_id", "schedule"), SCHEDULE_CASES)
def test_schedule_types_render_one_frame_per_step_to_the_result(
    svc: Services,
    pipes: PipelineCache,
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    family: Family,
    sampler_id: str,
    schedule: str,
) -> None:
    base = pipes.get(model)
    results = record_results(monkeypatch, type(base))
    capture = {"decoder": "approx"}
    job = new_job(svc, model, steps=STEPS, scheduler=sampler_id, schedule=schedule, capture=capture)
    result = render(job, svc, pipes)
    assert result.steps_run == len(result.frames[0]) == STEPS
    (latents,) = results
    unpack = unpack_for_decoding(base, family, width=SIZE, height=SIZE)
    expected = decode_approx(unpack(latents), family, size=(SIZE, SIZE))[0]
    last = np.asarray(Image.open(io.BytesIO(svc.storage.get_bytes(result.frames[0][-1]))))
    assert np.array_equal(last, expected)
    default = render(new_job(svc, model, steps=STEPS, scheduler=sampler_id, capture=capture), svc, pipes)
    # The first step is taken from the same highest noise level; the next ones differ.
    assert svc.storage.get_bytes(default.frames[0][1]) != svc.storage.get_bytes(result.frames[0][1])

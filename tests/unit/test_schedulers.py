"""worker.schedulers.make_scheduler: the registry's schedulers built from each family's scheduler config
(no pipeline needed), what each schedule type changes, and what is refused."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import diffusers
import numpy as np
import pytest
import torch

from stepanim.families import Family
from stepanim.samplers import fitting_samplers
from worker.schedulers import make_scheduler
from worker.tiny_model import (
    FLUX_DEV_SCHEDULER_CONFIG,
    FLUX_SCHNELL_SCHEDULER_CONFIG,
    SD3_SCHEDULER_CONFIG,
    SD15_SCHEDULER_CONFIG,
)

STEPS = 10
# The schedulers the tiny models (and the real ones) ship with.
MODELS: dict[str, tuple[Family, str, dict[str, Any]]] = {
    "sd": ("sd", "PNDMScheduler", SD15_SCHEDULER_CONFIG),
    "sdxl": (
        "sdxl",
        "EulerDiscreteScheduler",
        {**SD15_SCHEDULER_CONFIG, "timestep_spacing": "leading", "interpolation_type": "linear"},
    ),
    "sd3": ("sd3", "FlowMatchEulerDiscreteScheduler", SD3_SCHEDULER_CONFIG),
    "flux-dev": ("flux", "FlowMatchEulerDiscreteScheduler", FLUX_DEV_SCHEDULER_CONFIG),
    "flux-schnell": ("flux", "FlowMatchEulerDiscreteScheduler", FLUX_SCHNELL_SCHEDULER_CONFIG),
}


def pipe_of(model: str) -> Any:
    """What make_scheduler reads of a pipeline: its scheduler's config."""
    _, class_name, config = MODELS[model]
    return SimpleNamespace(scheduler=getattr(diffusers, class_name).from_config(config))


def set_timesteps(scheduler: Any, family: Family) -> Any:
    """Call set_timesteps as the family's pipeline does (Flux: custom sigmas unless flow sigmas, and mu)."""
    if family != "flux":
        scheduler.set_timesteps(STEPS)
    elif scheduler.config.get("use_flow_sigmas"):
        scheduler.set_timesteps(STEPS, mu=0.8)
    else:
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / STEPS, STEPS), mu=0.8)
    return scheduler


def schedule_of(scheduler: Any) -> torch.Tensor:
    sigmas = getattr(scheduler, "sigmas", None)
    return torch.as_tensor(sigmas if sigmas is not None else scheduler.timesteps).float()


CASES = [
    pytest.param(model, sampler_id, schedules, id=f"{model}-{sampler_id}")
    for model, (family, _, config) in MODELS.items()
    for sampler_id, schedules in fitting_samplers(family, scheduler_config=config).items()
]


@pytest.mark.parametrize(("model", "sampler_id", "schedules"), CASES)
def test_each_schedule_type_changes_the_noise_levels_and_ends_on_a_clean_image(
    model: str, sampler_id: str, schedules: tuple[str, ...]
) -> None:
    """Every schedule type the registry lists for a sampler gives other noise levels than the others, and
    every one ends (near) zero: nothing listed leaves noise in the result (diffusers' DEIS with flow sigmas
    ends on its last sigma repeated, 0.5 after 4 steps of SD3: not listed)."""
    family = MODELS[model][0]
    seen: list[torch.Tensor] = []
    for schedule in schedules:
        scheduler = set_timesteps(make_scheduler(pipe_of(model), sampler_id, schedule, family=family, seed=1), family)
        levels = schedule_of(scheduler)
        assert all(levels.shape != other.shape or not torch.allclose(levels, other) for other in seen), schedule
        seen.append(levels)
        sigmas = getattr(scheduler, "sigmas", None)
        if sigmas is not None:
            assert float(sigmas[-1]) < 0.05 * float(sigmas[0]), (schedule, sigmas)
        else:  # DDIM, PNDM, DDPM, LCM, TCD: discrete timesteps
            assert int(scheduler.timesteps[-1]) < 100, (schedule, scheduler.timesteps)


def test_the_scheduler_is_built_from_the_models_own_config() -> None:
    sd = make_scheduler(pipe_of("sd"), "dpmpp_2m", "karras", family="sd")
    assert type(sd).__name__ == "DPMSolverMultistepScheduler"
    assert (sd.config.beta_schedule, sd.config.beta_end, sd.config.steps_offset) == ("scaled_linear", 0.012, 1)
    assert (sd.config.algorithm_type, sd.config.solver_order, sd.config.use_karras_sigmas) == ("dpmsolver++", 2, True)
    assert make_scheduler(pipe_of("sd"), "dpmpp_3m", family="sd").config.solver_order == 3
    assert make_scheduler(pipe_of("sd"), "plms", family="sd").config.skip_prk_steps is True
    euler = make_scheduler(pipe_of("sd3"), "euler", "karras", family="sd3")
    assert type(euler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert (euler.config.shift, euler.config.use_karras_sigmas) == (3.0, True)
    assert type(make_scheduler(pipe_of("sd3"), "heun", family="sd3")).__name__ == "FlowMatchHeunDiscreteScheduler"


@pytest.mark.parametrize(("model", "shift"), [("sd3", 3.0), ("flux-dev", 3.0), ("flux-schnell", 1.0)])
def test_flow_solvers_get_flow_sigmas_and_the_models_shift(model: str, shift: float) -> None:
    family = MODELS[model][0]
    scheduler = make_scheduler(pipe_of(model), "unipc", family=family)
    config = scheduler.config
    assert (config.use_flow_sigmas, config.prediction_type, config.flow_shift) == (True, "flow_prediction", shift)
    assert config.use_dynamic_shifting == (model == "flux-dev")


def test_each_call_gives_a_fresh_scheduler() -> None:
    pipe = pipe_of("sd")
    assert make_scheduler(pipe, "euler", family="sd") is not make_scheduler(pipe, "euler", family="sd")


def test_dpmpp_sde_is_seeded_with_the_jobs_seed() -> None:
    assert make_scheduler(pipe_of("sd"), "dpmpp_sde", family="sd", seed=1234).config.noise_sampler_seed == 1234
    per_image = make_scheduler(pipe_of("sd"), "dpmpp_sde", family="sd", seed=[7, 8])
    assert per_image.config.noise_sampler_seed == [7, 8]


def test_generator_samplers_draw_from_the_runs_generators() -> None:
    """SD3 and Flux pipelines pass no generator to step(): the scheduler's step gets the run's as its default."""

    def run(generator_seed: int) -> torch.Tensor:
        generators = [torch.Generator().manual_seed(generator_seed)]
        scheduler = make_scheduler(pipe_of("sd3"), "dpmpp_2m_sde", family="sd3", generators=generators)
        assert "generator" in inspect.signature(scheduler.step).parameters  # pipelines inspect it
        scheduler.set_timesteps(STEPS)
        sample = torch.ones(1, 16, 4, 4)
        for t in scheduler.timesteps[:3]:
            sample = scheduler.step(torch.zeros_like(sample), t, sample, return_dict=False)[0]
        return sample

    torch.manual_seed(0)
    first = run(5)
    torch.manual_seed(1)  # the global generator does not matter
    assert torch.equal(run(5), first)
    assert not torch.equal(run(6), first)


@pytest.mark.parametrize(
    ("model", "sampler_id", "schedule", "kwargs", "message"),
    [
        ("flux-dev", "ddim", "default", {}, r"^scheduler: 'ddim' does not fit flux models \(fits: euler, "),
        ("flux-dev", "euler_a", "default", {}, r"^scheduler: 'euler_a' does not fit flux models"),
        ("flux-dev", "heun", "default", {}, r"^scheduler: 'heun' does not fit flux models"),
        ("sd3", "lms", "default", {}, r"^scheduler: 'lms' does not fit sd3 models"),
        ("flux-schnell", "dpmpp_2m", "default", {}, r"^scheduler: 'dpmpp_2m' does not fit flux models \(this model"),
        ("sd3", "unipc", "default", {"img2img": True}, r"^scheduler: 'unipc' does not fit sd3 image-to-image"),
        ("sd3", "euler", "sgm_uniform", {}, r"^schedule: 'sgm_uniform' does not apply to 'euler' on sd3 models"),
        ("sd", "ddim", "karras", {}, r"^schedule: 'karras' does not apply to 'ddim' on sd models"),
        ("sd", "nope", "default", {}, r"^scheduler: unknown sampler 'nope'"),
        ("sd", "euler", "simple", {}, r"^schedule: unknown schedule 'simple'"),
        ("sd", "tcd", "default", {"steps": 51}, r"^steps: 'tcd' takes at most 50 steps"),
    ],
)
def test_what_does_not_fit_is_refused(
    model: str, sampler_id: str, schedule: str, kwargs: dict[str, Any], message: str
) -> None:
    family = MODELS[model][0]
    with pytest.raises(ValueError, match=message):
        make_scheduler(pipe_of(model), sampler_id, schedule, family=family, **kwargs)


@pytest.mark.parametrize(("model", "family"), [("sd", "flux"), ("flux-dev", "sdxl")])
def test_a_family_that_does_not_match_the_models_scheduler_is_refused(model: str, family: Family) -> None:
    """Today's bug: EulerDiscreteScheduler with linear betas built for a flow model; never again."""
    with pytest.raises(ValueError, match=r"^family: "):
        make_scheduler(pipe_of(model), "euler", family=family)

"""Building the diffusers scheduler of a request's sampler and schedule type (``stepanim.samplers``).

Every run gets a fresh scheduler instance made from the pipeline's own scheduler config
plus the registry's overrides, so the model's training schedule (betas, shift, spacing...)
carries over. A sampler or schedule that does not fit the model's family is refused with a
ValueError naming the field: the worker never samples with a scheduler made for another
kind of model (an epsilon scheduler with linear betas for a flow-matching model, say).
"""

from __future__ import annotations

import functools
import inspect
import warnings
from typing import Any

import diffusers
import torch

from stepanim.families import FACTS, Family
from stepanim.samplers import Schedule, Variant, fit_error, sampler, schedule_overrides


def make_scheduler(
    pipe: Any,
    sampler_id: str,
    schedule: Schedule | str = "default",
    *,
    family: Family,
    seed: int | list[int] | None = None,
    img2img: bool = False,
    steps: int | None = None,
    generators: list[torch.Generator] | None = None,
) -> Any:
    """A new scheduler for one run of ``pipe`` (a loaded pipeline of ``family``).

    ``seed`` seeds the samplers that draw noise from their own sampler (DPM++ SDE's
    ``noise_sampler_seed``): the job's seed, or the seed of each image of the batch (a
    Brownian tree per image, so that image i of a batch is the image a single run with
    its seed makes). The others draw from ``generators``, the run's per-image
    generators: the SD and SDXL pipelines pass them to ``step()``, the SD3 and Flux
    pipelines do not, so the scheduler's ``step`` takes them as its default (without them
    an SDE sampler would draw from torch's global generator: other frames each time).
    Raises ValueError (naming the field) when the sampler, schedule or step count does not
    fit the model.
    """
    config = dict(pipe.scheduler.config)
    own = type(pipe.scheduler).__name__
    if _is_flow(own, config) != FACTS[family].flow:
        kind = "flow-matching" if _is_flow(own, config) else "diffusion"
        raise ValueError(f"family: {family!r} models do not sample with the model's {kind} scheduler ({own})")
    error = fit_error(sampler_id, str(schedule), family, img2img=img2img, scheduler_config=config, steps=steps)
    if error is not None:
        raise ValueError(error)
    entry = sampler(sampler_id)
    variant = entry.variant(family)
    assert variant is not None  # fit_error said it fits
    overrides = scheduler_overrides(variant, schedule, config)  # type: ignore[arg-type]  # checked by fit_error
    if entry.seeding == "noise_sampler_seed":
        overrides["noise_sampler_seed"] = seed
    cls = getattr(diffusers, variant.class_name)
    _check_accepted(cls, overrides)
    scheduler = cls.from_config(config, **overrides)
    if variant.class_name == "DPMSolverSDEScheduler":
        quiet_brownian_bounds(scheduler)
    if entry.seeding == "generator":
        if generators is None and seed is not None:
            generators = [torch.Generator().manual_seed(s) for s in (seed if isinstance(seed, list) else [seed])]
        if generators is not None:
            draw_from(scheduler, generators)
    return scheduler


def quiet_brownian_bounds(scheduler: Any) -> None:
    """Silence torchsde's "Should have tb<=t1 but got tb=4.116698265075684 and t1=4.116698" in DPM++ SDE.

    DPMSolverSDEScheduler builds its Brownian tree from float32 sigmas and queries it with float64
    ones; torchsde clamps the query (a change in the 8th digit) and warns, on every step of every job.
    """
    step = scheduler.step

    @functools.wraps(step)
    def quiet_step(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Should have t\w*[<>]=t[01] but got", category=UserWarning)
            return step(*args, **kwargs)

    scheduler.step = quiet_step


def draw_from(scheduler: Any, generators: list[torch.Generator]) -> None:
    """Make ``generators`` the default ``generator`` of ``scheduler.step`` (a caller's own still wins)."""
    step = scheduler.step
    signature = inspect.signature(step)
    if "generator" not in signature.parameters:
        return

    @functools.wraps(step)  # keeps the signature pipelines inspect
    def seeded_step(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        if bound.arguments.get("generator") is None:
            bound.arguments["generator"] = generators
        return step(*bound.args, **bound.kwargs)

    scheduler.step = seeded_step


def scheduler_overrides(variant: Variant, schedule: Schedule, model_config: dict[str, Any]) -> dict[str, Any]:
    """The config overrides of ``variant`` and ``schedule`` on top of a model's scheduler config."""
    overrides: dict[str, Any] = dict(variant.overrides)
    if variant.flow_sigmas:
        # diffusers' flow-matching solvers: the model's shift (Flux's dynamic shifting, when on,
        # comes from the mu the pipeline passes to set_timesteps).
        overrides.update(
            use_flow_sigmas=True,
            prediction_type="flow_prediction",
            flow_shift=float(model_config.get("shift", 1.0)),
        )
    overrides.update(schedule_overrides(variant, schedule))
    return overrides


def _is_flow(class_name: str, config: dict[str, Any]) -> bool:
    return (
        class_name.startswith("FlowMatch")
        or bool(config.get("use_flow_sigmas", False))
        or config.get("prediction_type") == "flow_prediction"
    )


def _check_accepted(cls: Any, overrides: dict[str, Any]) -> None:
    """from_config ignores (with a log line) what a class does not take: a registry mistake must not."""
    accepted = inspect.signature(cls.__init__).parameters
    unknown = sorted(k for k in overrides if k not in accepted)
    if unknown:
        raise ValueError(f"scheduler: {cls.__name__} does not take {', '.join(unknown)}")

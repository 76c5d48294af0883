"""Samplers and schedule types, as the web UIs name them: the one registry of sampler names.

Pure (no torch, no diffusers): the API validates requests with it; only the render worker
turns an entry into a diffusers scheduler (``worker.schedulers.make_scheduler``).

A request names a *sampler* (a stable id such as ``dpmpp_2m``, shown as "DPM++ 2M") and,
apart from it, a *schedule type* (``karras``...), as Forge and ComfyUI do; the older
combined names ("DPM++ 2M Karras") are parsed by :func:`parse_sampler_name`. Schedule types
map to diffusers as its docs say (docs/source/en/api/schedulers/overview.md):

================  ====================================================================
schedule          scheduler config
================  ====================================================================
``default``       the model's own scheduler config
``karras``        ``use_karras_sigmas=True``
``exponential``   ``use_exponential_sigmas=True`` (``timestep_spacing="linspace"``)
``beta``          ``use_beta_sigmas=True`` (``timestep_spacing="linspace"``)
``sgm_uniform``   ``timestep_spacing="trailing"``
================  ====================================================================

Each sampler has one scheduler for diffusion models (SD 1.x/2.x, SDXL) and, where one
works with the pipeline, one for flow-matching models (SD3, Flux): what fits which family
was checked by running every pair on the tiny models (``tests/integration/test_samplers.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from stepanim.families import FACTS, FAMILIES, Family, dynamic_shifting

Schedule = Literal["default", "karras", "exponential", "beta", "sgm_uniform"]
SCHEDULES: tuple[Schedule, ...] = get_args(Schedule)
SCHEDULE_LABELS: dict[Schedule, str] = {
    "default": "Automatic",
    "karras": "Karras",
    "exponential": "Exponential",
    "beta": "Beta",
    "sgm_uniform": "SGM Uniform",
}

# How a stochastic sampler draws its noise; every way gives the same frames for the same request.
#   deterministic: no noise after the initial latents (which come from the per-image generators)
#   generator: from the per-image generators the pipeline passes to step()
#   noise_sampler_seed: from the scheduler's own noise sampler, seeded with the job's seed
Seeding = Literal["deterministic", "generator", "noise_sampler_seed"]

DIFFUSION: tuple[Family, ...] = ("sd", "sdxl")
_SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
_ALL: tuple[Schedule, ...] = SCHEDULES
_SPACING: tuple[Schedule, ...] = ("default", "sgm_uniform")
_FLOW_SIGMAS: tuple[Schedule, ...] = ("default", "karras", "exponential", "beta")
_ONLY_DEFAULT: tuple[Schedule, ...] = ("default",)


@dataclass(frozen=True)
class Variant:
    """One diffusers scheduler class with its config overrides, for some families."""

    class_name: str
    overrides: Mapping[str, Any]
    families: tuple[Family, ...]
    schedules: tuple[Schedule, ...]
    img2img: bool = True  # also fits the families' image-to-image pipelines
    # Flow-matching DPM-Solver and UniPC: flow sigmas, flow prediction, the model's shift.
    flow_sigmas: bool = False
    # set_timesteps asserts use_dynamic_shifting when given mu (DPM-Solver): not for a
    # model without dynamic shifting in a family whose pipeline always passes mu (FLUX.1-schnell).
    mu_needs_dynamic_shifting: bool = False


@dataclass(frozen=True)
class Sampler:
    id: str  # stable, in requests and manifests
    label: str  # as the web UIs name it
    seeding: Seeding
    variants: tuple[Variant, ...]
    max_steps: int | None = None  # the scheduler refuses more steps (LCM, TCD: their original 50)
    note: str = ""

    def variant(self, family: Family) -> Variant | None:
        """The scheduler this sampler uses for ``family`` models; None when it has none for them."""
        return next((v for v in self.variants if family in v.families), None)


def _diffusion(
    class_name: str, schedules: tuple[Schedule, ...] = _ALL, overrides: Mapping[str, Any] | None = None
) -> Variant:
    return Variant(class_name, overrides or {}, DIFFUSION, schedules)


def _flow_solver(class_name: str, overrides: Mapping[str, Any] | None = None) -> Variant:
    # diffusers' flow-sigma solvers have no scale_noise(), which the SD3 and Flux image-to-image
    # pipelines call (and DPM-Solver's set_timesteps takes no sigmas, which Flux img2img passes):
    # text-to-image only. Their Karras / exponential / beta sigmas come from a beta schedule the
    # flow models do not have (DPM-Solver's Karras gave a first sigma of 157 and NaNs): default only.
    return Variant(
        class_name,
        overrides or {},
        ("sd3", "flux"),
        _ONLY_DEFAULT,
        img2img=False,
        flow_sigmas=True,
        mu_needs_dynamic_shifting=class_name != "UniPCMultistepScheduler",
    )


_DPMPP: dict[str, Any] = {"algorithm_type": "dpmsolver++", "solver_order": 2}
_DPMPP_SDE: dict[str, Any] = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}
_DPMPP_3: dict[str, Any] = {"algorithm_type": "dpmsolver++", "solver_order": 3}

REGISTRY: tuple[Sampler, ...] = (
    Sampler(
        "euler",
        "Euler",
        "deterministic",
        (
            _diffusion("EulerDiscreteScheduler"),
            Variant("FlowMatchEulerDiscreteScheduler", {}, ("sd3", "flux"), _FLOW_SIGMAS),
        ),
    ),
    Sampler("euler_a", "Euler a", "generator", (_diffusion("EulerAncestralDiscreteScheduler", _SPACING),)),
    Sampler("lms", "LMS", "deterministic", (_diffusion("LMSDiscreteScheduler"),)),
    Sampler(
        "heun",
        "Heun",
        "deterministic",
        (
            _diffusion("HeunDiscreteScheduler"),
            # Flux calls set_timesteps(sigmas=..., mu=...), which FlowMatchHeunDiscreteScheduler does not take.
            Variant("FlowMatchHeunDiscreteScheduler", {}, ("sd3",), _ONLY_DEFAULT),
        ),
        note="two model calls per step",
    ),
    Sampler("dpm2", "DPM2", "deterministic", (_diffusion("KDPM2DiscreteScheduler"),), note="two model calls per step"),
    Sampler(
        "dpm2_a",
        "DPM2 a",
        "generator",
        (_diffusion("KDPM2AncestralDiscreteScheduler"),),
        note="two model calls per step",
    ),
    Sampler(
        "dpmpp_2m",
        "DPM++ 2M",
        "deterministic",
        (_diffusion("DPMSolverMultistepScheduler", _ALL, _DPMPP), _flow_solver("DPMSolverMultistepScheduler", _DPMPP)),
    ),
    Sampler(
        "dpmpp_2m_sde",
        "DPM++ 2M SDE",
        "generator",
        (
            _diffusion("DPMSolverMultistepScheduler", _ALL, _DPMPP_SDE),
            _flow_solver("DPMSolverMultistepScheduler", _DPMPP_SDE),
        ),
    ),
    Sampler(
        "dpmpp_3m",
        "DPM++ 3M",
        "deterministic",
        (
            _diffusion("DPMSolverMultistepScheduler", _ALL, _DPMPP_3),
            _flow_solver("DPMSolverMultistepScheduler", _DPMPP_3),
        ),
        note="order-3 multistep DPM-Solver++ (not the web UIs' DPM++ 3M SDE)",
    ),
    Sampler(
        "dpmpp_sde",
        "DPM++ SDE",
        "noise_sampler_seed",
        (_diffusion("DPMSolverSDEScheduler"),),
        note="two model calls per step; needs the torchsde package",
    ),
    Sampler(
        "unipc",
        "UniPC",
        "deterministic",
        (_diffusion("UniPCMultistepScheduler"), _flow_solver("UniPCMultistepScheduler")),
    ),
    # DEIS has flow sigmas too, but in diffusers 0.42 its flow schedule ends on its last sigma repeated
    # (0.5 after 4 steps with shift 3), not on 0: the image would stay half noise. Not for SD3 / Flux.
    Sampler("deis", "DEIS", "deterministic", (_diffusion("DEISMultistepScheduler"),)),
    Sampler("ddim", "DDIM", "deterministic", (_diffusion("DDIMScheduler", _SPACING),)),
    Sampler("plms", "PLMS", "deterministic", (_diffusion("PNDMScheduler", _SPACING, {"skip_prk_steps": True}),)),
    Sampler("ddpm", "DDPM", "generator", (_diffusion("DDPMScheduler", _SPACING),)),
    Sampler(
        "lcm",
        "LCM",
        "generator",
        (_diffusion("LCMScheduler", _ONLY_DEFAULT),),
        max_steps=50,
        note="for LCM-distilled models and LoRAs; at most its original 50 steps",
    ),
    Sampler(
        "tcd",
        "TCD",
        "generator",
        (_diffusion("TCDScheduler", _ONLY_DEFAULT),),
        max_steps=50,
        note="for TCD-distilled models and LoRAs; at most its original 50 steps",
    ),
)

SAMPLERS: dict[str, Sampler] = {s.id: s for s in REGISTRY}
SAMPLER_IDS: tuple[str, ...] = tuple(SAMPLERS)
DEFAULT_SAMPLER = "euler_a"


def sampler(sampler_id: str) -> Sampler:
    """The registry entry of ``sampler_id``; ValueError naming the field when there is none."""
    try:
        return SAMPLERS[sampler_id]
    except KeyError:
        raise ValueError(f"scheduler: unknown sampler {sampler_id!r} (known: {', '.join(SAMPLER_IDS)})") from None


def fit_error(
    sampler_id: str,
    schedule: str,
    family: Family,
    *,
    img2img: bool = False,
    scheduler_config: Mapping[str, Any] | None = None,
    steps: int | None = None,
) -> str | None:
    """Why the sampler, schedule or step count does not fit (a message naming the field), or None
    when they do.

    ``scheduler_config`` is the model's own (``stepanim.families.model_scheduler_config``); without it
    the answer is the family's in general (FLUX.1-dev's, for Flux).
    """
    try:
        entry = sampler(sampler_id)
    except ValueError as e:  # an unknown sampler: its message
        return str(e)
    if schedule not in SCHEDULES:
        return f"schedule: unknown schedule {schedule!r} (known: {', '.join(SCHEDULES)})"
    fitting = fitting_samplers(family, img2img=img2img, scheduler_config=scheduler_config)
    kind = f"{family} image-to-image" if img2img else f"{family} models"
    variant = entry.variant(family)
    if sampler_id not in fitting:
        reason = ""
        if variant is not None and img2img and not variant.img2img:
            reason = f" ({variant.class_name} has no flow-matching scale_noise/custom sigmas for image-to-image)"
        elif variant is not None and variant.mu_needs_dynamic_shifting:
            reason = " (this model's scheduler has no dynamic shifting, as FLUX.1-schnell)"
        return f"scheduler: {sampler_id!r} does not fit {kind}{reason} (fits: {', '.join(fitting)})"
    schedules = fitting[sampler_id]
    if schedule not in schedules:
        applies = ", ".join(schedules)
        return f"schedule: {schedule!r} does not apply to {sampler_id!r} on {family} models (applies: {applies})"
    if steps is not None and entry.max_steps is not None and steps > entry.max_steps:
        return f"steps: {sampler_id!r} takes at most {entry.max_steps} steps (got {steps})"
    return None


def _fits(variant: Variant | None, family: Family, img2img: bool, scheduler_config: Mapping[str, Any] | None) -> bool:
    if variant is None or (img2img and not (variant.img2img and FACTS[family].img2img)):
        return False
    shifting = dynamic_shifting(scheduler_config)
    return not (variant.mu_needs_dynamic_shifting and FACTS[family].always_passes_mu and shifting is False)


def fitting_samplers(
    family: Family, *, img2img: bool = False, scheduler_config: Mapping[str, Any] | None = None
) -> dict[str, tuple[Schedule, ...]]:
    """The samplers that fit ``family`` (text-to-image, or image-to-image), each with its schedule types."""
    fitting: dict[str, tuple[Schedule, ...]] = {}
    for entry in REGISTRY:
        variant = entry.variant(family)
        if _fits(variant, family, img2img, scheduler_config):
            assert variant is not None
            fitting[entry.id] = variant.schedules
    return fitting


@dataclass(frozen=True)
class FamilyCapabilities:
    """What a request may ask of a model of ``family``: what the API checks before queueing a job."""

    family: Family
    size_multiple: int
    negative_prompt: bool
    img2img: bool
    default_sampler: str  # fits every model of the family, text-to-image and image-to-image
    samplers: dict[str, tuple[Schedule, ...]] = field(default_factory=dict)  # text-to-image
    img2img_samplers: dict[str, tuple[Schedule, ...]] = field(default_factory=dict)


def family_capabilities(family: Family, scheduler_config: Mapping[str, Any] | None = None) -> FamilyCapabilities:
    """Samplers and schedules that fit, size multiple, negative prompt and img2img for ``family``
    (for one model when its ``scheduler_config`` is given)."""
    facts = FACTS[family]
    return FamilyCapabilities(
        family=family,
        size_multiple=facts.size_multiple,
        negative_prompt=facts.negative_prompt,
        img2img=facts.img2img,
        default_sampler=facts.default_sampler,
        samplers=fitting_samplers(family, scheduler_config=scheduler_config),
        img2img_samplers=fitting_samplers(family, img2img=True, scheduler_config=scheduler_config)
        if facts.img2img
        else {},
    )


def schedule_overrides(variant: Variant, schedule: Schedule) -> dict[str, Any]:
    """The scheduler config overrides of ``schedule`` for ``variant`` (which must list it)."""
    if schedule not in variant.schedules:
        raise ValueError(f"schedule: {schedule!r} does not apply to {variant.class_name}")
    if schedule == "default":
        return {}
    takes_sigmas = "karras" in variant.schedules  # the class has the use_*_sigmas flags
    flow = variant.class_name.startswith("FlowMatch")  # flow-matching Euler: no timestep_spacing
    overrides: dict[str, Any] = dict.fromkeys(_SIGMA_FLAGS, False) if takes_sigmas else {}
    if schedule == "sgm_uniform":
        overrides["timestep_spacing"] = "trailing"
        return overrides
    overrides[f"use_{schedule}_sigmas"] = True
    if schedule in ("exponential", "beta") and not flow:
        overrides["timestep_spacing"] = "linspace"
    return overrides


# --- web-UI names -------------------------------------------------------------------------------


def _normalize(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


_SAMPLER_NAMES: dict[str, str] = {
    **{_normalize(s.id): s.id for s in REGISTRY},
    **{_normalize(s.label): s.id for s in REGISTRY},
}
_SCHEDULE_NAMES: dict[str, Schedule] = {
    **{_normalize(s): s for s in SCHEDULES},
    **{_normalize(label): s for s, label in SCHEDULE_LABELS.items()},
}


def parse_sampler_name(name: str) -> tuple[str, Schedule]:
    """``"DPM++ 2M Karras"`` -> ``("dpmpp_2m", "karras")``: a web-UI sampler name (or a sampler id),
    optionally followed by a schedule type, case-insensitive. ValueError for anything else."""
    text = _normalize(name)
    if text in _SAMPLER_NAMES:
        return _SAMPLER_NAMES[text], "default"
    for suffix, schedule in sorted(_SCHEDULE_NAMES.items(), key=lambda item: -len(item[0])):
        if text.endswith(" " + suffix) and text[: -len(suffix) - 1] in _SAMPLER_NAMES:
            return _SAMPLER_NAMES[text[: -len(suffix) - 1]], schedule
    labels = ", ".join(s.label for s in REGISTRY)
    raise ValueError(
        f"scheduler: unknown sampler name {name!r} (known: {labels}; optionally followed by "
        f"{', '.join(SCHEDULE_LABELS[s] for s in SCHEDULES if s != 'default')})"
    )


def describe() -> list[dict[str, Any]]:
    """The registry as JSON-able rows (for /capabilities and the docs): id, label, and per family the schedules."""
    return [
        {
            "id": s.id,
            "label": s.label,
            "seeding": s.seeding,
            "max_steps": s.max_steps,
            "families": {f: list(v.schedules) for f in FAMILIES if (v := s.variant(f)) is not None},
            "img2img_families": [f for f in FAMILIES if _fits(s.variant(f), f, True, None)],
        }
        for s in REGISTRY
    ]

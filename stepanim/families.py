"""Model families: which latent space a model samples in, and what a request may ask of it.

Pure (no torch, no diffusers): the API and the model catalog use it as well as the
render worker. A family is told by the pipeline class a model folder names in its
``model_index.json`` (``_class_name``), so a worker can publish it per model without
loading the model (:func:`model_family`).

==========  =======================================  =========  =====  ============
family      pipelines                                latents    size   negative
==========  =======================================  =========  =====  ============
``sd``      Stable Diffusion 1.x / 2.x               4 ch, 8x   8      yes
``sdxl``    Stable Diffusion XL                      4 ch, 8x   8      yes
``sd3``     Stable Diffusion 3 / 3.5                 16 ch, 8x  16     yes
``flux``    FLUX.1 dev / schnell                     16 ch, 8x  16     no
==========  =======================================  =========  =====  ============

SD3 and Flux are flow-matching models: their schedulers are the flow-matching ones
(``stepanim.samplers`` lists which fit). Flux packs its latents 2x2 into tokens, so its
sides are multiples of 16 like SD3's (whose transformer patches are 2x2 latents).
FLUX.1 has no negative prompt (dev's ``guidance_scale`` is distilled guidance, an input
of the model; schnell ignores it; FluxPipeline takes one only for its "true CFG" mode,
``true_cfg_scale > 1``, which the service does not use).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

Family = Literal["sd", "sdxl", "sd3", "flux"]
FAMILIES: tuple[Family, ...] = get_args(Family)


@dataclass(frozen=True)
class FamilyFacts:
    """What holds for every model of a family."""

    label: str
    latent_channels: int
    size_multiple: int  # width and height must be multiples of this
    negative_prompt: bool  # whether a negative prompt has any effect
    img2img: bool  # whether the family has an image-to-image pipeline
    flow: bool  # flow matching (x_t = (1 - sigma) x0 + sigma noise), else diffusion (epsilon / v)
    default_sampler: str  # a sampler id (stepanim.samplers) every model of the family takes
    # Whether the pipeline passes ``mu`` to set_timesteps whatever its scheduler's config says
    # (Flux does; SD3 only with dynamic shifting on): a scheduler that asserts dynamic shifting
    # when given mu then fails on a model without it (FLUX.1-schnell).
    always_passes_mu: bool = False


FACTS: dict[Family, FamilyFacts] = {
    "sd": FamilyFacts("Stable Diffusion 1.x/2.x", 4, 8, True, True, flow=False, default_sampler="euler_a"),
    "sdxl": FamilyFacts("Stable Diffusion XL", 4, 8, True, True, flow=False, default_sampler="euler_a"),
    "sd3": FamilyFacts("Stable Diffusion 3/3.5", 16, 16, True, True, flow=True, default_sampler="euler"),
    "flux": FamilyFacts("FLUX.1", 16, 16, False, True, flow=True, default_sampler="euler", always_passes_mu=True),
}

# Pipeline class name prefixes, most specific first ("StableDiffusionXL..." before "StableDiffusion...").
_CLASS_PREFIXES: tuple[tuple[str, Family], ...] = (
    ("StableDiffusion3", "sd3"),
    ("StableDiffusionXL", "sdxl"),
    ("Flux", "flux"),
    ("StableDiffusion", "sd"),
)


def family_of_class(class_name: str) -> Family:
    """The family of a diffusers pipeline class (``"FluxImg2ImgPipeline"`` -> ``"flux"``).

    Raises ValueError for a pipeline of no supported family.
    """
    for prefix, family in _CLASS_PREFIXES:
        if class_name.startswith(prefix):
            return family
    raise ValueError(f"{class_name}: not a supported model family (supported: {', '.join(FAMILIES)})")


def model_family(folder: Path) -> Family:
    """The family of the diffusers model saved in ``folder``, from its ``model_index.json``'s ``_class_name``.

    Raises ValueError when the folder holds no readable model index or names an unsupported pipeline.
    """
    index = Path(folder) / "model_index.json"
    try:
        class_name = json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"{index}: not a readable diffusers model index ({e})") from e
    if not isinstance(class_name, str):
        raise ValueError(f"{index}: no _class_name")
    return family_of_class(class_name)


def model_scheduler_config(folder: Path) -> dict[str, Any]:
    """The model's own scheduler config (``scheduler/scheduler_config.json``); empty when it has none."""
    path = Path(folder) / "scheduler" / "scheduler_config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def check_size(family: Family, *, width: int, height: int) -> None:
    """Raise ValueError naming the field when a side is not a multiple of the family's size multiple."""
    multiple = FACTS[family].size_multiple
    for name, value in (("width", width), ("height", height)):
        if value % multiple:
            raise ValueError(f"{name}: {FACTS[family].label} models need multiples of {multiple} (got {value})")


def dynamic_shifting(scheduler_config: Mapping[str, Any] | None) -> bool | None:
    """Whether a model's scheduler shifts its sigmas by image size (FLUX.1-dev yes, schnell no); None: unknown."""
    if scheduler_config is None:
        return None
    return bool(scheduler_config.get("use_dynamic_shifting", False))

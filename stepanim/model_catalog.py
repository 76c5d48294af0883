"""The models a render worker can load, what each accepts, and the request defaults each suggests.

A model is a folder in ``settings.models_dir`` holding a diffusers ``model_index.json``. Its
family (SD 1.x/2.x, SDXL, SD3, Flux) is read from the pipeline class the index names, without
loading the model (``stepanim.families``); from the family and the model's own scheduler
config follow the samplers and schedule types that fit it, the size multiple, and whether a
negative prompt and img2img apply (``stepanim.samplers``). A folder may also hold
``stepanim.json``::

    {"description": "...", "example_prompt": "a handwritten 7",
     "defaults": {"width": 32, "height": 32, "guidance_scale": 3, "capture": {"upscale": 4}},
     "vocabulary": ["a", "digit", "seven", ...], "vocabulary_hint": "digits 0-9"}

``defaults`` are request fields (as in POST /animations) that suit the model: the API applies
them to every field a request leaves out (:func:`with_defaults`), so the CLI, the Python
client, curl and the web page all get them. ``vocabulary`` lists the words a small model was
trained on: a prompt with others gets a warning on its job (:func:`vocabulary_warnings`).

Each render worker scans its folder and publishes the list in Redis, refreshed periodically
(``stepanim.published``); ``GET /capabilities`` lists it, and ``POST /animations`` refuses a
request that does not fit its model (:func:`misfits`) before anything is stored.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from stepanim.families import FACTS, Family, model_family, model_scheduler_config
from stepanim.request import AnimationCreate
from stepanim.samplers import fit_error, fitting_samplers

log = logging.getLogger(__name__)

MANIFEST = "stepanim.json"


class ModelInfo(BaseModel):
    name: str = Field(description="The name to give as `model` in POST /animations.", examples=["digits"])
    description: str = Field("", description="What the model draws.", examples=["32x32 digits"])
    example_prompt: str | None = Field(None, description="A prompt that shows what it can do.", examples=["a 7"])
    defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="Request fields that suit this model: the server fills in those a request leaves out.",
        examples=[{"width": 32, "height": 32, "guidance_scale": 3, "capture": {"upscale": 4}}],
    )
    family: Family | None = Field(
        None, description="sd (1.x/2.x), sdxl, sd3 or flux; null for a pipeline of no known family.", examples=["sd"]
    )
    size_multiple: int = Field(8, description="Width and height must be multiples of this.", examples=[8])
    negative_prompt: bool = Field(True, description="Whether a negative prompt applies to this model.", examples=[True])
    img2img: bool = Field(True, description="Whether this model can start from an init image.", examples=[True])
    default_sampler: str | None = Field(
        None, description="The sampler a request that names none gets.", examples=["euler_a"]
    )
    samplers: dict[str, list[str]] = Field(
        default_factory=dict,
        description="The samplers that fit this model (text-to-image), each with the schedule types that apply.",
        examples=[{"euler_a": ["default", "sgm_uniform"], "dpmpp_2m": ["default", "karras"]}],
    )
    img2img_samplers: dict[str, list[str]] = Field(
        default_factory=dict,
        description="The samplers that fit this model's image-to-image pipeline.",
        examples=[{"euler_a": ["default", "sgm_uniform"]}],
    )
    vocabulary: list[str] | None = Field(
        None,
        description="The words a small model was trained on (null: any prompt); others get a warning.",
        examples=[["a", "digit", "seven", "7"]],
    )
    vocabulary_hint: str | None = Field(
        None, description="What prompts the model understands, in words.", examples=["digits 0-9"]
    )


class _Manifest(BaseModel):
    """What a ``stepanim.json`` may say."""

    description: str = ""
    example_prompt: str | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)
    vocabulary: list[str] | None = None
    vocabulary_hint: str | None = None


def read_model(folder: Path) -> ModelInfo:
    """The model in ``folder``; its ``stepanim.json`` is ignored (with a warning) when it is not valid."""
    info: dict[str, Any] = {"name": folder.name}
    try:
        family = model_family(folder)
    except ValueError as e:
        log.warning("model %s: %s", folder.name, e)
    else:
        facts = FACTS[family]
        config = model_scheduler_config(folder)
        info.update(
            family=family,
            size_multiple=facts.size_multiple,
            negative_prompt=facts.negative_prompt,
            img2img=facts.img2img,
            default_sampler=facts.default_sampler,
            samplers={k: list(v) for k, v in fitting_samplers(family, scheduler_config=config).items()},
            img2img_samplers={
                k: list(v) for k, v in fitting_samplers(family, img2img=True, scheduler_config=config).items()
            }
            if facts.img2img
            else {},
        )
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            described = _Manifest.model_validate(json.loads(manifest.read_text()))
            # The defaults must make a valid request on their own (with any prompt).
            AnimationCreate.model_validate({"prompt": "x", **described.defaults})
        except (OSError, ValueError, ValidationError) as e:
            log.warning("ignoring %s: %s", manifest, e)
        else:
            info.update(described.model_dump())
    return ModelInfo.model_validate(info)


def scan(models_dir: Path) -> list[ModelInfo]:
    """Every model folder directly under ``models_dir``, by name."""
    if not models_dir.is_dir():
        return []
    folders = [p for p in models_dir.iterdir() if (p / "model_index.json").is_file()]
    return [read_model(p) for p in sorted(folders, key=lambda p: p.name)]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, nested objects merged field by field."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def with_defaults(body: AnimationCreate, info: ModelInfo | None) -> AnimationCreate:
    """``body`` with every field it left out taken from the model's ``defaults`` (nested objects
    field by field), and the model's default sampler when it named none; validated again (a
    ValidationError says what does not fit together)."""
    if info is None:
        return body
    given = body.model_dump(mode="json", exclude_unset=True)
    merged = _merge(info.defaults, given)
    if merged.get("scheduler") is None and info.default_sampler is not None:
        merged["scheduler"] = info.default_sampler
    return AnimationCreate.model_validate(merged)


def misfits(info: ModelInfo, body: AnimationCreate) -> list[tuple[str, str]]:
    """What in ``body`` does not fit the model, as (field, message) pairs; empty when it all fits."""
    found: list[tuple[str, str]] = []
    family = info.family
    if family is None:
        return found
    for name, value in (("width", body.width), ("height", body.height)):
        if value % info.size_multiple:
            found.append((name, f"{FACTS[family].label} models need multiples of {info.size_multiple} (got {value})"))
    if body.negative_prompt and not info.negative_prompt:
        found.append(("negative_prompt", f"{FACTS[family].label} models have no negative prompt; leave it empty"))
    img2img = body.init_image is not None
    if img2img and not info.img2img:
        found.append(("init_image", f"model {info.name!r} has no image-to-image pipeline"))
    elif body.scheduler is not None:
        fitting = info.img2img_samplers if img2img else info.samplers
        kind = "image-to-image" if img2img else "text-to-image"
        if body.scheduler not in fitting:
            fits = ", ".join(fitting)
            found.append(("scheduler", f"{body.scheduler!r} does not fit model {info.name!r} ({kind}; fits: {fits})"))
        elif body.schedule not in fitting[body.scheduler]:
            applies = ", ".join(fitting[body.scheduler])
            found.append(("schedule", f"{body.schedule!r} does not apply to {body.scheduler!r} (applies: {applies})"))
        elif (error := fit_error(body.scheduler, body.schedule, family, img2img=img2img, steps=body.steps)) is not None:
            field, _, message = error.partition(": ")  # LCM and TCD take at most 50 steps
            found.append((field, message))
    return found


_WORD = re.compile(r"[^\W\d_]+|\d+")


def vocabulary_warnings(info: ModelInfo | None, prompt: str) -> list[str]:
    """A warning when the prompt has words the model was not trained on (a small demo model draws
    what it knows whatever is asked: the client should know)."""
    if info is None or info.vocabulary is None:
        return []
    known = {word.lower() for word in info.vocabulary}
    unknown = sorted({word for word in (w.lower() for w in _WORD.findall(prompt)) if word not in known})
    if not unknown:
        return []
    hint = f" It draws {info.vocabulary_hint}." if info.vocabulary_hint else ""
    return [
        f"model {info.name!r} does not know the words {', '.join(repr(w) for w in unknown)}: "
        f"it draws only what it was trained on, so the result may not match the prompt.{hint}"
    ]

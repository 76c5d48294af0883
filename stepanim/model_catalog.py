"""The local models a render worker can load, with the request defaults each one suggests.

A model is a folder in ``settings.models_dir`` holding a diffusers ``model_index.json``.
It may also hold ``stepanim.json``::

    {"description": "...", "example_prompt": "a handwritten 7",
     "defaults": {"width": 32, "height": 32, "guidance_scale": 3, "capture": {"upscale": 4}}}

``defaults`` are request fields (as in POST /animations) that suit the model: a client
such as the web page fills them in when the model is chosen; the API does not apply
them on its own. The render worker scans its folder when it starts and publishes the
list in Redis, refreshed periodically (``stepanim.published``); ``GET /capabilities`` reads it from there,
as it does the encoder's capabilities, so the API needs no access to the models.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from stepanim.request import AnimationCreate

log = logging.getLogger(__name__)

MANIFEST = "stepanim.json"


class ModelInfo(BaseModel):
    name: str = Field(description="The name to give as `model` in POST /animations.", examples=["digits"])
    description: str = Field("", description="What the model draws.", examples=["32x32 digits"])
    example_prompt: str | None = Field(None, description="A prompt that shows what it can do.", examples=["a 7"])
    defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="Request fields that suit this model (a client fills them in; the server does not).",
        examples=[{"width": 32, "height": 32, "guidance_scale": 3, "capture": {"upscale": 4}}],
    )


def read_model(folder: Path) -> ModelInfo:
    """The model in ``folder``; its ``stepanim.json`` is ignored (with a warning) when it is not valid."""
    info = ModelInfo(name=folder.name)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return info
    try:
        raw = json.loads(manifest.read_text())
        described = ModelInfo.model_validate({**raw, "name": folder.name})
        # The defaults must make a valid request on their own (with any prompt).
        AnimationCreate.model_validate({"prompt": "x", **described.defaults})
    except (OSError, ValueError, ValidationError) as e:
        log.warning("ignoring %s: %s", manifest, e)
        return info
    return described


def scan(models_dir: Path) -> list[ModelInfo]:
    """Every model folder directly under ``models_dir``, by name."""
    if not models_dir.is_dir():
        return []
    folders = [p for p in models_dir.iterdir() if (p / "model_index.json").is_file()]
    return [read_model(p) for p in sorted(folders, key=lambda p: p.name)]

"""The model folder's ``stepanim.json``: request defaults, the vocabulary (so the API warns about
words the model never saw, without loading it) and a hint for GET /capabilities."""

from __future__ import annotations

import json
from pathlib import Path

from emoji.data import vocabulary


def manifest(names: list[str]) -> dict[str, object]:
    return {
        "description": (
            f"{len(names)} emoji drawn at 32x32, trained here on Google's Noto Color Emoji glyphs and their "
            "Unicode names (make model; font and model under the SIL Open Font License 1.1, see README.md in "
            "the folder). Ask for 'a rocket', 'a red apple', 'cat face', 'an apple, red'."
        ),
        "example_prompt": "a rocket",
        "defaults": {
            "width": 32,
            "height": 32,
            "steps": 30,
            "guidance_scale": 4,
            "capture": {"upscale": 4, "source": "noisy"},
        },
        "vocabulary": vocabulary(names),
        "vocabulary_hint": (
            f"{len(names)} emoji by their Unicode names in lower case (listed in emoji.json in the model "
            "folder), e.g. 'a rocket', 'cat face', 'slice of pizza'"
        ),
    }


def write_manifest(folder: Path, names: list[str]) -> Path:
    path = folder / "stepanim.json"
    path.write_text(json.dumps(manifest(names), indent=2) + "\n")
    return path

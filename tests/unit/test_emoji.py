"""The emoji model's data, wordings, vocabulary and training module (a few steps), and the
committed model's stepanim.json as the API reads it."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from emoji.data import (
    FAVOURITES,
    TEMPLATES,
    UNSEEN_TEMPLATES,
    catalogue,
    features,
    prompt_for,
    reordered,
    subset,
    to_uint8,
    vocabulary,
    words,
)
from emoji.evaluate import Judge, TrainingSet
from emoji.train import Plan, train
from scripts.devstack import ROOT
from stepanim.model_catalog import read_model, vocabulary_warnings
from tests.conftest import render_two_steps

MODEL = ROOT / "models" / "emoji"


def test_catalogue_holds_the_colour_glyphs_with_their_names() -> None:
    emoji, images = catalogue()
    assert 1100 <= len(emoji) <= 1400
    assert images.shape == (len(emoji), 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    by_name = {e.name: e.char for e in emoji}
    assert by_name["rocket"] == "\U0001f680" and by_name["red apple"] == "\U0001f34e"
    assert len(by_name) == len(emoji)  # one glyph per name
    corners = to_uint8(images)[:, 0, 0]
    assert (corners == 255).all()  # on white


def test_wordings() -> None:
    assert reordered("red apple") == "an apple, red"
    assert reordered("rocket") == "a rocket"
    assert not set(UNSEEN_TEMPLATES) & set(TEMPLATES)
    rng = random.Random(0)
    names = ["red apple", "cat face", "slice of pizza"]
    known = set(vocabulary(names))
    for templates in (TEMPLATES, UNSEEN_TEMPLATES):
        for name in names:
            prompt = prompt_for(name, rng, templates)
            assert set(name.split()) <= set(words(prompt)) <= known, prompt


def test_subset_is_deterministic_and_tells_its_emoji_apart() -> None:
    chosen = subset(300)
    assert chosen == subset(300) and len(chosen) == 300
    emoji, images = catalogue()
    names = {emoji[i].name for i in chosen}
    assert {"rocket", "red apple", "cat face", "slice of pizza"} <= names
    assert sum(f in names for f in FAVOURITES) >= len(FAVOURITES) - 3
    f = features(to_uint8(images[chosen]))
    dist = np.sqrt(((f[:, None] - f[None]) ** 2).sum(-1)) + np.eye(len(f)) * 1e9
    assert dist.min() >= 4.0


def test_every_training_glyph_is_its_own_nearest_neighbour() -> None:
    emoji, images = catalogue()
    chosen = subset(300)
    training = TrainingSet([emoji[i].char for i in chosen], [emoji[i].name for i in chosen], images[chosen])
    judge = Judge(training)
    labels = np.arange(len(chosen))
    assert (judge.ranks(to_uint8(training.images), labels) == 0).all()
    # Enlarged frames (capture upscale) are shrunk back before they are compared.
    big = torch.nn.functional.interpolate(training.images[:20], scale_factor=2, mode="nearest")
    assert (judge.ranks(to_uint8(big), labels[:20]) == 0).all()


def test_the_committed_model_publishes_its_vocabulary_and_defaults() -> None:
    info = read_model(MODEL)
    described = json.loads((MODEL / "emoji.json").read_text())
    assert info.family == "sd" and info.example_prompt == "a rocket"
    assert info.defaults["width"] == 32 and info.defaults["capture"]["upscale"] == 4
    assert info.vocabulary is not None and info.vocabulary_hint
    assert set(vocabulary(described["names"])) == set(info.vocabulary)
    assert vocabulary_warnings(info, "a rocket") == []
    assert vocabulary_warnings(info, "An apple, red") == []
    [warning] = vocabulary_warnings(info, "the bulldozer rocket")
    assert "'bulldozer'" in warning and "'rocket'" not in warning and info.vocabulary_hint in warning
    assert "Open Font License" in (MODEL / "README.md").read_text()
    assert "SIL OPEN FONT LICENSE Version 1.1" in (MODEL / "LICENSE").read_text()


@pytest.mark.slow
def test_quick_training_writes_a_loadable_pipeline_folder(tmp_path: Path) -> None:
    out = train(tmp_path / "emoji", Plan.quick(), seed=0)
    image = render_two_steps(out, "a rocket")
    assert image.shape == (32, 32, 3)
    described = json.loads((out / "emoji.json").read_text())
    assert len(described["names"]) == Plan.quick().classes
    info = read_model(out)
    assert info.vocabulary == vocabulary(described["names"])
    assert (out / "LICENSE").is_file() and "Open Font License" in (out / "README.md").read_text()

"""The digits training module runs end to end (a few steps) and writes a standard pipeline."""

from pathlib import Path

import numpy as np
import pytest
import torch

from digits.classifier import predict_proba, to_uint8
from digits.data import NAMES, TEMPLATES, UNSEEN_TEMPLATES, colourise, load, prompt_for
from digits.train import Plan, train
from tests.conftest import render_two_steps


def test_data_shapes_and_prompts() -> None:
    gray, labels = load()
    assert gray.shape == (1797, 1, 32, 32) and labels.shape == (1797,)
    rgb = colourise(gray[:4], torch.Generator().manual_seed(0))
    assert rgb.shape == (4, 3, 32, 32) and rgb.min() >= -1 and rgb.max() <= 1
    import random

    prompt = prompt_for(7, random.Random(0))
    assert "7" in prompt or NAMES[7] in prompt
    assert not set(UNSEEN_TEMPLATES) & set(TEMPLATES)


def test_classifier_reads_the_training_digits() -> None:
    gray, labels = load()
    images = to_uint8(colourise(gray[:300], torch.Generator().manual_seed(3)))
    accuracy = float(np.mean(predict_proba(images).argmax(axis=1) == labels[:300].numpy()))
    assert accuracy > 0.95


@pytest.mark.slow
def test_quick_training_writes_a_loadable_pipeline(tmp_path: Path) -> None:
    out = train(tmp_path / "digits", Plan.quick(), seed=0)
    image = render_two_steps(out, "the number three")
    assert image.shape == (32, 32, 3)
    assert sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) < 20 * 1024 * 1024

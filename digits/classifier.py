"""A digit classifier trained on the same data, to judge what the model drew.

It sees digits the way it will see frames: 32x32 colour images reduced by
:func:`digits.data.to_gray8`, so its features match the model's output domain.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from digits.data import colourise, load, to_gray8


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    return ((images.permute(0, 2, 3, 1) + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).numpy()


@cache
def classifier() -> Pipeline:
    gray, labels = load()
    rgb = colourise(gray, torch.Generator().manual_seed(1))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=0.5))
    model.fit(to_gray8(to_uint8(rgb)), labels.numpy())
    return model


def predict_proba(images: np.ndarray) -> np.ndarray:
    """RGB uint8 frames (N, H, W, 3) -> (N, 10) class probabilities."""
    probs: np.ndarray = classifier().predict_proba(to_gray8(images))
    return probs

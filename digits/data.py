"""The training data: scikit-learn's 1,797 8x8 digits, upscaled to 32x32 and coloured,
and prompts in several wordings. Pure functions over tensors."""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

SIZE = 32
NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Foreground colours (RGB in [0, 1]); the background is near black.
PALETTE = torch.tensor(
    [[1.0, 0.85, 0.3], [0.4, 0.8, 1.0], [1.0, 0.45, 0.45], [0.5, 1.0, 0.5], [0.95, 0.95, 0.95], [0.85, 0.5, 1.0]]
)
BACKGROUND = torch.tensor([0.06, 0.06, 0.1])

TEMPLATES = (
    "digit {d}",
    "the digit {d}",
    "the number {d}",
    "number {w}",
    "the number {w}",
    "a handwritten {d}",
    "a handwritten {w}",
    "{d}",
    "{w}",
    "a {w}",
    "draw a {d}",
    "the digit {w}",
)
# Held out of training, to check that the model generalises over wordings.
UNSEEN_TEMPLATES = ("a drawing of the number {w}", "handwritten digit {d}", "write {w}")


def load() -> tuple[torch.Tensor, torch.Tensor]:
    """Gray digits as (N, 1, 32, 32) floats in [0, 1], and their labels (N,)."""
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp(0, 1)
    return images, torch.tensor(data.target, dtype=torch.long)


def colourise(gray: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(N, 1, H, W) in [0, 1] -> (N, 3, H, W) in [-1, 1], each digit in a random palette colour."""
    index = torch.randint(len(PALETTE), (gray.shape[0],), generator=generator)
    fg = PALETTE[index][:, :, None, None]
    bg = BACKGROUND[None, :, None, None]
    return (gray * fg + (1 - gray) * bg) * 2 - 1


def prompt_for(label: int, rng: random.Random, templates: tuple[str, ...] = TEMPLATES) -> str:
    return rng.choice(templates).format(d=label, w=NAMES[label])


def to_gray8(images: np.ndarray) -> np.ndarray:
    """RGB uint8 frames (N, H, W, 3) -> load_digits-like features (N, 64) in [0, 16]."""
    gray = torch.tensor(images, dtype=torch.float32).mean(dim=-1, keepdim=False).unsqueeze(1) / 255.0
    lo = gray.amin(dim=(2, 3), keepdim=True)
    hi = gray.amax(dim=(2, 3), keepdim=True)
    gray = (gray - lo) / (hi - lo).clamp_min(1e-3)
    small = F.adaptive_avg_pool2d(gray, (8, 8))
    return (small.flatten(1) * 16).numpy()

"""How well a digits model draws what it is asked: ``python -m digits.evaluate MODEL_DIR``.

For each digit and wording, render the prompt and let the classifier read the result.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

from digits.classifier import predict_proba
from digits.data import TEMPLATES, UNSEEN_TEMPLATES, prompt_for


def render(pipe: Any, prompts: list[str], *, seed: int, guidance: float, steps: int) -> np.ndarray:
    out = pipe(
        prompts,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).images
    return (np.asarray(out) * 255).round().astype(np.uint8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--per-digit", type=int, default=3)
    args = parser.parse_args(argv)
    pipe: Any = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    rng = random.Random(0)
    for name, templates in (("seen", TEMPLATES), ("unseen", UNSEEN_TEMPLATES)):
        labels = [d for d in range(10) for _ in range(args.per_digit)]
        prompts = [prompt_for(d, rng, templates) for d in labels]
        images = render(pipe, prompts, seed=1, guidance=args.guidance, steps=args.steps)
        predicted = predict_proba(images).argmax(axis=1)
        accuracy = float(np.mean(predicted == np.array(labels)))
        print(f"{name} wordings: {accuracy:.0%} of {len(labels)} read as asked")


if __name__ == "__main__":
    main()

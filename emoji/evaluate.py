"""How well the emoji model draws what it is asked: ``python -m emoji.evaluate MODEL_DIR``.

Renders N random emoji of the model's training set (``emoji.json`` in the model folder), once
in wordings of the training data and once in wordings never seen in training, and scores each
image by nearest neighbour among all the training glyphs in :func:`emoji.data.features`
(16x16 RGB: the glyphs are drawn at one place and scale, so a small blur and pixel distance
tell them apart; every training glyph through the VAE and back is its own nearest neighbour,
see ``ceiling``): top-1 and top-5. Each step's noisy sample is decoded too (what the service
shows with ``capture.source = "noisy"``), so the report says how the score rises from the
first frames to the last.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

from emoji.data import TEMPLATES, UNSEEN_TEMPLATES, catalogue, features, prompt_for, to_uint8


@dataclass(frozen=True)
class TrainingSet:
    chars: list[str]
    names: list[str]
    images: torch.Tensor  # (N, 3, 32, 32) in [-1, 1]

    @classmethod
    def of(cls, model: Path) -> TrainingSet:
        described = json.loads((model / "emoji.json").read_text())
        emoji, images = catalogue()
        index = {e.char: i for i, e in enumerate(emoji)}
        chosen = [index[c] for c in described["emoji"]]
        return cls(described["emoji"], described["names"], images[chosen])


class Judge:
    """Nearest neighbour among the training glyphs."""

    def __init__(self, training: TrainingSet) -> None:
        self.reference = features(to_uint8(training.images))

    def ranks(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """RGB uint8 (N, 32, 32, 3) or larger (shrunk to 32x32) -> the rank (0 = nearest) of each label."""
        if images.shape[1] != 32:
            x = torch.tensor(images, dtype=torch.float32).permute(0, 3, 1, 2)
            x = torch.nn.functional.adaptive_avg_pool2d(x, 32)
            images = x.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()
        f = features(images)
        dist = ((f[:, None, :] - self.reference[None, :, :]) ** 2).sum(axis=-1)
        own = dist[np.arange(len(labels)), labels]
        return (dist < own[:, None]).sum(axis=1)  # type: ignore[no-any-return]


def load(model: Path) -> Any:
    pipe: Any = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render(pipe: Any, prompts: list[str], *, seed: int, guidance: float, steps: int) -> np.ndarray:
    """(steps, N, 32, 32, 3) uint8: each step's noisy sample, decoded; the last is the final image."""
    captured: list[torch.Tensor] = []

    def keep(p: Any, _i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        scheduler = p.scheduler
        sigma = float(scheduler.sigmas[min(scheduler.step_index, len(scheduler.sigmas) - 1)])
        captured.append(kwargs["latents"] / math.sqrt(sigma**2 + 1))
        return {}

    pipe(
        prompts,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
        callback_on_step_end=keep,
    )
    frames = []
    with torch.no_grad():
        for latents in captured:
            decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
            frames.append(to_uint8(decoded.clamp(-1, 1)))
    return np.stack(frames)


def evaluate(model: Path, *, count: int, guidance: float, steps: int, seed: int = 0) -> dict[str, Any]:
    pipe = load(model)
    training = TrainingSet.of(model)
    judge = Judge(training)
    rng = random.Random(seed)
    report: dict[str, Any] = {"emoji": len(training.names), "count": count, "guidance": guidance, "steps": steps}
    with torch.no_grad():
        latents = pipe.vae.encode(training.images).latent_dist.mean
        back = to_uint8(pipe.vae.decode(latents).sample.clamp(-1, 1))
    report["ceiling_top1"] = float(np.mean(judge.ranks(back, np.arange(len(back))) == 0))
    for kind, templates in (("seen", TEMPLATES), ("unseen", UNSEEN_TEMPLATES)):
        labels = np.array(rng.sample(range(len(training.names)), min(count, len(training.names))))
        prompts = [prompt_for(training.names[i], rng, templates) for i in labels]
        ranks = _ranks(pipe, judge, prompts, labels, guidance=guidance, steps=steps, seed=seed)
        report[kind] = {
            "top1": float(np.mean(ranks[-1] == 0)),
            "top5": float(np.mean(ranks[-1] < 5)),
            "by_frame": {
                f"{round(100 * f / (steps - 1))}%": {
                    "top1": float(np.mean(ranks[f] == 0)),
                    "top5": float(np.mean(ranks[f] < 5)),
                }
                for f in sorted({0, steps // 4, steps // 2, 3 * steps // 4, steps - 1})
            },
            "misses": [p for p, r in zip(prompts, ranks[-1], strict=True) if r >= 5][:10],
        }
    return report


def _ranks(
    pipe: Any, judge: Judge, prompts: list[str], labels: np.ndarray, *, guidance: float, steps: int, seed: int
) -> np.ndarray:
    """(steps, N): the rank of each asked-for glyph for each frame, rendered 50 prompts at a time."""
    parts = []
    for k in range(0, len(prompts), 50):
        frames = render(pipe, prompts[k : k + 50], seed=seed + k, guidance=guidance, steps=steps)
        parts.append(np.stack([judge.ranks(f, labels[k : k + 50]) for f in frames]))
    return np.concatenate(parts, axis=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("model", type=Path)
    parser.add_argument("--count", type=int, default=200, help="emoji per kind of wording")
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = evaluate(args.model, count=args.count, guidance=args.guidance, steps=args.steps)
    print(json.dumps(report, indent=1))
    print(f"{report['emoji']} emoji; VAE round trip read back as itself: {report['ceiling_top1']:.0%}")
    for kind in ("seen", "unseen"):
        r = report[kind]
        frames = ", ".join(f"{k} {v['top1']:.0%}/{v['top5']:.0%}" for k, v in r["by_frame"].items())
        print(f"{kind} wordings ({args.count}): top-1 {r['top1']:.0%}, top-5 {r['top5']:.0%}; by frame {frames}")


if __name__ == "__main__":
    main()

"""Train the digits model and save it as a standard diffusers pipeline folder.

    python -m digits.train OUT_DIR            # the committed model (about 15 minutes on 2 cores)
    python -m digits.train OUT_DIR --quick    # a smoke run of a few seconds

The recipe of ``training/recipe.py``, in three stages, all seeded: (1) a small AutoencoderKL
(32x32 RGB <-> 4x8x8 latents);
(2) a tiny CLIP text encoder pretrained to tell which digit a prompt names (a randomly
initialised encoder gives embeddings that differ more by wording than by digit, and
the UNet then ignores the prompt); (3) a ~6M-parameter UNet2DConditionModel trained
with the text encoder jointly, 10% empty prompts so classifier-free guidance works.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from digits.data import NAMES, colourise, load, prompt_for
from training import recipe
from worker.tiny_model import SD15_SCHEDULER_CONFIG

log = logging.getLogger(__name__)

SIZES = recipe.Sizes(max_tokens=16, hidden=64, unet_channels=(64, 128, 128), unet_groups=32)
WORDS = ("a", "the", "of", "digit", "number", "handwritten", "draw", "drawing", "write", *NAMES)


@dataclass(frozen=True)
class Plan:
    vae_steps: int = 600
    vae_batch: int = 32
    text_steps: int = 200
    text_batch: int = 64
    unet_steps: int = 1200
    unet_batch: int = 64
    colourings: int = 4  # latents precomputed per digit image

    @classmethod
    def quick(cls) -> Plan:
        return cls(vae_steps=3, vae_batch=8, text_steps=3, text_batch=8, unet_steps=3, unet_batch=8, colourings=1)


def train(out: Path, plan: Plan, *, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    gray, labels = load()
    started = time.perf_counter()

    how = recipe.VaeTraining(
        steps=plan.vae_steps,
        batch=plan.vae_batch,
        lr=1e-3,
        batch_of=lambda idx: colourise(gray[idx], gen),
        loss=F.mse_loss,
    )
    vae = recipe.train_vae(len(gray), how, gen)
    with torch.no_grad():
        x = torch.cat([colourise(gray, gen) for _ in range(plan.colourings)])
        y = labels.repeat(plan.colourings)
        latents = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in x.split(256)])
    scaling = float(1 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    latents = latents * scaling
    log.info("vae done in %.0fs, scaling_factor %.4f", time.perf_counter() - started, scaling)

    tokenizer = recipe.make_tokenizer(WORDS, SIZES)
    text_encoder = recipe.make_text_encoder(tokenizer, SIZES)
    recipe.pretrain_text(
        text_encoder,
        tokenizer,
        classes=10,
        prompt_for=prompt_for,
        steps=plan.text_steps,
        batch=plan.text_batch,
        lr=1e-3,
        rng=rng,
    )

    unet = recipe.make_unet(SIZES)
    ema = recipe.make_unet(SIZES)
    ema.load_state_dict(unet.state_dict())
    noise_scheduler = DDPMScheduler.from_config(SD15_SCHEDULER_CONFIG)  # type: ignore[no-untyped-call]
    params = [*unet.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=1e-2)
    lr = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-4, total_steps=plan.unet_steps, pct_start=0.05)
    for step in range(plan.unet_steps):
        idx = torch.randint(len(latents), (plan.unet_batch,), generator=gen)
        prompts = [prompt_for(int(y[i]), rng) if rng.random() > 0.1 else "" for i in idx]
        loss = recipe.denoising_loss(unet, text_encoder, tokenizer, noise_scheduler, latents[idx], prompts, gen)
        recipe.unet_step(opt, lr, params, loss, ema=ema, unet=unet, step=step)
        if step % 100 == 0:
            log.info("unet %d/%d loss %.4f (%.0fs)", step, plan.unet_steps, loss.item(), time.perf_counter() - started)

    recipe.save_pipeline(out, vae=vae, text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=ema.eval())
    log.info("saved %s after %.0fs", out, time.perf_counter() - started)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--quick", action="store_true", help="a few steps of each stage (smoke test)")
    parser.add_argument("--unet-steps", type=int, help="override the UNet training steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    plan = Plan.quick() if args.quick else Plan()
    if args.unet_steps:
        plan = Plan(**{**plan.__dict__, "unet_steps": args.unet_steps})
    print(train(args.out_dir, plan, seed=args.seed))


if __name__ == "__main__":
    main()

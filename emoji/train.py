"""Train the emoji model and save it as a standard diffusers pipeline folder.

    python -m emoji.train OUT_DIR            # the committed model, byte for byte (13 minutes on 2 quiet cores)
    python -m emoji.train OUT_DIR --quick    # a smoke run of a few seconds

The recipe of ``training/recipe.py`` (as ``digits/train.py``) on Noto Color Emoji glyphs, all seeded: (1) a small
AutoencoderKL (32x32 RGB <-> 4x8x8 latents); (2) a tiny CLIP text encoder pretrained to tell
which emoji a prompt names; (3) a ~3.5M-parameter UNet2DConditionModel trained with the text
encoder jointly on precomputed latents, min-SNR loss weighting, 10% empty prompts for
classifier-free guidance. Uses a CUDA GPU when there is one (the committed model: CPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from emoji.data import FILLERS, catalogue, prompt_for, subset, vocabulary
from emoji.manifest import write_manifest
from training import recipe
from worker.tiny_model import SD15_SCHEDULER_CONFIG

log = logging.getLogger(__name__)

SIZES = recipe.Sizes(max_tokens=32, hidden=128, unet_channels=(48, 96, 96), unet_groups=16)


@dataclass(frozen=True)
class Plan:
    classes: int = 400  # emoji drawn (emoji.data.subset)
    vae_steps: int = 1500
    vae_batch: int = 32
    text_steps: int = 600
    text_batch: int = 128
    unet_steps: int = 1000
    unet_batch: int = 64

    @classmethod
    def quick(cls) -> Plan:
        return cls(classes=20, vae_steps=3, vae_batch=8, text_steps=3, text_batch=8, unet_steps=3, unet_batch=8)


def vae_loss(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # The blurred term weighs colour: with plain MSE a short run learns shapes in washed-out browns.
    blurred = F.mse_loss(F.avg_pool2d(recon, 4), F.avg_pool2d(x, 4))
    return F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x) + 2 * blurred


def train(out: Path, plan: Plan, *, seed: int = 0, checkpoints: int = 0) -> Path:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    emoji, all_images = catalogue()
    chosen = subset(plan.classes)
    names = [emoji[i].name for i in chosen]
    images = all_images[chosen]
    log.info("%d emoji of %d, on %s", len(chosen), len(emoji), device)
    started = time.perf_counter()

    how = recipe.VaeTraining(
        steps=plan.vae_steps,
        batch=plan.vae_batch,
        lr=2e-3,
        batch_of=lambda idx: images[idx].to(device),
        loss=vae_loss,
    )
    vae = recipe.train_vae(len(images), how, gen, device)
    with torch.no_grad():
        posterior = vae.encode(images.to(device)).latent_dist
        mean, std = posterior.mean.cpu(), posterior.std.cpu()
    scaling = float(1 / mean.std())
    vae.register_to_config(scaling_factor=scaling)
    mean, std = mean * scaling, std * scaling
    log.info("vae done in %.0fs, scaling_factor %.4f", time.perf_counter() - started, scaling)

    tokenizer = recipe.make_tokenizer((*FILLERS, *vocabulary(names)), SIZES)
    text_encoder = recipe.make_text_encoder(tokenizer, SIZES)
    text_encoder.to(device)  # type: ignore[arg-type]
    recipe.pretrain_text(
        text_encoder,
        tokenizer,
        classes=len(names),
        prompt_for=lambda y, r: prompt_for(names[y], r),
        steps=plan.text_steps,
        batch=plan.text_batch,
        lr=2e-3,
        rng=rng,
        device=device,
    )
    log.info("text encoder done after %.0fs", time.perf_counter() - started)

    unet = recipe.make_unet(SIZES).to(device)
    ema = recipe.make_unet(SIZES).to(device)
    ema.load_state_dict(unet.state_dict())
    noise_scheduler = DDPMScheduler.from_config(SD15_SCHEDULER_CONFIG)  # type: ignore[no-untyped-call]
    alphas = noise_scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    weights = (snr.clamp(max=5.0) / snr).to(device)  # min-SNR-5 for epsilon prediction
    params = [*unet.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)
    # Warm-up, then a constant rate (the EMA smooths): a checkpoint after k steps is the model of a k-step plan.
    lr = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 100))
    for step in range(plan.unet_steps):
        idx = torch.randint(len(mean), (plan.unet_batch,), generator=gen)
        prompts = [prompt_for(names[i], rng) if rng.random() > 0.1 else "" for i in idx]
        z0 = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)
        loss = recipe.denoising_loss(
            unet, text_encoder, tokenizer, noise_scheduler, z0, prompts, gen, weights=weights, device=device
        )
        recipe.unet_step(opt, lr, params, loss, ema=ema, unet=unet, step=step)
        if step % 50 == 0:
            log.info("unet %d/%d loss %.4f (%.0fs)", step, plan.unet_steps, loss.item(), time.perf_counter() - started)
        if checkpoints and (step + 1) % checkpoints == 0 and step + 1 < plan.unet_steps:
            save(
                out.with_name(f"{out.name}-step{step + 1}"),
                vae,
                text_encoder,
                tokenizer,
                ema,
                chosen,
                names,
                replace(plan, unet_steps=step + 1),
                seed,
            )
    save(out, vae, text_encoder, tokenizer, ema, chosen, names, plan, seed)
    log.info("saved %s after %.0fs", out, time.perf_counter() - started)
    return out


def save(
    out: Path,
    vae: Any,
    text_encoder: Any,
    tokenizer: Any,
    unet: Any,
    chosen: list[int],
    names: list[str],
    plan: Plan,
    seed: int,
) -> None:
    """The pipeline in fp16, what it was trained on (emoji.json) and its stepanim.json."""
    import copy

    emoji, _ = catalogue()
    vae, text_encoder, unet = (copy.deepcopy(m).cpu().eval() for m in (vae, text_encoder, unet))

    recipe.save_pipeline(out, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet)
    (out / "emoji.json").write_text(
        json.dumps({"seed": seed, "plan": plan.__dict__, "emoji": [emoji[i].char for i in chosen], "names": names})
        + "\n"
    )
    write_manifest(out, names)
    card = Path(__file__).with_name("model_card")
    (out / "README.md").write_text((card / "README.md").read_text().replace("SUBSET_COUNT", str(len(names))))
    (out / "LICENSE").write_text((card / "LICENSE").read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--quick", action="store_true", help="a few steps of each stage (smoke test)")
    parser.add_argument("--unet-steps", type=int, help="override the UNet training steps")
    parser.add_argument("--classes", type=int, help="override the number of emoji")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoints", type=int, default=0, help="also save OUT_DIR-stepK every K UNet steps")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    plan = Plan.quick() if args.quick else Plan()
    if args.unet_steps:
        plan = replace(plan, unet_steps=args.unet_steps)
    if args.classes:
        plan = replace(plan, classes=args.classes)
    print(train(args.out_dir, plan, seed=args.seed, checkpoints=args.checkpoints))


if __name__ == "__main__":
    main()

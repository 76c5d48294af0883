"""Train the digits model and save it as a standard diffusers pipeline folder.

    python -m digits.train OUT_DIR            # the committed model (about 15 minutes on 2 cores)
    python -m digits.train OUT_DIR --quick    # a smoke run of a few seconds

Three stages, all seeded: (1) a small AutoencoderKL (32x32 RGB <-> 4x8x8 latents);
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
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from digits.data import NAMES, colourise, load, prompt_for
from worker.tiny_model import BOS, EOS, SD15_SCHEDULER_CONFIG, tiny_vocab

log = logging.getLogger(__name__)

MAX_TOKENS = 16
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


def make_tokenizer() -> CLIPTokenizer:
    vocab, merges = tiny_vocab(WORDS)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)  # type: ignore[arg-type]


def token_id(tokenizer: CLIPTokenizer, token: str) -> int:
    value = tokenizer.convert_tokens_to_ids(token)
    assert isinstance(value, int)
    return value


def make_text_encoder(vocab_size: int, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            projection_dim=64,
            bos_token_id=token_id(tokenizer, BOS),
            eos_token_id=token_id(tokenizer, EOS),
            pad_token_id=token_id(tokenizer, EOS),
        )
    )


def make_vae() -> Any:
    return AutoencoderKL(  # type: ignore[no-untyped-call]
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        sample_size=32,
        block_out_channels=(16, 32, 64),  # two 2x downsamples: 32x32 -> 8x8 latents
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1,
        norm_num_groups=8,
    )


def make_unet() -> Any:
    return UNet2DConditionModel(  # type: ignore[no-untyped-call]
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def tokenize(tokenizer: CLIPTokenizer, prompts: list[str]) -> torch.Tensor:
    ids: torch.Tensor = tokenizer(
        prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
    ).input_ids
    return ids


def train_vae(images: torch.Tensor, plan: Plan, gen: torch.Generator) -> Any:
    vae = make_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, plan.vae_steps)
    for step in range(plan.vae_steps):
        idx = torch.randint(len(images), (plan.vae_batch,), generator=gen)
        x = colourise(images[idx], gen)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        loss = F.mse_loss(recon, x) + 1e-6 * posterior.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            log.info("vae %d/%d loss %.4f", step, plan.vae_steps, loss.item())
    return vae.eval()


def pretrain_text(text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, plan: Plan, rng: random.Random) -> None:
    """Teach the encoder which digit a prompt names (class 10: the empty prompt)."""
    head = torch.nn.Linear(64, 11)
    opt = torch.optim.AdamW([*text_encoder.parameters(), *head.parameters()], lr=1e-3)
    for step in range(plan.text_steps):
        labels = [rng.randrange(11) for _ in range(plan.text_batch)]
        prompts = ["" if y == 10 else prompt_for(y, rng) for y in labels]
        hidden = text_encoder(tokenize(tokenizer, prompts)).last_hidden_state.mean(dim=1)
        loss = F.cross_entropy(head(hidden), torch.tensor(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            log.info("text %d/%d loss %.4f", step, plan.text_steps, loss.item())


def train(out: Path, plan: Plan, *, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    gray, labels = load()
    started = time.perf_counter()

    vae = train_vae(gray, plan, gen)
    with torch.no_grad():
        x = torch.cat([colourise(gray, gen) for _ in range(plan.colourings)])
        y = labels.repeat(plan.colourings)
        latents = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in x.split(256)])
    scaling = float(1 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    latents = latents * scaling
    log.info("vae done in %.0fs, scaling_factor %.4f", time.perf_counter() - started, scaling)

    tokenizer = make_tokenizer()
    text_encoder = make_text_encoder(len(tokenizer), tokenizer)
    pretrain_text(text_encoder, tokenizer, plan, rng)

    unet = make_unet()
    ema = make_unet()
    ema.load_state_dict(unet.state_dict())
    noise_scheduler = DDPMScheduler.from_config(SD15_SCHEDULER_CONFIG)  # type: ignore[no-untyped-call]
    params = [*unet.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=1e-2)
    lr = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-4, total_steps=plan.unet_steps, pct_start=0.05)
    for step in range(plan.unet_steps):
        idx = torch.randint(len(latents), (plan.unet_batch,), generator=gen)
        prompts = [prompt_for(int(y[i]), rng) if rng.random() > 0.1 else "" for i in idx]
        z0 = latents[idx]
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, 1000, (plan.unet_batch,), generator=gen)
        zt = noise_scheduler.add_noise(z0, noise, t)
        cond = text_encoder(tokenize(tokenizer, prompts)).last_hidden_state
        loss = F.mse_loss(unet(zt, t, encoder_hidden_states=cond).sample, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lr.step()
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), unet.parameters(), strict=True):
                e.mul_(decay).add_(p, alpha=1 - decay)
        if step % 100 == 0:
            log.info("unet %d/%d loss %.4f (%.0fs)", step, plan.unet_steps, loss.item(), time.perf_counter() - started)

    pipe: Any = StableDiffusionPipeline(  # type: ignore[no-untyped-call]
        vae=vae,
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=ema.eval(),
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG),  # type: ignore[no-untyped-call]
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(torch.float16)
    pipe.save_pretrained(out, safe_serialization=True)  # type: ignore[attr-defined]
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

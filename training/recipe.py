"""The parts of a tiny Stable-Diffusion-shaped model that ``digits`` and ``emoji`` train alike.

A small AutoencoderKL (32x32 RGB <-> 4x8x8 latents), a tiny CLIP text encoder pretrained to tell
which class a prompt names, a UNet2DConditionModel trained with the text encoder jointly and kept
as an exponential moving average, saved as a standard fp16 ``StableDiffusionPipeline`` folder.
Each model's ``train.py`` keeps what is its own: the data, the VAE loss, the latents it samples,
the learning-rate schedule and the loss weighting.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from worker.tiny_model import BOS, EOS, SD15_SCHEDULER_CONFIG, tiny_vocab

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sizes:
    """How big a model's text encoder and UNet are (the VAE is the same for both models)."""

    max_tokens: int
    hidden: int  # text encoder width = the UNet's cross-attention width
    unet_channels: tuple[int, int, int]
    unet_groups: int


def make_tokenizer(words: tuple[str, ...], sizes: Sizes) -> CLIPTokenizer:
    vocab, merges = tiny_vocab(words)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=sizes.max_tokens)  # type: ignore[arg-type]


def token_id(tokenizer: CLIPTokenizer, token: str) -> int:
    value = tokenizer.convert_tokens_to_ids(token)
    assert isinstance(value, int)
    return value


def make_text_encoder(tokenizer: CLIPTokenizer, sizes: Sizes) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=sizes.hidden,
            intermediate_size=2 * sizes.hidden,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=sizes.max_tokens,
            projection_dim=sizes.hidden,
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


def make_unet(sizes: Sizes) -> Any:
    return UNet2DConditionModel(  # type: ignore[no-untyped-call]
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=sizes.unet_channels,
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=sizes.hidden,
        attention_head_dim=8,
        norm_num_groups=sizes.unet_groups,
    )


def tokenize(tokenizer: CLIPTokenizer, prompts: list[str], device: str = "cpu") -> torch.Tensor:
    ids: torch.Tensor = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return ids.to(device)


@dataclass(frozen=True)
class VaeTraining:
    steps: int
    batch: int
    lr: float
    batch_of: Callable[[torch.Tensor], torch.Tensor]  # indices -> images in [-1, 1] on the device
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (reconstruction, images) -> loss


def train_vae(count: int, how: VaeTraining, gen: torch.Generator, device: str = "cpu") -> Any:
    """A VAE over ``count`` training images, sampled ``how.batch`` at a time by ``how.batch_of``."""
    vae = make_vae().to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=how.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, how.steps)
    for step in range(how.steps):
        x = how.batch_of(torch.randint(count, (how.batch,), generator=gen))
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen).to(device)
        loss = how.loss(vae.decode(z).sample, x) + 1e-6 * posterior.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            log.info("vae %d/%d loss %.4f", step, how.steps, loss.item())
    return vae.eval()


def pretrain_text(
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    *,
    classes: int,
    prompt_for: Callable[[int, random.Random], str],
    steps: int,
    batch: int,
    lr: float,
    rng: random.Random,
    device: str = "cpu",
) -> None:
    """Teach the encoder which of ``classes`` a prompt names (one more class: the empty prompt)."""
    head = torch.nn.Linear(text_encoder.config.hidden_size, classes + 1).to(device)
    opt = torch.optim.AdamW([*text_encoder.parameters(), *head.parameters()], lr=lr)
    for step in range(steps):
        labels = [rng.randrange(classes + 1) for _ in range(batch)]
        prompts = ["" if y == classes else prompt_for(y, rng) for y in labels]
        hidden = text_encoder(tokenize(tokenizer, prompts, device)).last_hidden_state.mean(dim=1)
        loss = F.cross_entropy(head(hidden), torch.tensor(labels, device=device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            log.info("text %d/%d loss %.4f", step, steps, loss.item())


def denoising_loss(
    unet: Any,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    scheduler: Any,
    z0: torch.Tensor,
    prompts: list[str],
    gen: torch.Generator,
    *,
    weights: torch.Tensor | None = None,
    device: str = "cpu",
) -> torch.Tensor:
    """The epsilon-prediction loss of one batch of clean latents noised to random timesteps.

    ``weights`` (one per timestep, e.g. min-SNR) weigh each sample's error; without them, plain MSE.
    """
    noise = torch.randn(z0.shape, generator=gen)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(z0),), generator=gen)
    zt = scheduler.add_noise(z0, noise, t).to(device)
    cond = text_encoder(tokenize(tokenizer, prompts, device)).last_hidden_state
    pred: torch.Tensor = unet(zt, t.to(device), encoder_hidden_states=cond).sample
    if weights is None:
        return F.mse_loss(pred, noise.to(device))
    return (weights[t.to(device)] * (pred - noise.to(device)).pow(2).mean(dim=(1, 2, 3))).mean()


def unet_step(
    opt: Any, schedule: Any, params: list[Any], loss: torch.Tensor, *, ema: Any, unet: Any, step: int
) -> None:
    """One optimiser step of the UNet (and the text encoder trained with it), then its average."""
    opt.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    schedule.step()
    update_ema(ema, unet, step)


def update_ema(ema: Any, model: Any, step: int) -> None:
    """One step of the exponential moving average the saved UNet is (warming up to 0.999)."""
    with torch.no_grad():
        decay = min(0.999, (1 + step) / (10 + step))
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.mul_(decay).add_(p, alpha=1 - decay)


def save_pipeline(out: Path, *, vae: Any, text_encoder: Any, tokenizer: CLIPTokenizer, unet: Any) -> None:
    """The four parts as a standard Stable Diffusion pipeline folder in fp16 (PNDM, as SD 1.5 ships)."""
    pipe: Any = StableDiffusionPipeline(  # type: ignore[no-untyped-call]
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG),  # type: ignore[no-untyped-call]
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(torch.float16)
    pipe.save_pretrained(out, safe_serialization=True)  # type: ignore[attr-defined]

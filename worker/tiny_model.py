"""A tiny random-weight Stable Diffusion pipeline for tests and local development.

It has the real SD 1.x layout (4 latent channels, 8x VAE downsampling, CLIP text
encoder and tokenizer, an SD 1.5 scheduler config) so code written against
``StableDiffusionPipeline`` runs unchanged, just in about a second on a CPU.
The images it makes are noise.

    python -m worker.tiny_model OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MAX_LENGTH = 77

# Words that get whole-word tokens; anything else falls back to byte-level tokens.
WORDS = (
    *("a", "an", "the", "of", "in", "on", "with", "and", "photo", "painting", "portrait", "art", "style"),
    *("cat", "dog", "city", "sky", "sunset", "forest", "mountain", "red", "blue", "green", "light", "dark"),
)

# Stable Diffusion 1.5's scheduler config; clip_sample is unused by PNDM but read by
# DDIM/DDPM when a scheduler is made with from_config(pipe.scheduler.config).
SD15_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "skip_prk_steps": True,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "clip_sample": False,
}


def _byte_chars() -> list[str]:
    """The 256 printable characters CLIP's byte-level BPE uses for raw bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def tiny_vocab(words: tuple[str, ...] = WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style BPE vocabulary and merge list: every byte, a few words, and the special tokens.

    Every byte has a token (alone and word-final), so any text, including emoji and
    unknown words, tokenizes without needing the unknown token.
    """
    bytes_ = _byte_chars()
    tokens = [*bytes_, *(c + "</w>" for c in bytes_)]
    merges: list[tuple[str, str]] = []
    for word in words:
        symbols = [*word[:-1], word[-1] + "</w>"]
        while len(symbols) > 1:
            merge = (symbols[0], symbols[1])
            merged = symbols[0] + symbols[1]
            if merge not in merges:
                merges.append(merge)
                tokens.append(merged)
            symbols = [merged, *symbols[2:]]
    tokens += [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, merges


# What the SD 1.x and SDXL tiny UNets share: 8x8 latents (the pipelines' default size is 64x64).
_UNET = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
}


def _tokenizer_and_text_config() -> tuple[CLIPTokenizer, CLIPTextConfig]:
    vocab, merges = tiny_vocab()
    # The tokenizers backend wants merges as pairs, despite the str annotation.
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH)  # type: ignore[arg-type]
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        projection_dim=32,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[EOS],
    )
    return tokenizer, config


def _vae(**extra: Any) -> AutoencoderKL:
    return AutoencoderKL(  # type: ignore[no-untyped-call]
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        sample_size=64,
        block_out_channels=(16, 16, 32, 32),  # four blocks: three 2x downsamples = 8x, as in SD
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        **extra,
    )


def build_pipeline(*, seed: int = 0) -> StableDiffusionPipeline:
    """Build the tiny pipeline in memory with weights drawn from a fixed seed."""
    tokenizer, text_config = _tokenizer_and_text_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(text_config)
        unet = UNet2DConditionModel(**_UNET, cross_attention_dim=32, attention_head_dim=4)  # type: ignore[no-untyped-call]
        vae = _vae()
    scheduler = PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG)  # type: ignore[no-untyped-call]
    return StableDiffusionPipeline(  # type: ignore[no-untyped-call]
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_sdxl_pipeline(*, seed: int = 0) -> StableDiffusionXLPipeline:
    """A tiny random-weight SDXL pipeline: two text encoders (the second with a projection),
    a UNet with SDXL's "text_time" added conditioning, an 8x VAE with SDXL's scaling factor."""
    tokenizer, text_config = _tokenizer_and_text_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(text_config)
        text_encoder_2 = CLIPTextModelWithProjection(text_config)
        unet = UNet2DConditionModel(  # type: ignore[no-untyped-call]
            **_UNET,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=6 * 8 + 32,  # six time ids x 8, and the pooled text embedding
            cross_attention_dim=64,  # the two encoders' hidden states side by side
        )
        vae = _vae(scaling_factor=0.13025)
    scheduler = EulerDiscreteScheduler(  # type: ignore[no-untyped-call]
        **{
            k: v
            for k, v in SD15_SCHEDULER_CONFIG.items()
            if k not in ("skip_prk_steps", "set_alpha_to_one", "clip_sample")
        }
    )
    return StableDiffusionXLPipeline(  # type: ignore[no-untyped-call]
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )


def is_complete(path: Path) -> bool:
    """Whether ``path`` holds a saved pipeline: ``model_index.json`` and every component folder."""
    index = path / "model_index.json"
    if not index.is_file():
        return False
    components = json.loads(index.read_text())
    return all(
        (path / name).is_dir()
        for name, value in components.items()
        if not name.startswith("_") and isinstance(value, list) and value[0] is not None
    )


def build_tiny_model(path: Path, *, seed: int = 0, sdxl: bool = False) -> Path:
    """Write the tiny pipeline (SD 1.x, or SDXL when ``sdxl``) to ``path`` (unless one is already there)
    and return ``path``.

    The model is saved into a temporary folder beside ``path`` and renamed into place,
    so readers never see a half-written model and concurrent builders are safe.
    """
    path = Path(path)
    if is_complete(path):
        return path
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} exists and is not a complete model")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        pipe: Any = build_sdxl_pipeline(seed=seed) if sdxl else build_pipeline(seed=seed)
        pipe.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private
        os.replace(tmp, path)  # replaces a missing or empty folder; fails if another builder won
    except OSError:
        if not is_complete(path):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def build_taesd(*, seed: int = 0) -> AutoencoderTiny:
    """A tiny random-weight TAESD (``AutoencoderTiny``): 4 latent channels, 8x upsampling, like madebyollin/taesd."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderTiny(  # type: ignore[no-untyped-call]
            encoder_block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            num_encoder_blocks=(1, 1, 1, 1),
            num_decoder_blocks=(1, 1, 1, 1),
            latent_channels=4,
        )


def build_tiny_taesd(path: Path, *, seed: int = 0) -> Path:
    """Write the tiny TAESD to ``path`` (a folder ``AutoencoderTiny.from_pretrained`` reads) and return it."""
    path = Path(path)
    if not (path / "config.json").is_file():
        build_taesd(seed=seed).save_pretrained(path)  # type: ignore[attr-defined]  # mypy sees a stub class
    return path


def main(argv: list[str] | None = None) -> None:
    """CLI: build the tiny model into OUT_DIR and print its path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out_dir", type=Path, help="folder to write the model to")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    args = parser.parse_args(argv)
    print(build_tiny_model(args.out_dir, seed=args.seed))


if __name__ == "__main__":
    main()

"""Tiny random-weight pipelines of every supported family, for tests and local development.

Each has its family's real layout, so code written against the real pipeline runs
unchanged, just in about a second on a CPU (20 steps at 64x64); the images are noise:

- ``sd``: SD 1.x (4 latent channels, 8x VAE, CLIP text encoder, SD 1.5's scheduler config);
- ``sdxl``: two CLIP encoders, SDXL's "text_time" conditioning and VAE scaling factor;
- ``sd3``: an MMDiT transformer (2x2 patches), two CLIP encoders with projections and a T5
  encoder, a 16-channel VAE with SD3's scaling and shift factors, flow matching with shift 3;
- ``flux``: a Flux transformer over 2x2-packed latents with guidance embedding (FLUX.1-dev;
  ``schnell=True``: none, and no dynamic shifting), CLIP and T5 encoders, Flux's VAE factors.

Tokenizers are built in memory (a CLIP BPE and a T5 Unigram vocabulary), so nothing is
downloaded. ``build_tiny_taesd`` writes matching tiny TAESD / TAESDXL / TAESD3 / TAEF1 decoders;
``build_tiny_lora`` and ``build_tiny_embedding`` random LoRAs and textual-inversion embeddings
that fit the tiny models, saved as a trainer would save them (``stepanim.adapters``).

    python -m worker.tiny_model OUT_DIR [--family sd|sdxl|sd3|flux] [--schnell]
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
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    PNDMScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from stepanim.families import Family

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


# The VAE factors of the real models: latents the sampler sees = (VAE latents - shift) * scaling.
SD3_VAE = {"scaling_factor": 1.5305, "shift_factor": 0.0609}
FLUX_VAE = {"scaling_factor": 0.3611, "shift_factor": 0.1159}
# Scheduler configs of stabilityai/stable-diffusion-3(.5) and black-forest-labs/FLUX.1-dev / -schnell.
SD3_SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 3.0}
FLUX_DEV_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}
FLUX_SCHNELL_SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 1.0}
T5_MAX_LENGTH = 512


def t5_tokenizer(words: tuple[str, ...] = WORDS) -> T5Tokenizer:
    """A T5 (Unigram) tokenizer from an in-memory vocabulary: pad, eos, unk, every printable ASCII
    character (alone and word-initial) and a few words; other characters become ``<unk>``."""
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    chars = [chr(c) for c in range(ord("!"), ord("~") + 1)]
    pieces += [(c, -5.0) for c in chars] + [("▁" + c, -5.5) for c in chars] + [("▁" + w, -3.0) for w in words]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=T5_MAX_LENGTH)


def _t5(tokenizer: T5Tokenizer, d_model: int) -> T5EncoderModel:
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return T5EncoderModel(config)


def _vae(latent_channels: int = 4, **extra: Any) -> AutoencoderKL:
    return AutoencoderKL(  # type: ignore[no-untyped-call]
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
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


def build_sd3_pipeline(*, seed: int = 0) -> StableDiffusion3Pipeline:
    """A tiny random-weight SD3 pipeline: MMDiT with 2x2 patches over 16 latent channels, two CLIP
    encoders with projections (pooled 2 x 32) and a T5 encoder whose width (64) the CLIP states are
    padded to, a 16-channel 8x VAE with SD3's scaling and shift factors, flow matching with shift 3."""
    tokenizer, text_config = _tokenizer_and_text_config()
    tokenizer_3 = t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModelWithProjection(text_config)
        text_encoder_2 = CLIPTextModelWithProjection(text_config)
        text_encoder_3 = _t5(tokenizer_3, 64)
        transformer = SD3Transformer2DModel(  # type: ignore[no-untyped-call]
            sample_size=8,  # 64x64 images by default
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            joint_attention_dim=64,  # the T5 width
            caption_projection_dim=32,
            pooled_projection_dim=64,  # both CLIP projections side by side
            pos_embed_max_size=32,  # up to 512-pixel sides
        )
        vae = _vae(16, use_quant_conv=False, use_post_quant_conv=False, **SD3_VAE)
    return StableDiffusion3Pipeline(  # type: ignore[no-untyped-call]
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(SD3_SCHEDULER_CONFIG),  # type: ignore[no-untyped-call]
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )


def build_flux_pipeline(*, seed: int = 0, schnell: bool = False) -> FluxPipeline:
    """A tiny random-weight FLUX.1 pipeline: a Flux transformer (one double and one single block)
    over 2x2-packed 16-channel latents, CLIP (pooled) and T5 encoders, a 16-channel 8x VAE with Flux's
    factors. FLUX.1-dev by default (guidance embedding, dynamic shifting); ``schnell``: neither."""
    tokenizer, text_config = _tokenizer_and_text_config()
    tokenizer_2 = t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(text_config)
        text_encoder_2 = _t5(tokenizer_2, 32)
        transformer = FluxTransformer2DModel(  # type: ignore[no-untyped-call]
            patch_size=1,
            in_channels=64,  # 16 latent channels x 2x2
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,  # the T5 width
            pooled_projection_dim=32,  # the CLIP width
            guidance_embeds=not schnell,
            axes_dims_rope=(4, 6, 6),  # sums to attention_head_dim
        )
        vae = _vae(16, use_quant_conv=False, use_post_quant_conv=False, **FLUX_VAE)
    config = FLUX_SCHNELL_SCHEDULER_CONFIG if schnell else FLUX_DEV_SCHEDULER_CONFIG
    return FluxPipeline(  # type: ignore[no-untyped-call]
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(config),  # type: ignore[no-untyped-call]
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )


def build_family_pipeline(family: Family = "sd", *, seed: int = 0, schnell: bool = False) -> Any:
    """The tiny pipeline of ``family`` in memory (``schnell``: FLUX.1-schnell's configuration)."""
    if family == "sd":
        return build_pipeline(seed=seed)
    if family == "sdxl":
        return build_sdxl_pipeline(seed=seed)
    if family == "sd3":
        return build_sd3_pipeline(seed=seed)
    return build_flux_pipeline(seed=seed, schnell=schnell)


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


def build_tiny_model(path: Path, *, seed: int = 0, family: Family = "sd", schnell: bool = False) -> Path:
    """Write the tiny pipeline of ``family`` to ``path`` (unless one is already there) and return ``path``.

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
        pipe: Any = build_family_pipeline(family, seed=seed, schnell=schnell)
        pipe.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private
        os.replace(tmp, path)  # replaces a missing or empty folder; fails if another builder won
    except OSError:
        if not is_complete(path):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


# What the tiny decoders take, as madebyollin's configs say: TAESD and TAESDXL decode the
# pipeline's latents as they are; TAESD3 and TAEF1 the VAE's (so they undo scaling and shift).
_TAESD_CONFIG: dict[Family, dict[str, Any]] = {
    "sd": {"latent_channels": 4},
    "sdxl": {"latent_channels": 4},
    "sd3": {"latent_channels": 16, **SD3_VAE},
    "flux": {"latent_channels": 16, **FLUX_VAE},
}


def build_taesd(*, seed: int = 0, family: Family = "sd") -> AutoencoderTiny:
    """A tiny random-weight TAESD (``AutoencoderTiny``), 8x upsampling, with the latent channels and factors of
    madebyollin/taesd (``sd``), taesdxl (``sdxl``), taesd3 (``sd3``: 16 channels) or taef1 (``flux``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderTiny(  # type: ignore[no-untyped-call]
            encoder_block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            num_encoder_blocks=(1, 1, 1, 1),
            num_decoder_blocks=(1, 1, 1, 1),
            **_TAESD_CONFIG[family],
        )


def build_tiny_taesd(path: Path, *, seed: int = 0, family: Family = "sd") -> Path:
    """Write the tiny TAESD of ``family`` to ``path`` (a folder ``AutoencoderTiny.from_pretrained`` reads)
    and return it."""
    path = Path(path)
    if not (path / "config.json").is_file():
        build_taesd(seed=seed, family=family).save_pretrained(path)  # type: ignore[attr-defined]  # a stub class
    return path


LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # every attention projection of the denoiser


def build_tiny_lora(path: Path, *, seed: int = 0, family: Family = "sd", rank: int = 4, scale: float = 0.3) -> Path:
    """Write a random LoRA for the tiny model of ``family`` to ``path`` (``<name>.safetensors``) and return it.

    Low-rank weights (``rank``) on every attention projection of the denoiser, drawn from
    ``seed`` with standard deviation ``scale``: made with peft (``add_adapter``,
    ``get_peft_model_state_dict``) and saved with the pipeline's own ``save_lora_weights``.
    """
    from peft import LoraConfig, get_peft_model_state_dict

    path = Path(path)
    pipe: Any = build_family_pipeline(family)
    denoiser_name = "unet" if family in ("sd", "sdxl") else "transformer"
    denoiser = getattr(pipe, denoiser_name)
    denoiser.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in denoiser.named_parameters():
            if ".lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    type(pipe).save_lora_weights(
        path.parent,
        weight_name=path.name,
        safe_serialization=True,
        **{f"{denoiser_name}_lora_layers": get_peft_model_state_dict(denoiser)},
    )
    return path


def build_tiny_embedding(path: Path, *, seed: int = 0, family: Family = "sd", vectors: int = 2) -> Path:
    """Write a random textual-inversion embedding for the tiny text encoders (width 32) to ``path``, as web
    UIs save one: ``emb_params`` (``vectors`` x width) in a safetensors file; ``sdxl``: ``clip_l`` and ``clip_g``."""
    from safetensors.torch import save_file

    path = Path(path)
    _, config = _tokenizer_and_text_config()
    generator = torch.Generator().manual_seed(seed)

    def vector() -> torch.Tensor:
        return torch.randn(vectors, config.hidden_size, generator=generator)

    tensors = {"clip_l": vector(), "clip_g": vector()} if family == "sdxl" else {"emb_params": vector()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def main(argv: list[str] | None = None) -> None:
    """CLI: build the tiny model into OUT_DIR and print its path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out_dir", type=Path, help="folder to write the model to")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--family", choices=["sd", "sdxl", "sd3", "flux"], default="sd", help="model family")
    parser.add_argument("--schnell", action="store_true", help="flux: FLUX.1-schnell's configuration")
    args = parser.parse_args(argv)
    print(build_tiny_model(args.out_dir, seed=args.seed, family=args.family, schnell=args.schnell))


if __name__ == "__main__":
    main()

"""What an adapter file fits: a model's widths from its config files, a LoRA's or embedding's from
its tensors. Pure (no torch; ``safetensors`` reads headers only, for the render worker's scan).

Which models a file fits is decided from tensor names and shapes read from the file's header
(``safetensors.safe_open``: metadata only, no tensor is loaded) against each local model's own
widths, read from its config files (:func:`model_shape`; ``config.json`` of ``unet``,
``transformer``, ``text_encoder`` and ``text_encoder_2``). Exactly:

LoRA (diffusers/peft keys ``unet.``, ``transformer.``, ``text_encoder[_2].`` + ``lora_A``/``lora_B``,
kohya keys ``lora_unet_``, ``lora_te[12]_`` + ``lora_down``/``lora_up``/``alpha``). Every key must
contain ``lora`` (diffusers' own rule). The input width of a down (A) matrix is its ``shape[1]``.

- UNet layers need a model with a UNet (sd, sdxl); transformer layers one with a transformer
  (sd3, flux); single-stream blocks (``single_transformer_blocks``, kohya ``single_blocks``) Flux.
- cross-attention keys/values of the UNet (``attn2.to_k``, ``attn2.to_v``) take the text
  conditioning: their input width must be the UNet's ``cross_attention_dim`` (SD 1.x 768,
  SD 2.x 1024, SDXL 2048);
- a transformer's attention projections (``attn.to_q/k/v``, kohya ``img_attn_qkv``, ``linear1``)
  take its inner width, ``num_attention_heads x attention_head_dim`` (SD3 1536, SD3.5 large
  2432, Flux 3072); ``context_embedder`` takes ``joint_attention_dim``;
- text-encoder layers (``q/k/v/out_proj``, ``fc1``) must match that encoder's ``hidden_size``.

A LoRA whose layers carry none of these widths fits every model of the matching kind, and an SD3
LoRA of attention layers only would fit a Flux model of the same width (no real pair has one);
the worker checks again when it loads it. Embedding: one tensor ``(vectors, width)`` (web UIs'
``emb_params``, or diffusers' ``{token: tensor}``) fits an SD 1.x/2.x model whose text encoder
is ``width`` wide; ``clip_l`` and ``clip_g`` (SDXL's format) fit an SDXL model whose two text
encoders have those widths. Its token (and ``token_1``... for more vectors) must not already be
a word of the model's tokenizer (diffusers refuses it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from stepanim.families import Family, model_family

# Model shapes: what a model's config files say about the widths adapters must match.

Denoiser = Literal["unet", "transformer"]
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")


@dataclass(frozen=True)
class ModelShape:
    """The widths of one local model that decide which adapters fit it (from its config files)."""

    name: str
    family: Family
    denoiser: Denoiser | None
    context_widths: frozenset[int] = frozenset()  # UNet cross_attention_dim / transformer joint_attention_dim
    inner_width: int | None = None  # transformer: heads x head dim
    text_widths: dict[str, int] = field(default_factory=dict)  # text_encoder[_2] -> hidden size
    tokenizers: tuple[Path, ...] = ()  # the CLIP tokenizer folders (token collisions)


def _config(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _ints(value: Any) -> frozenset[int]:
    if isinstance(value, int):
        return frozenset({value})
    if isinstance(value, list | tuple):
        return frozenset(v for v in value if isinstance(v, int))
    return frozenset()


def model_shape(folder: Path) -> ModelShape | None:
    """The shape of the diffusers model saved in ``folder``; None when it is of no known family."""
    try:
        family = model_family(folder)
    except ValueError:
        return None
    denoiser: Denoiser | None = None
    context: frozenset[int] = frozenset()
    inner = None
    if (unet := _config(folder / "unet")) is not None:
        denoiser, context = "unet", _ints(unet.get("cross_attention_dim"))
    elif (transformer := _config(folder / "transformer")) is not None:
        denoiser, context = "transformer", _ints(transformer.get("joint_attention_dim"))
        heads, head_dim = transformer.get("num_attention_heads"), transformer.get("attention_head_dim")
        inner = heads * head_dim if isinstance(heads, int) and isinstance(head_dim, int) else None
    widths: dict[str, int] = {}
    for name in TEXT_ENCODERS:
        config = _config(folder / name)
        width = None if config is None else config.get("hidden_size", config.get("d_model"))
        if isinstance(width, int):
            widths[name] = width
    tokenizers = tuple(folder / name for name in ("tokenizer", "tokenizer_2") if (folder / name).is_dir())
    return ModelShape(folder.name, family, denoiser, context, inner, widths, tokenizers)


def model_shapes(models_dir: Path) -> list[ModelShape]:
    """The shape of every model folder directly under ``models_dir``, by name."""
    if not models_dir.is_dir():
        return []
    folders = sorted((p for p in models_dir.iterdir() if (p / "model_index.json").is_file()), key=lambda p: p.name)
    return [shape for shape in map(model_shape, folders) if shape is not None]


@lru_cache(maxsize=32)
def _vocabulary(path: str, _mtime_ns: int) -> frozenset[str]:
    data = json.loads(Path(path).read_text())
    if Path(path).name == "vocab.json":
        return frozenset(data)
    vocab = data.get("model", {}).get("vocab", {})
    added = [t.get("content") for t in data.get("added_tokens", []) if isinstance(t, dict)]
    return frozenset([*(vocab if isinstance(vocab, dict) else ()), *(a for a in added if isinstance(a, str))])


def vocabulary(tokenizer: Path) -> frozenset[str]:
    """The tokens of a saved tokenizer (``tokenizer.json`` or ``vocab.json``); empty when unreadable."""
    for name in ("tokenizer.json", "vocab.json"):
        path = tokenizer / name
        try:
            return _vocabulary(str(path), path.stat().st_mtime_ns)
        except (OSError, ValueError, AttributeError):
            continue
    return frozenset()


# Adapter shapes: what a file's header says.

_DOWN = re.compile(r"\.(lora_A|lora_down|lora\.down|lora_linear_layer\.down)\.weight$|_lora\.down\.weight$")
_UNET_CROSS = re.compile(r"attn2[._]to_[kv]$")
_INNER = re.compile(r"(attn[._]to_[qkv]|img_attn[._]qkv|linear1)$")
_CONTEXT = re.compile(r"context_embedder$")
_TEXT = re.compile(r"(q_proj|k_proj|v_proj|out_proj|fc1)$")
_SINGLE = re.compile(r"single_(transformer_)?blocks")


@dataclass(frozen=True)
class LoraShape:
    """What a LoRA file's tensor names and shapes say about the models it fits."""

    components: frozenset[str]  # unet, transformer, text_encoder, text_encoder_2, text_encoder_3
    cross_widths: frozenset[int] = frozenset()  # UNet cross-attention inputs
    inner_widths: frozenset[int] = frozenset()  # transformer attention inputs
    context_widths: frozenset[int] = frozenset()  # transformer context_embedder inputs
    text_widths: dict[str, frozenset[int]] = field(default_factory=dict)
    single_blocks: bool = False

    @property
    def text_encoder_layers(self) -> bool:
        return any(c.startswith("text_encoder") for c in self.components)

    def describe(self) -> str:
        parts = []
        if "unet" in self.components:
            width = "/".join(map(str, sorted(self.cross_widths))) or "any"
            parts.append(f"UNet layers (cross-attention width {width})")
        if "transformer" in self.components:
            width = "/".join(map(str, sorted(self.inner_widths))) or "any"
            parts.append(f"{'Flux ' if self.single_blocks else ''}transformer layers (width {width})")
        for name, widths in sorted(self.text_widths.items()):
            parts.append(f"{name} layers (width {'/'.join(map(str, sorted(widths)))})")
        return "a LoRA with " + " and ".join(parts)


def _component(path: str) -> tuple[str, str] | None:
    """(component, module path) of a LoRA key's module path, in diffusers or kohya naming."""
    for prefix in ("unet", "transformer", "text_encoder_2", "text_encoder_3", "text_encoder"):
        if path.startswith(prefix + "."):
            return prefix, path.removeprefix(prefix + ".")
    kohya = {"lora_te1_": "text_encoder", "lora_te2_": "text_encoder_2", "lora_te3_": "text_encoder_3"}
    kohya |= {"lora_te_": "text_encoder", "lora_transformer_": "transformer", "lora_unet_": "unet"}
    for prefix, component in kohya.items():
        if path.startswith(prefix):
            rest = path.removeprefix(prefix)
            if component == "unet" and re.match(r"(double|single)_blocks", rest):
                component = "transformer"  # Flux in kohya's (BFL) naming
            return component, rest
    if re.match(r"(down_blocks|mid_block|up_blocks)\.", path):  # diffusers' older unprefixed UNet format
        return "unet", path
    if re.match(r"(single_)?(transformer_blocks|double_blocks|single_blocks)\.", path):
        return "transformer", path
    return None


def lora_shape(tensors: Iterable[tuple[str, Sequence[int]]]) -> LoraShape:
    """The shape of a LoRA from its (tensor name, shape) pairs; ValueError when it is not a LoRA."""
    components: set[str] = set()
    cross: set[int] = set()
    inner: set[int] = set()
    context: set[int] = set()
    text: dict[str, set[int]] = {}
    single = False
    downs = 0
    for name, shape in tensors:
        if "lora" not in name:
            raise ValueError(f"not a LoRA: tensor {name!r} is not a LoRA weight")
        match = _DOWN.search(name)
        if match is None:
            continue  # up (B) matrices, alphas, DoRA scales
        module = name[: match.start()]
        found = _component(module)
        if found is None:
            raise ValueError(f"not a LoRA this service can load: {name!r} names no UNet, transformer or text encoder")
        component, path = found
        if len(shape) < 2:
            raise ValueError(f"not a LoRA: {name!r} has shape {list(shape)}")
        downs += 1
        components.add(component)
        width = int(shape[1])
        if component == "unet" and _UNET_CROSS.search(path):
            cross.add(width)
        elif component == "transformer":
            single = single or bool(_SINGLE.search(path))
            if _CONTEXT.search(path):
                context.add(width)
            elif _INNER.search(path):
                inner.add(width)
        elif component.startswith("text_encoder") and _TEXT.search(path):
            text.setdefault(component, set()).add(width)
    if downs == 0:
        raise ValueError("not a LoRA: no down (A) matrices")
    return LoraShape(
        frozenset(components),
        frozenset(cross),
        frozenset(inner),
        frozenset(context),
        {k: frozenset(v) for k, v in text.items()},
        single,
    )


def _widths(widths: Iterable[int | None]) -> str:
    return "/".join(str(w) for w in sorted(w for w in widths if w is not None)) or "none"


def lora_misfit(lora: LoraShape, model: ModelShape) -> str | None:
    """Why ``lora`` does not fit ``model`` (None: it fits)."""
    if "unet" in lora.components and model.denoiser != "unet":
        return f"it has UNet layers and {model.name!r} has a {model.denoiser or 'different'} denoiser"
    if "transformer" in lora.components and model.denoiser != "transformer":
        return f"it has transformer layers and {model.name!r} has a {model.denoiser or 'different'} denoiser"
    if lora.single_blocks and model.family != "flux":
        return "it has Flux single-stream layers"
    if not lora.cross_widths <= model.context_widths and "unet" in lora.components:
        has = _widths(model.context_widths)
        return f"its cross-attention width is {_widths(lora.cross_widths)}, {model.name!r} has {has}"
    if lora.inner_widths and {model.inner_width} != set(lora.inner_widths):
        return f"its attention width is {_widths(lora.inner_widths)}, {model.name!r} has {_widths([model.inner_width])}"
    if not lora.context_widths <= model.context_widths and "transformer" in lora.components:
        return (
            f"its context width is {_widths(lora.context_widths)}, {model.name!r} has {_widths(model.context_widths)}"
        )
    for component in sorted(c for c in lora.components if c.startswith("text_encoder")):
        if component not in model.text_widths:
            return f"it has {component} layers and {model.name!r} has no such text encoder"
        widths = lora.text_widths.get(component, frozenset())
        if widths and widths != {model.text_widths[component]}:
            width = model.text_widths[component]
            return f"its {component} width is {_widths(widths)}, {model.name!r} has {width}"
    return None


@dataclass(frozen=True)
class EmbeddingShape:
    """A textual-inversion embedding: its width per text encoder and its number of vectors."""

    widths: dict[str, int]  # text_encoder (and text_encoder_2 for SDXL's clip_l / clip_g) -> width
    vectors: int

    def describe(self) -> str:
        widths = " and ".join(f"{w}" for _, w in sorted(self.widths.items()))
        return f"an embedding of {self.vectors} vector{'s' if self.vectors != 1 else ''} of width {widths}"


def embedding_shape(tensors: Sequence[tuple[str, Sequence[int]]]) -> EmbeddingShape:
    """The shape of an embedding from its (tensor name, shape) pairs; ValueError when it is not one."""
    shapes = {name: [int(s) for s in shape] for name, shape in tensors}

    def vectors_and_width(name: str, shape: list[int]) -> tuple[int, int]:
        if len(shape) == 1:
            return 1, shape[0]
        if len(shape) == 2 and shape[0] >= 1:
            return shape[0], shape[1]
        raise ValueError(f"not an embedding: {name!r} has shape {shape}")

    if set(shapes) == {"clip_l", "clip_g"}:
        (n_l, w_l), (n_g, w_g) = (vectors_and_width(k, shapes[k]) for k in ("clip_l", "clip_g"))
        if n_l != n_g:
            raise ValueError(f"not an embedding: clip_l has {n_l} vectors, clip_g {n_g}")
        return EmbeddingShape({"text_encoder": w_l, "text_encoder_2": w_g}, n_l)
    if len(shapes) != 1:
        raise ValueError(f"not an embedding: expected one tensor (or clip_l and clip_g), found {sorted(shapes)[:4]}")
    [(name, shape)] = shapes.items()
    vectors, width = vectors_and_width(name, shape)
    return EmbeddingShape({"text_encoder": width}, vectors)


def embedding_tokens(token: str, vectors: int) -> list[str]:
    """The tokens an embedding adds (diffusers: ``token``, then ``token_1``... for more vectors)."""
    return [token, *(f"{token}_{i}" for i in range(1, vectors))]


def embedding_misfit(embedding: EmbeddingShape, token: str, model: ModelShape) -> str | None:
    """Why an embedding with this token does not fit ``model`` (None: it fits)."""
    family: Family = "sdxl" if "text_encoder_2" in embedding.widths else "sd"
    if model.family != family:
        wanted = "an SDXL (clip_l and clip_g)" if family == "sdxl" else "an SD 1.x/2.x"
        return f"it is {wanted} embedding and {model.name!r} is a {model.family} model"
    for component, width in sorted(embedding.widths.items()):
        if model.text_widths.get(component) != width:
            return f"its width is {width}, {model.name!r}'s {component} has {model.text_widths.get(component)}"
    for tokenizer in model.tokenizers:
        taken = [t for t in embedding_tokens(token, embedding.vectors) if t in vocabulary(tokenizer)]
        if taken:
            return f"its token {taken[0]!r} is already a word of {model.name!r}'s tokenizer: rename the file"
    return None


def read_tensors(path: Path) -> list[tuple[str, list[int]]]:
    """(name, shape) of every tensor of a safetensors file, from its header only (nothing is loaded)."""
    from safetensors import safe_open  # the render worker's dependency; the API never scans

    with safe_open(str(path), framework="np") as f:
        return [(name, list(f.get_slice(name).get_shape())) for name in f.keys()]  # noqa: SIM118

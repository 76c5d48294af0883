"""LoRAs and textual-inversion embeddings: what a request may name, where the files are, what fits which model.

Pure (no torch, no diffusers): the API imports the request models and :func:`check_adapters`;
the render worker scans its folder with :func:`scan` and publishes the result
(``stepanim.published``), and applies a job's adapters with ``worker.adapters``.

Layout: ``<adapters_dir>/loras/<name>.safetensors`` and ``<adapters_dir>/embeddings/<name>.safetensors``
(``settings.adapters_path``: ``adapters_dir``, else ``adapters`` beside ``models_dir``). Safetensors
only: a file is never unpickled; other files and names outside :data:`NAME_PATTERN` are skipped
with a warning, as are files that are not a LoRA or an embedding at all.

A request names its adapters (``loras: [{"name", "weight"}]``, ``embeddings: ["name"]``). An
embedding is invoked by its *token*, which is its name: a web UI's prompt ("a photo, mystyle")
works as it is, but only for an embedding the request names, and the token must appear in the
prompt or the negative prompt (else the request is refused: naming it would do nothing).

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
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stepanim.families import FAMILIES, Family, model_family

if TYPE_CHECKING:
    from stepanim.model_catalog import ModelInfo
    from stepanim.request import AnimationCreate

log = logging.getLogger(__name__)

# A file stem: letters, digits, _ and -, so that it is a safe file name and a valid adapter name in
# peft (no dots). An embedding's name is its prompt token: lower case, as CLIP lowercases prompts.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
TOKEN_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"  # noqa: S105 (a name pattern)
MAX_LORAS = 8  # per request; settings.max_loras may lower it
MAX_EMBEDDINGS = 8
MIN_WEIGHT, MAX_WEIGHT = -4.0, 4.0

LORAS = "loras"
EMBEDDINGS = "embeddings"
SUFFIX = ".safetensors"

AdapterKind = Literal["lora", "embedding"]
EmbeddingName = Annotated[
    str,
    Field(
        pattern=TOKEN_PATTERN,
        description="An embedding in the workers' adapters folder (its file name without .safetensors), which is "
        "also its prompt token.",
        examples=["mystyle"],
    ),
]


class LoraRequest(BaseModel):
    """A LoRA to apply to this job, with its strength."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=NAME_PATTERN,
        description="A LoRA in the workers' adapters folder: its file name without .safetensors (GET /capabilities "
        "lists them, with the models each fits).",
        examples=["watercolor"],
    )
    weight: float = Field(
        1.0,
        ge=MIN_WEIGHT,
        le=MAX_WEIGHT,
        description="Strength, as a web UI's <lora:name:weight>: 1 as trained, 0 no effect, negative inverts it.",
        examples=[0.8],
    )


class AdapterInfo(BaseModel):
    """A LoRA or embedding of the render workers' adapters folder, and what it fits."""

    name: str = Field(description="The name to give in `loras[].name` or `embeddings`.", examples=["watercolor"])
    kind: AdapterKind = Field(description="lora or embedding.", examples=["lora"])
    families: list[Family] = Field(
        default_factory=list, description="The model families of the models it fits.", examples=[["sd"]]
    )
    models: list[str] = Field(
        default_factory=list, description="This server's models it fits (`model` of the request).", examples=[["sd15"]]
    )
    token: str | None = Field(
        None, description="Embeddings: the word that invokes it in a prompt (its name).", examples=["mystyle"]
    )
    vectors: int | None = Field(None, description="Embeddings: how many token vectors it has.", examples=[2])
    note: str | None = Field(
        None,
        description="Why it fits none of this server's models, when it fits none.",
        examples=[
            "a LoRA with UNet layers (cross-attention width 2048); fits none of this server's models "
            "(sd15: its cross-attention width is 2048, 'sd15' has 768)"
        ],
    )


class LoraUse(BaseModel):
    """A LoRA a render applied (manifest and video metadata)."""

    name: str
    weight: float
    sha256: str = Field(description="SHA-256 of the file that was loaded.")


class EmbeddingUse(BaseModel):
    """An embedding a render loaded (manifest and video metadata)."""

    name: str
    token: str
    vectors: int
    sha256: str = Field(description="SHA-256 of the file that was loaded.")


def adapter_file(adapters_dir: Path, kind: AdapterKind, name: str) -> Path:
    """Where the adapter ``name`` of ``kind`` lives (the name is checked: no path ever leaves the folder)."""
    if re.fullmatch(NAME_PATTERN, name) is None:
        raise ValueError(f"{name!r} is not an adapter name")
    return adapters_dir / (LORAS if kind == "lora" else EMBEDDINGS) / f"{name}{SUFFIX}"


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


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """Log a skipped file once per process (the folder is scanned again at every publish)."""
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix != SUFFIX:
            _warn_once(f"adapters: ignoring {path}: only .safetensors files are read")
        elif re.fullmatch(NAME_PATTERN, path.stem) is None:
            _warn_once(f"adapters: ignoring {path}: a name is letters, digits, _ and - (at most 64)")
        else:
            found.append(path)
    return found


def _fits(misfits: dict[str, str | None], models: Sequence[ModelShape]) -> tuple[list[Family], list[str]]:
    fitting = [m for m in models if misfits[m.name] is None]
    families = [f for f in FAMILIES if any(m.family == f for m in fitting)]
    return families, [m.name for m in fitting]


def _note(shape: str, models: Sequence[ModelShape], misfits: dict[str, str | None]) -> str:
    if not models:
        return f"{shape}; this worker has no local model"
    reasons = "; ".join(f"{name}: {why}" for name, why in misfits.items())
    return f"{shape}; fits none of this server's models ({reasons})"


def scan(
    adapters_dir: Path, models: Sequence[ModelShape], *, text_encoder_loras: str | None = None
) -> list[AdapterInfo]:
    """Every LoRA and embedding under ``adapters_dir`` with the ``models`` each fits, LoRAs first, by name.

    ``text_encoder_loras``: why this worker cannot load LoRA text-encoder layers (None: it can);
    such LoRAs then fit no model. Files that cannot be read as a LoRA or embedding are skipped.
    """
    found: list[AdapterInfo] = []
    for path in _files(adapters_dir / LORAS):
        try:
            lora = lora_shape(read_tensors(path))
        except Exception as e:  # safetensors raises its own errors for a damaged header
            _warn_once(f"adapters: ignoring LoRA {path}: {e}")
            continue
        misfits = {m.name: lora_misfit(lora, m) for m in models}
        if text_encoder_loras is not None and lora.text_encoder_layers:
            misfits = {name: f"{lora.describe()}: {text_encoder_loras}" for name in misfits}
        families, fitting = _fits(misfits, models)
        note = None if fitting else _note(lora.describe(), models, misfits)
        found.append(AdapterInfo(name=path.stem, kind="lora", families=families, models=fitting, note=note))
    for path in _files(adapters_dir / EMBEDDINGS):
        if re.fullmatch(TOKEN_PATTERN, path.stem) is None:
            _warn_once(f"adapters: ignoring embedding {path}: its name is its prompt token, so lower case")
            continue
        try:
            embedding = embedding_shape(read_tensors(path))
        except Exception as e:
            _warn_once(f"adapters: ignoring embedding {path}: {e}")
            continue
        misfits = {m.name: embedding_misfit(embedding, path.stem, m) for m in models}
        families, fitting = _fits(misfits, models)
        note = None if fitting else _note(embedding.describe(), models, misfits)
        info = AdapterInfo(
            name=path.stem,
            kind="embedding",
            families=families,
            models=fitting,
            token=path.stem,
            vectors=embedding.vectors,
            note=note,
        )
        found.append(info)
    return found


# Admission: the pure check the API runs before anything is stored.


def check_adapters(
    request: AnimationCreate, model_info: ModelInfo | None, adapters: Sequence[AdapterInfo]
) -> list[tuple[str, str]]:
    """What in ``request``'s LoRAs and embeddings cannot be used, as (field, message) pairs.

    ``model_info`` is the job's model as the render workers published it (None: not a local
    model); ``adapters`` what they published. Empty when everything fits.
    """
    if not request.loras and not request.embeddings:
        return []
    model = request.model or "the default model"
    if model_info is None:
        return [
            (
                "model",
                f"LoRAs and embeddings need one of the render workers' local models (GET /capabilities); "
                f"{model!r} is not one",
            )
        ]
    known = {(a.kind, a.name): a for a in adapters}
    problems: list[tuple[str, str]] = []
    named: list[tuple[str, AdapterKind, str]] = [
        (f"loras.{i}.name", "lora", x.name) for i, x in enumerate(request.loras)
    ]
    named += [(f"embeddings.{i}", "embedding", name) for i, name in enumerate(request.embeddings)]
    for where, kind, name in named:
        label = "LoRA" if kind == "lora" else "embedding"
        info = known.get((kind, name))
        if info is None:
            problems.append((where, f"no {label} {name!r} on this server (GET /capabilities lists the adapters)"))
        elif model_info.name not in info.models:
            fits = ", ".join(info.models) if info.models else f"none of this server's models: {info.note}"
            problems.append((where, f"{label} {name!r} does not fit model {model_info.name!r} (it fits: {fits})"))
    return problems


def unique_names(names: Sequence[str], what: str) -> None:
    """Raise ValueError when a name is given twice."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} {name!r} is named twice")
        seen.add(name)


def tokens_in_prompt(embeddings: Sequence[str], prompt: str, negative_prompt: str) -> None:
    """Raise ValueError for an embedding whose token appears in neither prompt (naming it would do nothing)."""
    for i, token in enumerate(embeddings):
        if token not in prompt and token not in negative_prompt:
            raise ValueError(
                f"the token {token!r} (item {i}) appears in neither prompt nor negative_prompt; write it where the "
                "embedding should act"
            )

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

Which models a file fits is decided from the file's tensor names and shapes against each local
model's widths: ``stepanim.adapter_shapes``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from stepanim.adapter_shapes import (
    ModelShape,
    embedding_misfit,
    embedding_shape,
    lora_misfit,
    lora_shape,
    read_tensors,
)
from stepanim.families import FAMILIES, Family

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

"""A job's LoRAs and embeddings on a pipeline for one render, and off it again afterwards.

The invariant, between renders: every LoRA layer of a loaded pipeline is disabled and no
embedding token is in its tokenizers. :func:`applied` keeps it around each render:

1. :func:`resolve` finds the job's files and checks each against the model's shapes
   (``stepanim.adapters``) before anything is loaded; a missing file, one that is not a
   safetensors LoRA or embedding, or one that does not fit is an :class:`AdapterError`.
2. LoRAs are loaded with diffusers' ``load_lora_weights(adapter_name=...)`` (safetensors only,
   never unpickled) and stay loaded, disabled, in a bounded per-pipeline cache
   (:class:`LoadedLoras`; the least recently used is removed with ``delete_adapters``); a file
   changed on disk is loaded again. For the render: ``enable_lora`` and
   ``set_adapters(names, adapter_weights=weights)``; after it, ``disable_lora``. Nothing is fused.
3. Embeddings are loaded for the render only, with ``load_textual_inversion(tensor, token=name)``
   (SDXL: ``clip_l`` and ``clip_g`` into both encoders), and removed after it with
   ``unload_textual_inversion``; the text encoder gets back its own embedding module and
   vocabulary size, so it is as it was.
4. The pipeline's state (tokenizer lengths, embedding modules, any LoRA layer enabled, fused
   LoRAs) is compared with what it was before; if it cannot be restored the pipeline is
   dropped from the cache, so the next job loads it afresh: a job's adapters never reach the next.

The cache's lock is held for the whole render, so no other render in the process uses the pipeline
meanwhile (a render worker runs one render at a time anyway).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from stepanim.adapter_shapes import (
    EmbeddingShape,
    embedding_misfit,
    embedding_shape,
    embedding_tokens,
    lora_misfit,
    lora_shape,
    model_shape,
    read_tensors,
)
from stepanim.adapters import EmbeddingUse, LoraUse, adapter_file
from stepanim.failures import AdapterError
from stepanim.request import AnimationCreate
from stepanim.settings import Settings

if TYPE_CHECKING:
    from worker.pipelines import PipelineCache

log = logging.getLogger(__name__)

Stamp = tuple[int, int]  # (mtime in ns, size): a file changed on disk is loaded again


@dataclass(frozen=True)
class LoraFile:
    name: str
    weight: float
    path: Path
    stamp: Stamp
    sha256: str


@dataclass(frozen=True)
class EmbeddingFile:
    name: str  # also its token
    path: Path
    shape: EmbeddingShape
    sha256: str


@dataclass(frozen=True)
class JobAdapters:
    """A job's adapter files, resolved and checked (empty for most jobs)."""

    loras: tuple[LoraFile, ...] = ()
    embeddings: tuple[EmbeddingFile, ...] = ()

    def lora_uses(self) -> list[LoraUse]:
        return [LoraUse(name=x.name, weight=x.weight, sha256=x.sha256) for x in self.loras]

    def embedding_uses(self) -> list[EmbeddingUse]:
        return [
            EmbeddingUse(name=x.name, token=x.name, vectors=x.shape.vectors, sha256=x.sha256) for x in self.embeddings
        ]


def text_encoder_lora_problem() -> str | None:
    """Why LoRA text-encoder layers cannot be loaded here (None: they can).

    diffusers loads them through transformers' PEFT integration, which needs a newer peft
    than the UNet/transformer path: transformers 5 asks for peft >= 0.22.
    """
    try:
        from packaging.version import Version
        from transformers.integrations.peft import MIN_PEFT_VERSION
    except ImportError:
        return None
    installed = importlib.metadata.version("peft")
    if Version(installed) >= Version(MIN_PEFT_VERSION):
        return None
    return f"its text-encoder layers need peft >= {MIN_PEFT_VERSION} and this worker has peft {installed}"


@lru_cache(maxsize=256)
def _sha256(path: str, _stamp: Stamp) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp(path: Path, where: str, label: str) -> Stamp:
    try:
        stat = path.stat()
    except OSError:
        raise AdapterError(
            f"{where}: no {label} {path.stem!r} in this worker's adapters folder ({path.parent})"
        ) from None
    return stat.st_mtime_ns, stat.st_size


def resolve(settings: Settings, request: AnimationCreate, *, model: str, model_folder: Path | None) -> JobAdapters:
    """The job's adapter files, each checked against the model (when it is a local folder) before
    anything is loaded; :class:`AdapterError` names the field and says what is wrong."""
    if not request.loras and not request.embeddings:
        return JobAdapters()
    shape = model_shape(model_folder) if model_folder is not None else None
    folder = settings.adapters_path
    loras = []
    for i, lora in enumerate(request.loras):
        where = f"loras.{i}"
        path = adapter_file(folder, "lora", lora.name)
        stamp = _stamp(path, where, "LoRA")
        try:
            found = lora_shape(read_tensors(path))
        except Exception as e:  # safetensors' own errors for a damaged file, ValueError for one that is no LoRA
            raise AdapterError(f"{where}: {path.name} is not a valid LoRA safetensors file: {e}") from e
        if found.text_encoder_layers and (problem := text_encoder_lora_problem()) is not None:
            raise AdapterError(f"{where}: LoRA {lora.name!r} cannot be loaded here: {problem}")
        if shape is not None and (why := lora_misfit(found, shape)) is not None:
            raise AdapterError(f"{where}: LoRA {lora.name!r} does not fit model {model!r}: {why}")
        loras.append(LoraFile(lora.name, lora.weight, path, stamp, _sha256(str(path), stamp)))
    embeddings = []
    for i, name in enumerate(request.embeddings):
        where = f"embeddings.{i}"
        path = adapter_file(folder, "embedding", name)
        stamp = _stamp(path, where, "embedding")
        try:
            embedding = embedding_shape(read_tensors(path))
        except Exception as e:
            raise AdapterError(f"{where}: {path.name} is not a valid embedding safetensors file: {e}") from e
        if shape is not None and (why := embedding_misfit(embedding, name, shape)) is not None:
            raise AdapterError(f"{where}: embedding {name!r} does not fit model {model!r}: {why}")
        embeddings.append(EmbeddingFile(name, path, embedding, _sha256(str(path), stamp)))
    return JobAdapters(tuple(loras), tuple(embeddings))


def adapter_name(name: str) -> str:
    """The adapter's name in diffusers/peft (prefixed: a bare name such as ``forward`` would clash with
    a module attribute)."""
    return f"stepanim-{name}"


class LoadedLoras:
    """The LoRAs loaded into one pipeline, least recently used first, at most ``size``; each is
    disabled whenever no render uses it. ``lock`` is held for a whole render (:func:`applied`)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.loads = 0  # files loaded so far (tests: the cache is used)
        self._loaded: OrderedDict[str, Stamp] = OrderedDict()

    def names(self) -> list[str]:
        """The loaded LoRAs, least recently used first."""
        return list(self._loaded)

    def ensure(self, pipe: Any, lora: LoraFile, *, keep: set[str]) -> str:
        """Load ``lora`` into ``pipe`` unless it is loaded from the same file; return its adapter name.

        Leaves every LoRA layer disabled. LoRAs beyond ``size`` are deleted, least recently used
        first, except those in ``keep`` (the job's own).
        """
        adapter = adapter_name(lora.name)
        if not hasattr(pipe, "load_lora_weights"):
            raise AdapterError(f"LoRA {lora.name!r}: {type(pipe).__name__} takes no LoRAs")
        if self._loaded.get(lora.name) == lora.stamp:
            self._loaded.move_to_end(lora.name)
            return adapter
        try:
            if lora.name in self._loaded:  # the file changed: its old weights go first
                self._delete(pipe, lora.name)
            with warnings.catch_warnings():
                # peft warns that a model with an adapter gets another: what named adapters are for.
                warnings.filterwarnings("ignore", message="Already found a `peft_config`", category=UserWarning)
                pipe.load_lora_weights(
                    str(lora.path.parent),
                    weight_name=lora.path.name,
                    adapter_name=adapter,
                    use_safetensors=True,  # and so no pickle fallback
                    local_files_only=True,
                )
        except Exception as e:
            self._delete(pipe, lora.name, quiet=True)  # what a failed load may have left
            raise AdapterError(f"LoRA {lora.name!r} could not be loaded: {type(e).__name__}: {e}") from e
        finally:
            pipe.disable_lora()  # a load activates the new adapter: not until a render asks for it
        self.loads += 1
        self._loaded[lora.name] = lora.stamp
        for name in [n for n in self._loaded if n not in keep][: max(len(self._loaded) - self.size, 0)]:
            self._delete(pipe, name)
            log.info("unloaded LoRA %s", name)
        return adapter

    def _delete(self, pipe: Any, name: str, *, quiet: bool = False) -> None:
        self._loaded.pop(name, None)
        adapter = adapter_name(name)
        try:
            if any(adapter in names for names in pipe.get_list_adapters().values()):
                pipe.delete_adapters(adapter)
        except Exception:
            if not quiet:
                raise
            log.exception("LoRA %s: could not delete what a failed load left", name)


@dataclass
class _Embedding:
    """One embedding's tokens in one tokenizer / text encoder pair, and what they replaced."""

    tokenizer: Any
    text_encoder: Any
    length: int  # the tokenizer's length before
    embeddings: Any  # the text encoder's own input embedding module
    vocab_size: int
    tokens: list[str] = field(default_factory=list)


def _pairs(pipe: Any, embedding: EmbeddingFile, tensors: dict[str, torch.Tensor]) -> list[tuple[Any, Any, Any]]:
    if "text_encoder_2" in embedding.shape.widths:  # SDXL: clip_l and clip_g
        return [
            (pipe.tokenizer, pipe.text_encoder, tensors["clip_l"]),
            (pipe.tokenizer_2, pipe.text_encoder_2, tensors["clip_g"]),
        ]
    [tensor] = tensors.values()
    return [(pipe.tokenizer, pipe.text_encoder, tensor)]


def _load_embedding(pipe: Any, embedding: EmbeddingFile, loaded: list[_Embedding]) -> None:
    """Load one embedding's token(s) into ``pipe``; ``loaded`` gets every pair touched, even when it fails."""
    from safetensors.torch import load_file

    if not hasattr(pipe, "load_textual_inversion"):
        raise AdapterError(f"embedding {embedding.name!r}: {type(pipe).__name__} takes no textual-inversion embeddings")
    try:
        tensors = load_file(str(embedding.path))  # safetensors: never unpickled
    except Exception as e:
        raise AdapterError(f"embedding {embedding.name!r} could not be read: {type(e).__name__}: {e}") from e
    for tokenizer, text_encoder, tensor in _pairs(pipe, embedding, tensors):
        entry = _Embedding(
            tokenizer, text_encoder, len(tokenizer), text_encoder.get_input_embeddings(), text_encoder.config.vocab_size
        )
        loaded.append(entry)
        before = set(tokenizer.added_tokens_encoder)
        try:
            pipe.load_textual_inversion(tensor, token=embedding.name, tokenizer=tokenizer, text_encoder=text_encoder)
        except Exception as e:
            raise AdapterError(f"embedding {embedding.name!r} could not be loaded: {type(e).__name__}: {e}") from e
        finally:
            entry.tokens = [t for t in tokenizer.added_tokens_encoder if t not in before]
        expected = embedding_tokens(embedding.name, embedding.shape.vectors)
        if sorted(entry.tokens) != sorted(expected):
            raise AdapterError(f"embedding {embedding.name!r}: added tokens {entry.tokens}, expected {expected}")


def _unload_embedding(pipe: Any, entry: _Embedding) -> None:
    if entry.tokens:
        pipe.unload_textual_inversion(entry.tokens, tokenizer=entry.tokenizer, text_encoder=entry.text_encoder)
    # unload_textual_inversion rebuilds the embedding module from the resized one; the text encoder
    # gets its own module (never changed: resizing copies) and vocabulary size back, as they were.
    entry.text_encoder.set_input_embeddings(entry.embeddings)
    entry.text_encoder.config.vocab_size = entry.vocab_size
    if len(entry.tokenizer) != entry.length:
        raise RuntimeError(f"tokenizer has {len(entry.tokenizer)} tokens after unloading, {entry.length} before")


_COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
_TEXT = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"), ("tokenizer_3", "text_encoder_3"))


def lora_enabled(pipe: Any) -> bool:
    """Whether any LoRA layer of ``pipe`` is enabled (between renders none is)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name in _COMPONENTS:
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            for layer in module.modules():
                if isinstance(layer, BaseTunerLayer) and not layer.disable_adapters:
                    return True
    return False


def pipeline_state(pipe: Any) -> tuple[object, ...]:
    """What a job's adapters may change and must leave as they found it."""
    state: list[object] = []
    for tokenizer_name, encoder_name in _TEXT:
        tokenizer, encoder = getattr(pipe, tokenizer_name, None), getattr(pipe, encoder_name, None)
        state.append(len(tokenizer) if tokenizer is not None else None)
        state.append(id(encoder.get_input_embeddings()) if encoder is not None else None)
    state.append(lora_enabled(pipe))
    state.append(tuple(sorted(getattr(pipe, "fused_loras", None) or ())))
    return tuple(state)


@contextmanager
def applied(pipes: PipelineCache, model: str, pipe: Any, adapters: JobAdapters) -> Iterator[None]:
    """``adapters`` on ``pipe`` (the cached pipeline of ``model``) for the duration of the block.

    Raises :class:`AdapterError` when one cannot be loaded. Afterwards ``pipe`` is as before; if
    that cannot be made so, the pipeline is dropped from ``pipes`` (the next job loads it afresh).
    """
    loras = pipes.loras(pipe)
    with loras.lock:
        before = pipeline_state(pipe)
        embeddings: list[_Embedding] = []
        try:
            keep = {lora.name for lora in adapters.loras}
            names = [loras.ensure(pipe, lora, keep=keep) for lora in adapters.loras]
            for embedding in adapters.embeddings:
                _load_embedding(pipe, embedding, embeddings)
            if names:
                pipe.enable_lora()
                pipe.set_adapters(names, adapter_weights=[lora.weight for lora in adapters.loras])
            yield
        finally:
            _restore(pipes, model, pipe, embeddings, before)


def _restore(
    pipes: PipelineCache, model: str, pipe: Any, embeddings: list[_Embedding], before: tuple[object, ...]
) -> None:
    problems: list[str] = []
    if hasattr(pipe, "disable_lora"):
        try:
            pipe.disable_lora()
        except Exception as e:
            problems.append(f"disable_lora: {type(e).__name__}: {e}")
    for entry in reversed(embeddings):
        try:
            _unload_embedding(pipe, entry)
        except Exception as e:
            problems.append(f"unload embedding: {type(e).__name__}: {e}")
    if not problems and (after := pipeline_state(pipe)) != before:
        problems.append(f"state {after} after the render, {before} before")
    if problems:
        log.error("model %s: adapters not taken off (%s); the pipeline is dropped", model, "; ".join(problems))
        pipes.discard(model)

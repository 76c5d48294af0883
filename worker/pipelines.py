"""Loading diffusers pipelines and keeping them warm per worker process.

A model is a folder under ``settings.models_dir``, a path, or a hub id. Loaded
pipelines live in a small LRU cache; each run gets its own scheduler instance so
nothing stateful is shared between runs.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

import diffusers
import torch

from stepanim.jobs import SCHEDULERS
from stepanim.settings import Settings

log = logging.getLogger(__name__)


class ModelError(Exception):
    """The model cannot be found or loaded; the job fails, the worker stays up."""


def pick_device(setting: str) -> str:
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_model(name: str, settings: Settings) -> str:
    """A folder in models_dir wins; else the name is a path or a hub id, as diffusers reads it.

    (torch 2's scaled-dot-product attention is diffusers' default on CUDA: nothing to set.)
    """
    local = settings.models_dir / name
    return str(local) if (local / "model_index.json").is_file() else name


def make_scheduler(pipe: Any, name: str) -> Any:
    try:
        class_name, overrides = SCHEDULERS[name]
    except KeyError as e:
        raise ValueError(f"unknown scheduler {name!r}; known: {', '.join(SCHEDULERS)}") from e
    cls = getattr(diffusers, class_name)
    return cls.from_config(pipe.scheduler.config, **overrides)


class PipelineCache:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device = pick_device(settings.device)
        self.dtype = torch.float16 if self.device == "cuda" else torch.float32
        self._pipes: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: str) -> Any:
        """The text-to-image pipeline for ``model``, loaded once and kept warm."""
        with self._lock:
            if model in self._pipes:
                self._pipes.move_to_end(model)
                return self._pipes[model]
            pipe = self._load(model)
            self._pipes[model] = pipe
            while len(self._pipes) > self.settings.pipeline_cache_size:
                evicted, _ = self._pipes.popitem(last=False)
                log.info("unloaded model %s", evicted)
                if self.device == "cuda":
                    torch.cuda.empty_cache()
            return pipe

    def _load(self, model: str) -> Any:
        source = resolve_model(model, self.settings)
        log.info("loading model %s from %s on %s", model, source, self.device)
        try:
            pipe = diffusers.AutoPipelineForText2Image.from_pretrained(  # type: ignore[no-untyped-call]
                source, torch_dtype=self.dtype, safety_checker=None, requires_safety_checker=False
            )
        except Exception as e:  # diffusers raises many kinds; all mean "cannot load this model"
            raise ModelError(f"cannot load model {model!r}: {type(e).__name__}: {e}") from e
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

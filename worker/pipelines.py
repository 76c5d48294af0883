"""Loading diffusers pipelines and keeping them warm per worker process.

A model is a folder under ``settings.models_dir``, a path, or a hub id. Loaded
pipelines live in a small LRU cache; each run gets its own scheduler instance so
nothing stateful is shared between runs.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import diffusers
import torch

from stepanim.failures import DecoderUnavailable, ModelError
from stepanim.jobs import SCHEDULERS
from stepanim.settings import Settings
from worker.capture import LatentFamily

log = logging.getLogger(__name__)


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


def pipeline_for(base: Any, *, scheduler: Any, img2img: bool) -> Any:
    """A pipeline for one run sharing ``base``'s weights, with its own scheduler instance.

    ``AutoPipelineFor*.from_pipe`` picks the text-to-image or image-to-image class that
    matches the loaded one (SD 1.x/2.x, SDXL, ...) without copying any weights.
    """
    auto = diffusers.AutoPipelineForImage2Image if img2img else diffusers.AutoPipelineForText2Image
    try:
        pipe = auto.from_pipe(base, scheduler=scheduler)
    except ValueError as e:  # no matching pipeline class for this model
        kind = "image-to-image" if img2img else "text-to-image"
        raise ModelError(f"{type(base).__name__} has no {kind} pipeline: {e}") from e
    pipe.set_progress_bar_config(disable=True)
    return pipe


def decoding_vae(vae: Any) -> Any:
    """The VAE to decode frames with: ``vae`` itself, or a float32 copy when fp16 would overflow.

    SDXL's VAE (``force_upcast``) produces NaNs in fp16; its pipelines upcast the shared
    VAE in place around each decode, which the frame thread must not do to a module the
    sampling thread may use, so it gets its own float32 copy.
    """
    if vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
        return copy.deepcopy(vae).to(torch.float32)
    return vae


class PipelineCache:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device = pick_device(settings.device)
        self.dtype = torch.float16 if self.device == "cuda" else torch.float32
        self._pipes: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._decoding_vaes: dict[int, Any] = {}  # id(pipe.vae) -> decoding_vae(pipe.vae)
        self._taesd: dict[LatentFamily, Any] = {}

    def full_vae(self, pipe: Any) -> Any:
        """The VAE that decodes ``pipe``'s frames (see :func:`decoding_vae`), made once per model."""
        with self._lock:
            key = id(pipe.vae)
            if key not in self._decoding_vaes:
                self._decoding_vaes[key] = decoding_vae(pipe.vae)
            return self._decoding_vaes[key]

    def taesd_path(self, family: LatentFamily) -> Path:
        if family == "sdxl":
            return self.settings.taesdxl_path or self.settings.models_dir / "taesdxl"
        return self.settings.taesd_path or self.settings.models_dir / "taesd"

    def taesd(self, family: LatentFamily) -> Any:
        """The tiny autoencoder for ``family`` latents, loaded once from its local folder."""
        with self._lock:
            if family in self._taesd:
                return self._taesd[family]
            path = self.taesd_path(family)
            setting = "STEPANIM_TAESDXL_PATH" if family == "sdxl" else "STEPANIM_TAESD_PATH"
            repo = "madebyollin/taesdxl" if family == "sdxl" else "madebyollin/taesd"
            if not (path / "config.json").is_file():
                log.warning("decoder taesd: no weights for %s latents in %s", family, path)
                raise DecoderUnavailable(
                    f"decoder 'taesd' is not available on this worker: the TAESD weights for {family} latents "
                    f"({repo}) are not installed (see {setting}); use decoder 'approx' or 'full'"
                )
            try:
                vae = diffusers.AutoencoderTiny.from_pretrained(path, torch_dtype=self.dtype)  # type: ignore[no-untyped-call]
            except Exception as e:  # a broken folder: the same answer as a missing one
                log.exception("decoder taesd: cannot load %s", path)
                raise DecoderUnavailable(
                    f"decoder 'taesd' is not available on this worker: its TAESD weights ({repo}) do not load "
                    f"({type(e).__name__}); use decoder 'approx' or 'full'"
                ) from e
            self._taesd[family] = vae.to(self.device).eval()
            return self._taesd[family]

    def get(self, model: str) -> Any:
        """The text-to-image pipeline for ``model``, loaded once and kept warm."""
        with self._lock:
            if model in self._pipes:
                self._pipes.move_to_end(model)
                return self._pipes[model]
            pipe = self._load(model)
            self._pipes[model] = pipe
            while len(self._pipes) > self.settings.pipeline_cache_size:
                evicted, evicted_pipe = self._pipes.popitem(last=False)
                self._decoding_vaes.pop(id(evicted_pipe.vae), None)
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

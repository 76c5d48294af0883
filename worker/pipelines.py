"""Loading diffusers pipelines and keeping them warm per worker process.

A model is a folder under ``settings.models_dir``, a path, or a hub id. Loaded
pipelines live in a small LRU cache; each run gets its own scheduler instance
(``worker.schedulers.make_scheduler``) so nothing stateful is shared between runs.
On CUDA, SD 1.x/2.x and SDXL load in float16, SD3 and Flux in bfloat16 (Flux gives
NaNs in float16); on other devices everything is float32.
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
from stepanim.families import Family, family_of_class, model_family
from stepanim.settings import Settings
from worker.adapters import LoadedLoras
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


def source_family(source: str) -> Family | None:
    """The family of the model at ``source`` (a folder, or a hub id) before loading it; None when
    its model index cannot be read (diffusers then gives the error that matters)."""
    if Path(source).is_dir():
        try:
            return model_family(Path(source))
        except ValueError:
            return None
    try:  # a hub id: only its model_index.json (cached by diffusers, as the weights are)
        config = diffusers.DiffusionPipeline.load_config(source)
        return family_of_class(str(config.get("_class_name", "")))
    except Exception:  # offline, unknown id, unsupported class: from_pretrained says why
        return None


def dtype_for(device: str, family: Family | None) -> torch.dtype:
    """Half precision on CUDA: bfloat16 for SD3 and Flux (float16 overflows there), float16 for the rest."""
    if device != "cuda":
        return torch.float32
    return torch.bfloat16 if family in ("sd3", "flux") else torch.float16


_TAESD: dict[LatentFamily, tuple[str, str, str]] = {  # family -> (settings field, environment variable, weights)
    "sd": ("taesd_path", "STEPANIM_TAESD_PATH", "madebyollin/taesd"),
    "sdxl": ("taesdxl_path", "STEPANIM_TAESDXL_PATH", "madebyollin/taesdxl"),
    "sd3": ("taesd3_path", "STEPANIM_TAESD3_PATH", "madebyollin/taesd3"),
    "flux": ("taef1_path", "STEPANIM_TAEF1_PATH", "madebyollin/taef1"),
}


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
        self._pipes: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._decoding_vaes: dict[int, Any] = {}  # id(pipe.vae) -> decoding_vae(pipe.vae)
        self._taesd: dict[LatentFamily, Any] = {}
        self._loras: dict[int, LoadedLoras] = {}  # id(pipe) -> the LoRAs loaded into it (worker.adapters)

    def loras(self, pipe: Any) -> LoadedLoras:
        """The LoRAs loaded into ``pipe`` (a pipeline of this cache); they go with it."""
        with self._lock:
            return self._loras.setdefault(id(pipe), LoadedLoras(self.settings.lora_cache_size))

    def discard(self, model: str) -> None:
        """Forget ``model``'s pipeline (one whose adapters could not be taken off): its next use loads it afresh."""
        with self._lock:
            pipe = self._pipes.pop(model, None)
            if pipe is not None:
                self._forget(pipe)
                log.warning("dropped model %s", model)

    def _forget(self, pipe: Any) -> None:
        self._decoding_vaes.pop(id(pipe.vae), None)
        self._loras.pop(id(pipe), None)
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def full_vae(self, pipe: Any) -> Any:
        """The VAE that decodes ``pipe``'s frames (see :func:`decoding_vae`), made once per model."""
        with self._lock:
            key = id(pipe.vae)
            if key not in self._decoding_vaes:
                self._decoding_vaes[key] = decoding_vae(pipe.vae)
            return self._decoding_vaes[key]

    def taesd_path(self, family: LatentFamily) -> Path:
        field, _, repo = _TAESD[family]
        configured: Path | None = getattr(self.settings, field)
        return configured or self.settings.models_dir / repo.split("/")[1]

    def taesd(self, family: LatentFamily) -> Any:
        """The tiny autoencoder for ``family`` latents, loaded once from its local folder."""
        with self._lock:
            if family in self._taesd:
                return self._taesd[family]
            path = self.taesd_path(family)
            _, setting, repo = _TAESD[family]
            if not (path / "config.json").is_file():
                log.warning("decoder taesd: no weights for %s latents in %s", family, path)
                raise DecoderUnavailable(
                    f"decoder 'taesd' is not available on this worker: the TAESD weights for {family} latents "
                    f"({repo}) are not installed (see {setting}); use decoder 'approx' or 'full'"
                )
            try:
                vae = diffusers.AutoencoderTiny.from_pretrained(path, torch_dtype=dtype_for(self.device, family))  # type: ignore[no-untyped-call]
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
                self._forget(evicted_pipe)
                log.info("unloaded model %s", evicted)
            return pipe

    def _load(self, model: str) -> Any:
        source = resolve_model(model, self.settings)
        family = source_family(source)
        dtype = dtype_for(self.device, family)
        log.info("loading model %s from %s on %s (%s)", model, source, self.device, dtype)
        # Only SD 1.x/2.x pipelines have a safety checker (the others would log the keywords as unused).
        extra: dict[str, Any] = (
            {"safety_checker": None, "requires_safety_checker": False} if family in (None, "sd") else {}
        )
        try:
            pipe = diffusers.AutoPipelineForText2Image.from_pretrained(  # type: ignore[no-untyped-call]
                source, torch_dtype=dtype, **extra
            )
        except Exception as e:  # diffusers raises many kinds; all mean "cannot load this model"
            raise ModelError(f"cannot load model {model!r}: {type(e).__name__}: {e}") from e
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

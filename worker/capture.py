"""Per-step frame capture for diffusers pipelines, and decoding latents to RGB.

:class:`StepCapture` wraps one scheduler instance's ``step`` so that after each
completed sampling step the latents worth showing are kept; a pipeline's
``callback_on_step_end`` collects them with :meth:`StepCapture.pop`::

    capture = StepCapture(pipe.scheduler)
    capture.install()

    def on_step_end(pipe, i, t, kwargs):
        x = capture.pop()
        if x is not None:
            frames.append(x)
        return kwargs

Some schedulers call the model more than once per step (Heun and KDPM2 twice,
PNDM twice on its first step and four times on each Runge-Kutta step);
``pop()`` returns ``None`` after the calls that do not finish a step, so a run
of N inference steps gives exactly N frames.

The last step's frame is the run's result: when the scheduler has reached the end of
its schedule, the captured latents are that step's ``prev_sample`` (the latents the
pipeline decodes), in both modes. The last x0 prediction is that same image for most
deterministic samplers, but not for all (a multistep or second-order final update,
DDIM stopping at ``alphas_cumprod[0]``, DDPM's last variance...).

Flow-matching schedulers (SD3, Flux) keep ``x_t = (1 - sigma) x0 + sigma noise`` and
the model predicts the velocity ``v``: the denoised frame is ``x_t - sigma v`` with the
sigma of the step just taken. Flux's latents are packed 2x2 into tokens; they are
captured packed and unpacked before decoding (:func:`unpack_for_decoding`).
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import SchedulerMixin
from diffusers.utils.outputs import BaseOutput
from PIL import Image

from stepanim.families import FACTS, Family, family_of_class

log = logging.getLogger(__name__)

CaptureMode = Literal["denoised", "noisy"]
LatentFamily = Family

# Linear latent -> RGB factors (rows: latent channels, columns: R, G, B) and bias, for
# latents in the pipeline's scale (the latents the sampler works in: before undoing the
# VAE's scaling_factor and shift_factor), giving RGB in [-1, 1]. Published with ComfyUI's
# latent previews (comfy/latent_formats.py, ``latent_rgb_factors`` and
# ``latent_rgb_factors_bias`` of classes SD15, SDXL, SD3 and Flux), which ComfyUI applies
# to the sampler's x0, in that same scale.
LATENT_RGB: dict[LatentFamily, tuple[list[list[float]], list[float]]] = {
    "sd": (  # SD 1.x and 2.x
        [
            [0.3512, 0.2297, 0.3227],
            [0.3250, 0.4974, 0.2350],
            [-0.2829, 0.1762, 0.2721],
            [-0.2120, -0.2616, -0.7177],
        ],
        [0.0, 0.0, 0.0],
    ),
    "sdxl": (
        [
            [0.3651, 0.4232, 0.4341],
            [-0.2533, -0.0042, 0.1068],
            [0.1076, 0.1111, -0.0362],
            [-0.3165, -0.2492, -0.2188],
        ],
        [0.1084, -0.0175, -0.0011],
    ),
    "sd3": (  # SD3 and SD3.5: 16 channels
        [
            [-0.0922, -0.0175, 0.0749],
            [0.0311, 0.0633, 0.0954],
            [0.1994, 0.0927, 0.0458],
            [0.0856, 0.0339, 0.0902],
            [0.0587, 0.0272, -0.0496],
            [-0.0006, 0.1104, 0.0309],
            [0.0978, 0.0306, 0.0427],
            [-0.0042, 0.1038, 0.1358],
            [-0.0194, 0.0020, 0.0669],
            [-0.0488, 0.0130, -0.0268],
            [0.0922, 0.0988, 0.0951],
            [-0.0278, 0.0524, -0.0542],
            [0.0332, 0.0456, 0.0895],
            [-0.0069, -0.0030, -0.0810],
            [-0.0596, -0.0465, -0.0293],
            [-0.1448, -0.1463, -0.1189],
        ],
        [0.2394, 0.2135, 0.1925],
    ),
    "flux": (  # FLUX.1: 16 channels (unpacked from Flux's 2x2 tokens first)
        [
            [-0.0346, 0.0244, 0.0681],
            [0.0034, 0.0210, 0.0687],
            [0.0275, -0.0668, -0.0433],
            [-0.0174, 0.0160, 0.0617],
            [0.0859, 0.0721, 0.0329],
            [0.0004, 0.0383, 0.0115],
            [0.0405, 0.0861, 0.0915],
            [-0.0236, -0.0185, -0.0259],
            [-0.0245, 0.0250, 0.1180],
            [0.1008, 0.0755, -0.0421],
            [-0.0515, 0.0201, 0.0011],
            [0.0428, -0.0012, -0.0036],
            [0.0817, 0.0765, 0.0749],
            [-0.1264, -0.0522, -0.1103],
            [-0.0280, -0.0881, -0.0499],
            [-0.1262, -0.0982, -0.0778],
        ],
        [-0.0329, -0.0718, -0.0851],
    ),
}


class StepCapture:
    """Records the latents of the latest completed sampling step of one scheduler instance.

    ``mode="denoised"``: the model's prediction of the clean sample x0, i.e. what the
    image would be if sampling stopped now. ``mode="noisy"``: the noisy sample after
    the step, scaled to unit variance so it can be decoded like an image.
    Both are in the latent scale the pipeline decodes (before dividing by the VAE
    scaling factor).
    """

    def __init__(self, scheduler: SchedulerMixin, mode: CaptureMode = "denoised") -> None:
        self.scheduler: Any = scheduler  # step(), sigmas, ... are not declared on SchedulerMixin
        self.mode = mode
        self._latest: torch.Tensor | None = None
        self._original: Any = None  # the step() that install() wrapped
        self._had_own_step = False
        self._warned = False

    def install(self) -> StepCapture:
        """Wrap the scheduler instance's ``step`` (not its class). Installing twice is a no-op."""
        if self._original is not None:
            return self
        self._had_own_step = "step" in vars(self.scheduler)
        original = self._original = self.scheduler.step
        signature = inspect.signature(original)

        # Pipelines look at step()'s signature to decide what to pass (``generator``, ``eta``):
        # the wrapper must show the original's, or ancestral schedulers would draw unseeded noise.
        @functools.wraps(original)
        def step(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            wants_dict = bound.arguments.get("return_dict", True)
            bound.arguments["return_dict"] = True  # pred_original_sample is only in the dict form
            out = original(*bound.args, **bound.kwargs)
            self._record(out, bound.arguments)
            return out if wants_dict else out.to_tuple()

        self.scheduler.step = step
        return self

    def uninstall(self) -> None:
        """Give the scheduler back its own ``step``."""
        if self._original is None:
            return
        if self._had_own_step:
            self.scheduler.step = self._original
        else:
            del self.scheduler.step
        self._original = None

    def pop(self) -> torch.Tensor | None:
        """The latents of the latest step() call if it completed a step, else None; then clear them."""
        latest, self._latest = self._latest, None
        return latest

    def _record(self, out: BaseOutput, args: dict[str, Any]) -> None:
        if not _completes_step(self.scheduler):
            self._latest = None
            return
        if _at_end(self.scheduler, args["timestep"]):  # the result itself, whatever the mode
            self._latest = out["prev_sample"].detach().clone()
            return
        latents = _denoised(self.scheduler, out, args) if self.mode == "denoised" else None
        if latents is None:
            if self.mode == "denoised" and not self._warned:
                log.warning("%s: cannot predict x0, capturing noisy samples", type(self.scheduler).__name__)
                self._warned = True
            latents = out["prev_sample"] / _noise_scale(self.scheduler)
        self._latest = latents.detach().clone()


def _completes_step(scheduler: Any) -> bool:
    """Whether the step() call that just returned finished a whole sampling step."""
    if hasattr(scheduler, "prk_timesteps"):  # PNDM
        counter: int = scheduler.counter
        if not scheduler.config.skip_prk_steps and counter <= len(scheduler.prk_timesteps):
            return counter % 4 == 0  # Runge-Kutta: four model calls per step
        return counter != 1  # the first linear multistep step takes two calls
    if hasattr(scheduler, "state_in_first_order"):  # Heun, KDPM2: two calls per step ...
        step_index = scheduler.step_index
        finished = step_index is not None and step_index >= len(scheduler.timesteps)
        return bool(scheduler.state_in_first_order) or finished  # ... except a single final one
    return True


def _at_end(scheduler: Any, timestep: Any) -> bool:
    """Whether the step() call that just returned was the last of the scheduler's schedule."""
    timesteps = getattr(scheduler, "timesteps", None)
    if timesteps is None or len(timesteps) == 0:
        return False
    step_index = getattr(scheduler, "step_index", None)
    if step_index is not None:  # advanced by every step() call, also by the extra calls of Heun and KDPM2
        return int(step_index) >= len(timesteps)
    # DDIM, PNDM, DDPM: no step index; their last timestep is not repeated.
    last = timesteps[-1]
    return bool(float(timestep) == float(last))


def _is_flow(scheduler: Any) -> bool:
    """Flow-matching schedulers (SD3, Flux): x = (1 - sigma) x0 + sigma noise, the model predicts v."""
    config = scheduler.config
    return type(scheduler).__name__.startswith("FlowMatch") or (
        bool(getattr(config, "use_flow_sigmas", False)) or getattr(config, "prediction_type", None) == "flow_prediction"
    )


def _prediction_type(scheduler: Any) -> str | None:
    if type(scheduler).__name__.startswith("FlowMatch"):  # they have no prediction_type: always velocity
        return "flow_prediction"
    return getattr(scheduler.config, "prediction_type", None)


def _is_sigma_space(scheduler: Any) -> bool:
    """k-diffusion style schedulers (Euler, LMS, Heun, ...) keep x = x0 + sigma * noise."""
    return (
        hasattr(scheduler, "sigmas")
        and not hasattr(scheduler, "_sigma_to_alpha_sigma_t")
        and not _is_flow(scheduler)
        and float(getattr(scheduler, "init_noise_sigma", 1.0)) > 1.0
    )


def _noise_scale(scheduler: Any) -> float:
    """What to divide the sample after the step by to get unit variance."""
    if _is_sigma_space(scheduler) and scheduler.step_index is not None:
        sigma = float(scheduler.sigmas[min(scheduler.step_index, len(scheduler.sigmas) - 1)])
        return math.sqrt(sigma**2 + 1)
    return 1.0


def _input_coefficients(scheduler: Any, timestep: Any) -> tuple[float, float, float] | None:
    """``(c, alpha, sigma)`` with ``c * sample = alpha * x0 + sigma * noise`` for the step's input sample."""
    step_index = getattr(scheduler, "step_index", None)
    if hasattr(scheduler, "sigmas") and step_index is not None:
        sigma = scheduler.sigmas[step_index - 1]  # step() has already advanced step_index
        if type(scheduler).__name__.startswith("FlowMatch"):  # Euler, Heun for SD3 / Flux
            return 1.0, 1.0 - float(sigma), float(sigma)
        if hasattr(scheduler, "_sigma_to_alpha_sigma_t"):  # DPM-Solver, UniPC, DEIS (also with flow sigmas)
            alpha_t, sigma_t = scheduler._sigma_to_alpha_sigma_t(sigma)
            return 1.0, float(alpha_t), float(sigma_t)
        if _is_sigma_space(scheduler):
            c = 1 / math.sqrt(float(sigma) ** 2 + 1)
            return c, c, float(sigma) * c
    alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
    if alphas_cumprod is not None:  # DDIM, PNDM, DDPM: alpha space at the discrete timestep
        alpha_prod = float(alphas_cumprod[int(timestep)])
        return 1.0, math.sqrt(alpha_prod), math.sqrt(1 - alpha_prod)
    return None


def _denoised(scheduler: Any, out: BaseOutput, args: dict[str, Any]) -> torch.Tensor | None:
    """The model's x0 prediction for this step, or None when it cannot be worked out."""
    predicted: torch.Tensor | None = out.get("pred_original_sample")
    if predicted is not None:
        return predicted
    model_output: torch.Tensor = args["model_output"]
    sample: torch.Tensor = args["sample"]
    coefficients = _input_coefficients(scheduler, args["timestep"])
    if coefficients is None:
        return None
    c, alpha, sigma = coefficients
    x = sample.float() * c
    output = model_output.float()
    prediction_type = _prediction_type(scheduler)
    if prediction_type == "epsilon":
        x0 = (x - sigma * output) / alpha
    elif prediction_type == "v_prediction":
        x0 = alpha * x - sigma * output
    elif prediction_type == "sample":
        x0 = output
    elif prediction_type == "flow_prediction":
        x0 = x - sigma * output
    else:
        return None
    return x0.to(sample.dtype)


def latent_family(pipe: Any) -> LatentFamily:
    """Which latent space a pipeline samples in (for :func:`decode_approx`, TAESD, the samplers that fit):
    told by its class, checked against its VAE's latent channels. ValueError for any other pipeline."""
    family = family_of_class(type(pipe).__name__)
    config = getattr(getattr(pipe, "vae", None), "config", None)
    channels = getattr(config, "latent_channels", None) if config is not None else None
    if channels is not None and channels != FACTS[family].latent_channels:
        raise ValueError(
            f"{type(pipe).__name__}: a {family} pipeline with a {channels}-channel VAE "
            f"({FACTS[family].latent_channels} expected)"
        )
    return family


def unpack_for_decoding(pipe: Any, family: LatentFamily, *, width: int, height: int) -> Any:
    """A function giving captured latents their VAE layout, Bx16xhxw: Flux's packed tokens
    (B x h*w/4 x 64) through the pipeline class's own ``_unpack_latents``; others as they are."""
    if family != "flux":
        return lambda latents: latents
    unpack = type(pipe)._unpack_latents
    scale = pipe.vae_scale_factor
    return lambda latents: unpack(latents, height, width, scale) if latents.ndim == 3 else latents


def _to_images(rgb: torch.Tensor, size: tuple[int, int] | None) -> list[np.ndarray]:
    """``rgb``: Bx3xHxW in [-1, 1] -> HxWx3 uint8 arrays, resized to ``size`` (height, width) when given."""
    x = rgb.float()
    if size is not None and tuple(x.shape[-2:]) != size:
        if size[0] < x.shape[-2]:  # a quarter-size preview
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        else:  # approx latents (1/8 of the image), or an upscaled frame
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    x = ((x + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8)
    return list(x.permute(0, 2, 3, 1).cpu().numpy())


def decode_approx(
    latents: torch.Tensor, family: LatentFamily = "sd", *, size: tuple[int, int] | None = None
) -> list[np.ndarray]:
    """Cheap preview: a linear latent->RGB projection, one HxWx3 uint8 image per batch item.

    At latent size (1/8 of the image) unless ``size`` (height, width) asks for another, made by
    Pillow's bicubic resampling of the 8-bit preview: for a 512² frame 3 ms of CPU against 16 ms
    for torch's interpolate (docs/performance.md, "Library code at a real model's step").
    """
    factors, bias = _APPROX[family]
    x = latents.detach().float().cpu()
    if x.ndim == 3:  # a single CxHxW latent
        x = x.unsqueeze(0)
    rgb = torch.einsum("bchw,cr->brhw", x, factors) + bias[:, None, None]  # in [-1, 1]
    pixels = list(((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    if size is None or pixels[0].shape[:2] == size:
        return pixels
    resample = Image.Resampling.BICUBIC
    return [np.asarray(Image.fromarray(image).resize((size[1], size[0]), resample)) for image in pixels]


_APPROX = {
    family: (torch.tensor(m, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
    for family, (m, b) in LATENT_RGB.items()
}


def decode_full(vae: Any, latents: torch.Tensor, *, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Decode a batch of latents with a VAE (or TAESD's ``AutoencoderTiny``): one HxWx3 uint8 image per item.

    At the decoder's size (8x the latents) unless ``size`` (height, width) asks for another.
    """
    config = vae.config
    x = latents.detach().to(device=vae.device, dtype=vae.dtype)
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:  # SDXL-style VAEs with per-channel statistics
        shape = (1, -1, 1, 1)
        mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(shape)
        std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(shape)
        x = x * std_t / config.scaling_factor + mean_t
    else:
        x = x / config.scaling_factor
        if getattr(config, "shift_factor", None) is not None:
            x = x + config.shift_factor
    with torch.inference_mode():
        return _to_images(vae.decode(x, return_dict=False)[0], size)

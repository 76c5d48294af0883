"""The request schema of ``POST /animations``: what a client may ask for, checked by pydantic.

Pure data and validation; no I/O. Limits that depend on a server's settings or on the model
are checked at admission (``api.routes.animations``); what the encoder's ffmpeg can do, by
``stepanim.capabilities``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from stepanim.adapters import (
    MAX_EMBEDDINGS,
    MAX_LORAS,
    EmbeddingName,
    LoraRequest,
    tokens_in_prompt,
    unique_names,
)
from stepanim.samplers import REGISTRY, SAMPLER_IDS, SCHEDULE_LABELS, Schedule, parse_sampler_name
from stepanim.text import Text
from stepanim.video_options import MAX_RENDITIONS, AnimationOptions, VideoOptions

# Sampler ids come from the one registry (stepanim.samplers), which also says which diffusers
# scheduler each is and which model families it fits; only the render worker imports the classes.
if TYPE_CHECKING:
    SamplerId = str
else:
    SamplerId = Literal[SAMPLER_IDS]

_SAMPLER_HELP = ", ".join(f"{s.id} ({s.label})" for s in REGISTRY)
_SCHEDULE_HELP = ", ".join(f"{s} ({label})" for s, label in SCHEDULE_LABELS.items())

MAX_SEED = 2**32 - 1

WebhookEvent = Literal[
    "animation.started", "animation.progress", "animation.succeeded", "animation.failed", "animation.canceled"
]
TERMINAL_WEBHOOK_EVENTS: list[WebhookEvent] = ["animation.succeeded", "animation.failed", "animation.canceled"]


class FrameSource(StrEnum):
    """What a frame shows: the denoised prediction at that step, or the noisy sample."""

    denoised = "denoised"
    noisy = "noisy"


class FrameDecoder(StrEnum):
    """How captured latents become pixels: linear approximation, tiny autoencoder, or the full VAE."""

    approx = "approx"
    taesd = "taesd"
    full = "full"


MIN_SIDE = 32  # the digits demo model draws 32x32 images
MAX_SIDE = 2048
MAX_UPSCALE = 4
MAX_FRAME_SIDE = 4096


class FrameResolution(StrEnum):
    """Frame size: a quarter of each side (the extension's preview size) or the full image."""

    quarter = "quarter"
    full = "full"


class CaptureOptions(BaseModel):
    """What each per-step frame shows, and how it is decoded."""

    model_config = ConfigDict(extra="forbid")

    source: FrameSource = Field(
        FrameSource.denoised,
        description="denoised: the image the model predicts if sampling stopped at that step; "
        "noisy: the noisy sample itself.",
    )
    decoder: FrameDecoder = Field(
        FrameDecoder.full,
        description="full: the model's VAE (batched); taesd: the tiny autoencoder, when the workers have its "
        "weights; approx: a linear latent-to-RGB projection, nearly free.",
    )
    resolution: FrameResolution = Field(
        FrameResolution.full, description="Frame size: full (width x height) or quarter (width/4 x height/4)."
    )
    upscale: StrictInt = Field(
        1,
        ge=1,
        le=MAX_UPSCALE,
        description="Enlarge every frame by this factor after decoding (bicubic), e.g. 2 for a model that draws "
        f"small images such as the 32x32 digits demo. The enlarged frame may be at most {MAX_FRAME_SIDE} pixels a "
        "side.",
        examples=[1],
    )


UPLOAD_ID_PATTERN = r"^[0-9a-f]{32}$"
DEFAULT_STRENGTH = 0.75


class InitImage(BaseModel):
    """The image img2img starts from: exactly one of `upload_id` (from POST /uploads), `data` (base64) or `url`."""

    model_config = ConfigDict(extra="forbid")

    upload_id: str | None = Field(
        None,
        pattern=UPLOAD_ID_PATTERN,
        description="Id returned by POST /uploads.",
        examples=["9b2f0c1a2b3c4d4e5f8a9b0c1d2e3f4a"],
    )
    data: str | None = Field(
        None,
        min_length=1,
        description="The image file (PNG, JPEG or WebP) in base64, optionally as a data: URL. "
        "The server stores it as an upload and keeps only its id.",
        examples=["data:image/png;base64,iVBORw0KGgo..."],
    )
    url: AnyHttpUrl | None = Field(
        None,
        description="A public http(s) URL of the image (PNG, JPEG or WebP). The server fetches it once, when the "
        "job is created (no redirects; private and internal addresses are refused), stores it as an upload and "
        "keeps only its id.",
        examples=["https://example.com/start.png"],
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> InitImage:
        given = [name for name in ("upload_id", "data", "url") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of upload_id, data or url")
        return self


class AnimationCreate(BaseModel):
    """Body of POST /animations."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "prompt": "a lighthouse on a cliff at dawn",
                    "steps": 30,
                    "scheduler": "euler_a",
                    "seed": 1234,
                    "animation": {"duration": 3, "codec": "h264"},
                }
            ]
        },
    )

    prompt: Text = Field(
        min_length=1,
        description="What to draw. Control characters (other than tab and newline) and lone surrogates are refused.",
        examples=["a lighthouse on a cliff at dawn"],
    )
    negative_prompt: Text = Field("", description="What to steer away from.", examples=["blurry"])
    model: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$",
        max_length=200,
        description="A model in the workers' models folder, or a hub id (org/name); the server default when omitted.",
        examples=["tiny-sd"],
    )
    width: StrictInt = Field(
        512, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8, description="Image width in pixels.", examples=[512]
    )
    height: StrictInt = Field(
        512, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8, description="Image height in pixels.", examples=[512]
    )
    steps: StrictInt = Field(20, ge=1, le=999, description="Denoising steps; one frame each.", examples=[30])
    scheduler: SamplerId | None = Field(
        None,
        description=f"Sampler, by stable id: {_SAMPLER_HELP}. A web UI's name is accepted too, with its "
        'schedule type ("DPM++ 2M Karras" is dpmpp_2m with schedule karras). Which fit a model depends on '
        "its family (GET /capabilities); omitted: the model's default (euler_a for SD 1.x/2.x and SDXL, euler "
        "for SD3 and Flux).",
        examples=["euler_a"],
    )
    schedule: Schedule = Field(
        "default",
        description=f"Schedule type of the sampler's noise levels: {_SCHEDULE_HELP}; default is the model's own.",
        examples=["karras"],
    )
    guidance_scale: float = Field(7.5, ge=0, le=30, description="Classifier-free guidance scale.", examples=[7.5])
    seed: StrictInt | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        description="Random seed; chosen by the server (and reported) when omitted.",
        examples=[1234],
    )
    animation: AnimationOptions = Field(default_factory=AnimationOptions, description="How the steps become a video.")
    webhook: AnyHttpUrl | None = Field(
        None,
        description="Receives signed POSTs (Standard Webhooks) for `webhook_events`; must be a public http(s) URL.",
        examples=["https://example.com/hooks/stepanim"],
    )
    webhook_events: list[WebhookEvent] = Field(
        default_factory=lambda: list(TERMINAL_WEBHOOK_EVENTS),
        min_length=1,
        max_length=5,
        description="Which events are sent to `webhook`: started, progress (throttled, best effort) and the "
        "terminal ones (retried for at least 24 h). Default: the terminal events.",
        examples=[["animation.started", "animation.succeeded", "animation.failed", "animation.canceled"]],
    )
    capture: CaptureOptions = Field(
        default_factory=CaptureOptions, description="Frame source, decoder and frame size of the per-step frames."
    )
    init_image: InitImage | None = Field(None, description="Start from this image (img2img) instead of noise.")
    strength: float | None = Field(
        None,
        validate_default=True,
        gt=0,
        le=1,
        description="img2img only (default 0.75): how far the init image is noised, from 0 (kept) to 1 "
        "(replaced); img2img runs int(steps x strength) steps.",
        examples=[0.6],
    )
    batch_size: StrictInt = Field(
        1,
        ge=1,
        le=8,
        description="Images rendered together, one animation each; image i uses seed + i.",
        examples=[1],
    )
    renditions: list[VideoOptions] = Field(
        default_factory=list,
        max_length=MAX_RENDITIONS,
        description="More videos to make from the same frames (other codec, duration, interpolation...), "
        "ready when the job succeeds.",
        examples=[[{"codec": "vp9", "duration": 3}]],
    )
    loras: list[LoraRequest] = Field(
        default_factory=list,
        max_length=MAX_LORAS,
        description="LoRAs from the workers' adapters folder, each with its weight (at most the server's "
        "`max_loras`). Each must fit the model (GET /capabilities lists the adapters and the models each fits); "
        "they apply to this job only.",
        examples=[[{"name": "watercolor", "weight": 0.8}]],
    )
    embeddings: list[EmbeddingName] = Field(
        default_factory=list,
        max_length=MAX_EMBEDDINGS,
        description="Textual-inversion embeddings from the workers' adapters folder, by name. An embedding's name is "
        "its token: write it in the prompt or negative prompt where it should act, as in a web UI (a token in a "
        "prompt does nothing unless its embedding is named here). They apply to this job only.",
        examples=[["mystyle"]],
    )

    @model_validator(mode="before")
    @classmethod
    def _web_ui_sampler_names(cls, data: Any) -> Any:
        """``"DPM++ 2M Karras"`` -> scheduler ``dpmpp_2m``, schedule ``karras`` (a schedule given too must agree)."""
        if not isinstance(data, dict) or not isinstance(data.get("scheduler"), str):
            return data
        name = data["scheduler"]
        if name in SAMPLER_IDS:
            return data
        try:
            sampler_id, schedule = parse_sampler_name(name)
        except ValueError:
            return data  # refused by the field itself, with the list of ids
        given = data.get("schedule")
        if schedule != "default" and given not in (None, "default", schedule):
            raise ValueError(f"schedule: {given!r} contradicts the scheduler name {name!r} ({schedule})")
        return {**data, "scheduler": sampler_id, **({"schedule": schedule} if schedule != "default" else {})}

    @model_validator(mode="after")
    def _skip_leaves_a_frame(self) -> AnimationCreate:
        if self.animation.skip_steps >= self.steps:
            raise ValueError(
                f"animation.skip_steps ({self.animation.skip_steps}) must be less than steps ({self.steps})"
            )
        for index, rendition in enumerate(self.renditions):
            if rendition.skip_steps >= self.steps:
                raise ValueError(
                    f"renditions.{index}.skip_steps ({rendition.skip_steps}) must be less than steps ({self.steps})"
                )
        side = max(self.width, self.height) * self.capture.upscale
        if side > MAX_FRAME_SIDE:
            raise ValueError(
                f"capture.upscale ({self.capture.upscale}) makes {side}-pixel frames; at most {MAX_FRAME_SIDE} "
                "pixels a side"
            )
        if self.renditions and self.animation.frames_only:
            raise ValueError("renditions: a frames_only job makes no video; ask for renditions later instead")
        return self

    @field_validator("loras")
    @classmethod
    def _loras_named_once(cls, loras: list[LoraRequest]) -> list[LoraRequest]:
        unique_names([lora.name for lora in loras], "LoRA")
        return loras

    @field_validator("embeddings")
    @classmethod
    def _embeddings_named_once_and_used(cls, embeddings: list[str], info: ValidationInfo) -> list[str]:
        unique_names(embeddings, "embedding")
        if "prompt" in info.data:  # else the prompt failed validation itself
            tokens_in_prompt(embeddings, info.data["prompt"], info.data.get("negative_prompt", ""))
        return embeddings

    @field_validator("strength")
    @classmethod
    def _img2img_runs_a_step(cls, strength: float | None, info: ValidationInfo) -> float | None:
        # A field validator (not a model one) so that errors name the field; it sees the fields before it.
        if "init_image" not in info.data or "steps" not in info.data:
            return strength  # those failed validation themselves
        if info.data["init_image"] is None:
            if strength is not None:
                raise ValueError("applies to img2img only: give init_image as well")
            return strength
        steps: int = info.data["steps"]
        value = DEFAULT_STRENGTH if strength is None else strength
        run = min(int(steps * value), steps)
        if run < 1:
            raise ValueError(f"steps x strength ({steps} x {value}) must be at least 1")
        animation: AnimationOptions | None = info.data.get("animation")
        if animation is not None and animation.skip_steps >= run:
            raise ValueError(
                f"animation.skip_steps ({animation.skip_steps}) must be less than the {run} steps "
                "img2img runs (steps x strength)"
            )
        return strength

    def denoising_steps(self) -> int:
        """Steps the sampler runs, one frame each: ``steps``; for img2img ``int(steps * strength)``, as in diffusers."""
        if self.init_image is None:
            return self.steps
        return min(int(self.steps * self.img2img_strength()), self.steps)

    def img2img_strength(self) -> float:
        return DEFAULT_STRENGTH if self.strength is None else self.strength

    def seeds(self, seed: int) -> list[int]:
        """The real seed of each image in the batch: ``seed + batch_index``."""
        return [seed + i for i in range(self.batch_size)]

"""Typed models of the API's requests and responses, written by hand from ``openapi.yaml``.

Each class is named after its schema in ``components.schemas``, and
``tests/unit/test_client_models.py`` checks, in both directions, that every schema and every
field there has its counterpart here with the same type, required-ness and default: the
client and the OpenAPI document cannot drift apart silently.

Request models refuse unknown fields (a typo fails here, not on the server); value ranges
are left to the server, whose 422 names the field and the limit. Response models ignore
fields they do not know, so that a newer server does not break an older client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Enumerations (string enums in the OpenAPI document).
Codec = Literal["h264", "h265", "vp9", "av1", "prores", "gif"]
Interpolation = Literal["none", "blend", "mci"]
JobStatus = Literal["queued", "rendering", "encoding", "succeeded", "failed", "canceled"]
RenditionStatus = Literal["queued", "encoding", "succeeded", "failed"]
FrameSource = Literal["denoised", "noisy"]
FrameDecoder = Literal["approx", "taesd", "full"]
FrameResolution = Literal["quarter", "full"]
Scheduler = Literal[
    "euler",
    "euler_a",
    "lms",
    "heun",
    "dpm2",
    "dpm2_a",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_3m",
    "dpmpp_sde",
    "unipc",
    "deis",
    "ddim",
    "plms",
    "ddpm",
    "lcm",
    "tcd",
]
Schedule = Literal["default", "karras", "exponential", "beta", "sgm_uniform"]
WebhookEvent = Literal[
    "animation.started", "animation.progress", "animation.succeeded", "animation.failed", "animation.canceled"
]
DeliveryOutcome = Literal["delivered", "retrying", "failed", "gone"]

TERMINAL_WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("animation.succeeded", "animation.failed", "animation.canceled")
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})
TERMINAL_RENDITION_STATUSES: frozenset[str] = frozenset({"succeeded", "failed"})

ENUMS: dict[str, Any] = {
    "Codec": Codec,
    "Interpolation": Interpolation,
    "JobStatus": JobStatus,
    "RenditionStatus": RenditionStatus,
    "FrameSource": FrameSource,
    "FrameDecoder": FrameDecoder,
    "FrameResolution": FrameResolution,
}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


# Requests


class VideoOptions(_Request):
    """How captured steps become one video: the body of POST /animations/{id}/renditions."""

    duration: float = 5.0
    fps: int = 30
    codec: Codec = "h264"
    interpolation: Interpolation = "none"
    skip_steps: int = 0
    hold_last: float = 0.0


class AnimationOptions(VideoOptions):
    """The video of an animation, and what happens to its frames."""

    run_on_incomplete: bool = False
    keep_frames: bool = True
    frames_only: bool = False


class CaptureOptions(_Request):
    source: FrameSource = "denoised"
    decoder: FrameDecoder = "full"
    resolution: FrameResolution = "full"
    upscale: int = 1


class InitImage(_Request):
    """Exactly one of ``upload_id`` (from POST /uploads), ``data`` (base64) or ``url``."""

    upload_id: str | None = None
    data: str | None = None
    url: str | None = None


class LoraRequest(_Request):
    """A LoRA of the workers' adapters folder and its weight (1 as trained, 0 no effect)."""

    name: str
    weight: float = 1.0


class AnimationCreate(_Request):
    """Body of POST /animations. Only the fields you set are sent; the server fills in the rest."""

    prompt: str
    negative_prompt: str = ""
    model: str | None = None
    width: int = 512
    height: int = 512
    steps: int = 20
    scheduler: Scheduler | None = None  # the model's default sampler
    schedule: Schedule = "default"
    guidance_scale: float = 7.5
    seed: int | None = None
    animation: AnimationOptions = Field(default_factory=AnimationOptions)
    webhook: str | None = None
    webhook_events: list[WebhookEvent] = Field(default_factory=lambda: list(TERMINAL_WEBHOOK_EVENTS))
    capture: CaptureOptions = Field(default_factory=CaptureOptions)
    init_image: InitImage | None = None
    strength: float | None = None
    batch_size: int = 1
    renditions: list[VideoOptions] = Field(default_factory=list)
    loras: list[LoraRequest] = Field(default_factory=list)
    embeddings: list[str] = Field(default_factory=list)  # each one's name is its token: write it in the prompt


# Responses


class ProgressPublic(_Response):
    stage: Literal["loading_model", "sampling"] | None = None
    step: int
    total: int
    latest_frame_url: str | None = None
    latest_frame_urls: list[str] = Field(default_factory=list)
    elapsed_seconds: float | None = None
    eta_seconds: float | None = None


class ErrorInfo(_Response):
    """Why a job or rendition failed."""

    code: str
    message: str


class VideoPublic(_Response):
    url: str
    filename: str
    content_type: str
    codec: Codec
    size_bytes: int
    duration: float
    frames: int


class ImagePublic(_Response):
    batch_index: int
    seed: int
    frames: int
    video: VideoPublic | None = None


class JobUrls(_Response):
    get: str
    cancel: str
    stream: str


class WebhookDeliveryPublic(_Response):
    webhook_id: str
    event: str
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float
    outcome: DeliveryOutcome
    next_attempt_at: datetime | None


class RenditionPublic(_Response):
    id: str
    status: RenditionStatus
    options: VideoOptions
    created_at: datetime
    finished_at: datetime | None
    video: VideoPublic | None
    videos: list[VideoPublic] = Field(default_factory=list)
    error: ErrorInfo | None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_RENDITION_STATUSES


class FramesArchivePublic(_Response):
    url: str
    filename: str
    size_bytes: int
    frames: int


class _Record(_Response):
    """What an animation job and a grid both have first: an id, a status and the times it changed."""

    id: str
    status: JobStatus
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        """It reached its final status (succeeded, failed or canceled)."""
        return self.status in TERMINAL_STATUSES


class AnimationPublic(_Record):
    """An animation job, as GET /animations/{id} returns it."""

    model: str
    seed: int
    progress: ProgressPublic
    images: list[ImagePublic] = Field(default_factory=list)
    error: ErrorInfo | None
    warnings: list[str] = Field(default_factory=list)
    video: VideoPublic | None
    urls: JobUrls
    cancel_requested: bool = False
    webhook_deliveries: list[WebhookDeliveryPublic] = Field(default_factory=list)
    request: AnimationCreate
    renditions: list[RenditionPublic] = Field(default_factory=list)
    frame_urls: list[str] | None = None
    frames_zip: FramesArchivePublic | None = None


Animation = AnimationPublic  # the short name


class FramePublic(_Response):
    step: int
    url: str
    filename: str


class FramesPublic(_Response):
    """The frames of one image of a job, in step order."""

    batch_index: int
    images: int
    frames: list[FramePublic]
    total: int
    complete: bool


class AnimationList(_Response):
    data: list[AnimationPublic]
    next_cursor: str | None


class UploadPublic(_Response):
    id: str
    content_type: str
    width: int
    height: int
    size_bytes: int


class ModelInfo(_Response):
    """A render worker's local model: its family, what fits it, and the defaults the server applies."""

    name: str
    description: str = ""
    example_prompt: str | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)
    family: Literal["sd", "sdxl", "sd3", "flux"] | None = None
    size_multiple: int = 8
    negative_prompt: bool = True
    img2img: bool = True
    default_sampler: str | None = None
    samplers: dict[str, list[str]] = Field(default_factory=dict)
    img2img_samplers: dict[str, list[str]] = Field(default_factory=dict)
    vocabulary: list[str] | None = None
    vocabulary_hint: str | None = None


class Limits(_Response):
    """The server's limits on a request."""

    max_steps: int
    min_side: int
    max_side: int
    max_pixels: int
    max_prompt_chars: int
    max_duration_seconds: float
    max_fps: int
    max_hold_last_seconds: float
    max_batch_size: int
    max_loras: int
    max_grid_cells: int
    max_renditions: int
    max_upscale: int
    max_frame_side: int
    max_upload_bytes: int
    max_wait_seconds: int


class SamplerPublic(_Response):
    id: str
    label: str
    max_steps: int | None


class SchedulePublic(_Response):
    id: str
    label: str


class AdapterInfo(_Response):
    """A LoRA or embedding of the render workers, with the models it fits."""

    name: str
    kind: Literal["lora", "embedding"]
    families: list[Literal["sd", "sdxl", "sd3", "flux"]] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    token: str | None = None
    vectors: int | None = None
    note: str | None = None


class CapabilitiesPublic(_Response):
    codecs: list[Codec]
    interpolations: list[Interpolation]
    schedulers: list[str]
    samplers: list[SamplerPublic]
    schedules: list[SchedulePublic]
    limits: Limits
    default_model: str
    models: list[ModelInfo]
    adapters: list[AdapterInfo] = Field(default_factory=list)
    missing: dict[str, str]
    ffmpeg_version: str
    probed_at: str


class SecretPublic(_Response):
    secret: str
    expires_at: datetime | None


class WebhookSecrets(_Response):
    current: str
    secrets: list[SecretPublic]


class WebhookPayload(_Response):
    """The body of a webhook delivery."""

    type: WebhookEvent
    timestamp: datetime
    data: AnimationPublic


# Grids

GridField = Literal[
    "scheduler", "schedule", "steps", "seed", "guidance_scale", "model", "prompt", "negative_prompt", "strength", "lora"
]


class GridAxis(_Request):
    """One axis of a grid: a request field and its values (prompt fields: search and replace)."""

    field: GridField
    values: list[str | int | float]


class GridCreate(_Request):
    """The body of POST /grids: what every cell renders, and the axes."""

    base: AnimationCreate
    x: GridAxis
    y: GridAxis | None = None
    allow_partial: bool = False


class GridProgress(_Response):
    cells_done: int
    cells_total: int
    steps_done: int
    steps_total: int


class GridCellPublic(_Response):
    index: int
    x: int
    y: int
    x_label: str
    y_label: str | None
    id: str  # its own animation job
    status: JobStatus | None
    step: int
    total: int
    video: VideoPublic | None
    error: ErrorInfo | None


class GridUrls(_Response):
    get: str
    cancel: str
    stream: str


class GridPublic(_Record):
    """A grid, as GET /grids/{id} returns it."""

    seed: int
    x: GridAxis
    y: GridAxis | None
    allow_partial: bool
    progress: GridProgress
    cells: list[GridCellPublic]
    video: VideoPublic | None
    error: ErrorInfo | None
    warnings: list[str] = Field(default_factory=list)
    urls: GridUrls
    webhook_deliveries: list[WebhookDeliveryPublic] = Field(default_factory=list)
    base: AnimationCreate
    renditions: list[RenditionPublic] = Field(default_factory=list)


Grid = GridPublic  # the short name


class GridWebhookPayload(_Response):
    """The body of a grid's webhook delivery."""

    type: Literal["grid.started", "grid.succeeded", "grid.failed", "grid.canceled"]
    timestamp: datetime
    data: GridPublic


class ErrorBody(_Response):
    code: str
    message: str
    details: list[dict[str, Any]] = Field([])


class ErrorResponse(_Response):
    """The one shape of every error response."""

    error: ErrorBody


# Every schema of openapi.yaml's components, by name (checked by tests/unit/test_client_models.py).
SCHEMAS: dict[str, type[BaseModel]] = {
    model.__name__: model
    for model in (
        VideoOptions,
        AnimationOptions,
        CaptureOptions,
        InitImage,
        AnimationCreate,
        ProgressPublic,
        ImagePublic,
        ErrorInfo,
        VideoPublic,
        JobUrls,
        WebhookDeliveryPublic,
        RenditionPublic,
        FramesArchivePublic,
        AnimationPublic,
        AnimationList,
        FramePublic,
        FramesPublic,
        UploadPublic,
        CapabilitiesPublic,
        Limits,
        SamplerPublic,
        SchedulePublic,
        ModelInfo,
        AdapterInfo,
        LoraRequest,
        SecretPublic,
        WebhookSecrets,
        WebhookPayload,
        GridAxis,
        GridCreate,
        GridProgress,
        GridCellPublic,
        GridUrls,
        GridPublic,
        GridWebhookPayload,
        ErrorBody,
        ErrorResponse,
    )
}

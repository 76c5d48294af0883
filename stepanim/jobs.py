"""The job model shared by every process: request schema, status enum, job record.

Pure data and validation; no I/O. Status changes go through ``stepanim.lifecycle``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator


class JobStatus(StrEnum):
    """Where a job is: queued → rendering → encoding → succeeded, or failed / canceled."""

    queued = "queued"
    rendering = "rendering"
    encoding = "encoding"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"

    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.canceled})

# Which status may follow which. Terminal states have no successor.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.queued: frozenset({JobStatus.rendering, JobStatus.failed, JobStatus.canceled}),
    JobStatus.rendering: frozenset({JobStatus.encoding, JobStatus.succeeded, JobStatus.failed, JobStatus.canceled}),
    JobStatus.encoding: frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.canceled}),
    JobStatus.succeeded: frozenset(),
    JobStatus.failed: frozenset(),
    JobStatus.canceled: frozenset(),
}


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in TRANSITIONS[current]


class Codec(StrEnum):
    """Video codec (the extension's table; gif is an animated GIF)."""

    h264 = "h264"
    h265 = "h265"
    vp9 = "vp9"
    av1 = "av1"
    prores = "prores"
    gif = "gif"


class Interpolation(StrEnum):
    """How frames between steps are made: none (hold), blend (cross-fade), mci (motion compensated)."""

    none = "none"
    blend = "blend"
    mci = "mci"


# Stable public scheduler names -> diffusers scheduler class and config overrides.
# The API validates against the keys; only the render worker imports the classes.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "plms": ("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
}

SchedulerName = Literal["euler", "euler_a", "ddim", "plms", "lms", "heun", "dpmpp_2m", "dpmpp_2m_sde", "unipc"]

MAX_SEED = 2**32 - 1

WebhookEvent = Literal[
    "animation.started", "animation.progress", "animation.succeeded", "animation.failed", "animation.canceled"
]
TERMINAL_WEBHOOK_EVENTS: list[WebhookEvent] = ["animation.succeeded", "animation.failed", "animation.canceled"]


class AnimationOptions(BaseModel):
    """How the captured steps become a video."""

    model_config = ConfigDict(extra="forbid")

    duration: float = Field(5.0, ge=0.5, le=120, description="Length of the step animation in seconds.", examples=[3])
    fps: int = Field(30, ge=1, le=60, description="Output frames per second.", examples=[30])
    codec: Codec = Field(Codec.h264, description="Video codec; see GET /capabilities.")
    interpolation: Interpolation = Field(
        Interpolation.none, description="none holds each step; blend cross-fades; mci is motion compensated."
    )
    skip_steps: int = Field(0, ge=0, description="Leave out this many initial (noisiest) steps.", examples=[0])
    hold_last: float = Field(
        0.0, ge=0, le=30, description="Seconds the final frame is held after the animation.", examples=[1]
    )


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

    prompt: str = Field(min_length=1, description="What to draw.", examples=["a lighthouse on a cliff at dawn"])
    negative_prompt: str = Field("", description="What to steer away from.", examples=["blurry"])
    model: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$",
        max_length=200,
        description="A model in the workers' models folder, or a hub id (org/name); the server default when omitted.",
        examples=["tiny-sd"],
    )
    width: int = Field(512, ge=64, le=2048, multiple_of=8, description="Image width in pixels.", examples=[512])
    height: int = Field(512, ge=64, le=2048, multiple_of=8, description="Image height in pixels.", examples=[512])
    steps: int = Field(20, ge=1, le=999, description="Denoising steps; one frame each.", examples=[30])
    scheduler: SchedulerName = Field("euler_a", description="Sampler, by stable name.", examples=["euler_a"])
    guidance_scale: float = Field(7.5, ge=0, le=30, description="Classifier-free guidance scale.", examples=[7.5])
    seed: int | None = Field(
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

    @model_validator(mode="after")
    def _skip_leaves_a_frame(self) -> AnimationCreate:
        if self.animation.skip_steps >= self.steps:
            raise ValueError(
                f"animation.skip_steps ({self.animation.skip_steps}) must be less than steps ({self.steps})"
            )
        return self


class Progress(BaseModel):
    step: int = Field(0, description="Steps captured so far.")
    total: int = Field(0, description="Steps requested.")
    latest_frame: str | None = Field(None, description="Storage key of the newest frame (internal).")


class ErrorInfo(BaseModel):
    """Why a job failed."""

    code: str = Field(description="Stable error code.", examples=["model_error"])
    message: str = Field(description="What went wrong.", examples=["no model 'x' in the models folder"])


class VideoInfo(BaseModel):
    key: str
    filename: str
    content_type: str
    codec: Codec
    size_bytes: int
    duration: float
    frames: int


class Job(BaseModel):
    """The record kept in Redis for each animation."""

    id: str
    status: JobStatus = JobStatus.queued
    request: AnimationCreate
    model: str
    seed: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress = Field(default_factory=Progress)
    error: ErrorInfo | None = None
    frames: list[str] = Field(default_factory=list, description="Storage keys of the captured frames.")
    video: VideoInfo | None = None
    tenant: str | None = Field(None, description="Owner: the tenant of the API key that created the job.")
    key_id: str | None = Field(None, description="The API key that created the job (quota, webhook secret).")


def utcnow() -> datetime:
    return datetime.now(UTC)

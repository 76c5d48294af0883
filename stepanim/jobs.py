"""The job model shared by every process: request schema, status enum, job record.

Pure data and validation; no I/O. Status changes go through ``stepanim.lifecycle``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, model_validator


class JobStatus(StrEnum):
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
    h264 = "h264"
    h265 = "h265"
    vp9 = "vp9"
    av1 = "av1"
    prores = "prores"
    gif = "gif"


class Interpolation(StrEnum):
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


class VideoOptions(BaseModel):
    """How captured steps become one video: the options of a rendition."""

    model_config = ConfigDict(extra="forbid")

    duration: float = Field(5.0, ge=0.5, le=120, description="Length of the step animation in seconds.")
    fps: int = Field(30, ge=1, le=60, description="Output frames per second.")
    codec: Codec = Field(Codec.h264, description="Video codec; see GET /capabilities.")
    interpolation: Interpolation = Field(
        Interpolation.none, description="none holds each step; blend cross-fades; mci is motion compensated."
    )
    skip_steps: int = Field(0, ge=0, description="Leave out this many initial (noisiest) steps.")
    hold_last: float = Field(0.0, ge=0, le=30, description="Seconds the final frame is held after the animation.")


class AnimationOptions(VideoOptions):
    """How the captured steps become a video, and what happens to the frames."""

    run_on_incomplete: bool = Field(
        False,
        description="Make the video from the frames captured so far when the render is canceled or the sampler "
        "exits early; otherwise such a job ends canceled or failed with no video.",
    )
    keep_frames: bool = Field(
        True,
        description="Keep the per-step frames after encoding (needed to re-encode later); when false exactly this "
        "job's frames are deleted once its videos are made.",
    )
    frames_only: bool = Field(
        False, description="Make no video: the job returns signed URLs of its frames and a zip of them."
    )

    @model_validator(mode="after")
    def _frames_only_keeps_frames(self) -> AnimationOptions:
        if self.frames_only and not self.keep_frames:
            raise ValueError("frames_only needs keep_frames: a frames-only job returns its frames")
        return self


MAX_RENDITIONS = 8  # per job, requested up front and added later together


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

    prompt: str = Field(min_length=1, description="What to draw.")
    negative_prompt: str = Field("", description="What to steer away from.")
    model: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$",
        max_length=200,
        description="A model in the workers' models folder, or a hub id (org/name); the server default when omitted.",
    )
    width: int = Field(512, ge=64, le=2048, multiple_of=8, description="Image width in pixels.")
    height: int = Field(512, ge=64, le=2048, multiple_of=8, description="Image height in pixels.")
    steps: int = Field(20, ge=1, le=999, description="Denoising steps; one frame each.")
    scheduler: SchedulerName = Field("euler_a", description="Sampler, by stable name.")
    guidance_scale: float = Field(7.5, ge=0, le=30, description="Classifier-free guidance scale.")
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="Random seed; chosen by the server (and reported) when omitted."
    )
    animation: AnimationOptions = Field(default_factory=AnimationOptions)
    renditions: list[VideoOptions] = Field(
        default_factory=list,
        max_length=MAX_RENDITIONS,
        description="More videos to make from the same frames (other codec, duration, interpolation...), "
        "ready when the job succeeds.",
    )
    webhook: AnyHttpUrl | None = Field(None, description="Receives a POST with the job when it ends.")

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
        if self.renditions and self.animation.frames_only:
            raise ValueError("renditions: a frames_only job makes no video; ask for renditions later instead")
        return self


class Progress(BaseModel):
    step: int = Field(0, description="Steps captured so far.")
    total: int = Field(0, description="Steps requested.")
    latest_frame: str | None = Field(None, description="Storage key of the newest frame (internal).")


class ErrorInfo(BaseModel):
    code: str
    message: str


class VideoInfo(BaseModel):
    key: str
    filename: str
    content_type: str
    codec: Codec
    size_bytes: int
    duration: float
    frames: int


class ArchiveInfo(BaseModel):
    key: str
    filename: str
    size_bytes: int
    frames: int


class RenditionStatus(StrEnum):
    queued = "queued"
    encoding = "encoding"
    succeeded = "succeeded"
    failed = "failed"

    def is_terminal(self) -> bool:
        return self in (RenditionStatus.succeeded, RenditionStatus.failed)


class Rendition(BaseModel):
    """One more video made from a job's stored frames by the encoder worker."""

    id: str
    status: RenditionStatus = RenditionStatus.queued
    options: VideoOptions
    created_at: datetime
    finished_at: datetime | None = None
    video: VideoInfo | None = None
    error: ErrorInfo | None = None


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
    renditions: list[Rendition] = Field(default_factory=list)
    frames_deleted: bool = Field(False, description="The frames were deleted after encoding (keep_frames false).")
    frames_archive: ArchiveInfo | None = Field(None, description="Zip of the frames (frames_only jobs).")


def utcnow() -> datetime:
    return datetime.now(UTC)

"""The job record shared by every process: status enum, allowed transitions, the record itself.

Pure data; no I/O. Status changes go through ``stepanim.lifecycle``; the request a job was
made from is ``stepanim.request``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from stepanim.grids import GridPlan
from stepanim.request import AnimationCreate
from stepanim.video_options import Codec, VideoOptions


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


# What a rendering job does before its steps come: loading the model, then sampling.
Stage = Literal["loading_model", "sampling"]


class Progress(BaseModel):
    stage: Stage | None = Field(
        None, description="What the render worker does: loading the model, then sampling (None while queued)."
    )
    step: int = Field(0, description="Steps captured so far.")
    total: int = Field(0, description="Steps requested.")
    latest_frames: list[str] = Field(
        default_factory=list, description="Storage keys of the newest frame of each image (internal)."
    )
    elapsed_seconds: float | None = Field(None, description="Seconds since sampling started.")
    eta_seconds: float | None = Field(None, description="Estimated seconds of sampling left.")


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


class JobImage(BaseModel):
    """One image of a batch: its seed, its frames and, once encoded, its own video."""

    batch_index: int
    seed: int
    frames: list[str] = Field(description="Storage keys in step order.")
    video: VideoInfo | None = None


class ArchiveInfo(BaseModel):
    key: str
    filename: str
    size_bytes: int
    frames: int


class RenditionStatus(StrEnum):
    """queued → encoding → succeeded or failed; a rendition's status, apart from the job's."""

    queued = "queued"
    encoding = "encoding"
    succeeded = "succeeded"
    failed = "failed"

    def is_terminal(self) -> bool:
        return self in (RenditionStatus.succeeded, RenditionStatus.failed)


class Rendition(BaseModel):
    """One more video of each image, made from a job's stored frames by the encoder worker."""

    id: str
    status: RenditionStatus = RenditionStatus.queued
    options: VideoOptions
    created_at: datetime
    finished_at: datetime | None = None
    videos: list[VideoInfo] = Field(default_factory=list, description="One video per image, in batch order.")
    error: ErrorInfo | None = None

    @property
    def video(self) -> VideoInfo | None:
        """The first image's video (what a single-image job has)."""
        return self.videos[0] if self.videos else None


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
    images: list[JobImage] = Field(
        default_factory=list, description="One entry per image of the batch: its seed, frame keys and video."
    )
    tenant: str | None = Field(None, description="Owner: the tenant of the API key that created the job.")
    key_id: str | None = Field(None, description="The API key that created the job (quota, webhook secret).")
    renditions: list[Rendition] = Field(default_factory=list)
    frames_deleted: bool = Field(False, description="The frames were deleted after encoding (keep_frames false).")
    warnings: list[str] = Field(default_factory=list, description="What the client should know (e.g. unknown words).")
    # A grid (kind "grid") is a job whose request is the grid's base and whose cells are jobs of
    # their own, each naming the grid as its parent (``stepanim.grid_flow``).
    kind: Literal["animation", "grid"] = "animation"
    grid: GridPlan | None = Field(None, description="A grid's axes and cells (kind grid).")
    parent: str | None = Field(None, description="The grid this job is a cell of.")
    cell: int | None = Field(None, description="Which cell of its grid (row by row).")
    frames_archive: ArchiveInfo | None = Field(None, description="Zip of every image's frames (frames_only jobs).")

    @property
    def video(self) -> VideoInfo | None:
        """The first image's video (what a single-image job has)."""
        return self.images[0].video if self.images else None

    def frame_keys(self) -> list[str]:
        """Every stored frame of every image, image by image, each in step order."""
        return [key for image in self.images for key in image.frames]


def utcnow() -> datetime:
    return datetime.now(UTC)

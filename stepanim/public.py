"""What clients see of a job: the API response and the webhook payload.

Storage keys never leave the service; they become signed URLs here, made at read
time so that a URL handed out is always fresh.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from stepanim.jobs import (
    AnimationCreate,
    Codec,
    ErrorInfo,
    Job,
    JobStatus,
    Rendition,
    RenditionStatus,
    VideoInfo,
    VideoOptions,
)
from stepanim.services import Services
from stepanim.storage import Storage


class ProgressPublic(BaseModel):
    step: int = Field(description="Steps captured so far.")
    total: int = Field(description="Steps requested.")
    latest_frame_url: str | None = Field(None, description="Signed URL of the newest frame.")


class VideoPublic(BaseModel):
    url: str = Field(description="Signed, expiring download URL.")
    filename: str
    content_type: str
    codec: Codec
    size_bytes: int
    duration: float = Field(description="Seconds, as measured by ffprobe.")
    frames: int = Field(description="Frames in the video, as measured by ffprobe.")


class JobUrls(BaseModel):
    get: str


class RenditionPublic(BaseModel):
    """One more video of the same frames, made by the encoder worker."""

    id: str
    status: RenditionStatus
    options: VideoOptions
    created_at: datetime
    finished_at: datetime | None
    video: VideoPublic | None = Field(description="Once the rendition succeeded: its signed URL and probe.")
    error: ErrorInfo | None


class FramesArchivePublic(BaseModel):
    url: str = Field(description="Signed, expiring download URL of a zip of the frames.")
    filename: str
    size_bytes: int
    frames: int


class AnimationPublic(BaseModel):
    """An animation job as the API returns it."""

    id: str
    status: JobStatus
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    model: str
    seed: int = Field(description="The seed used (chosen by the server when the request had none).")
    progress: ProgressPublic
    error: ErrorInfo | None
    video: VideoPublic | None
    urls: JobUrls
    request: AnimationCreate
    renditions: list[RenditionPublic] = Field(default_factory=list, description="Other videos of the same frames.")
    frame_urls: list[str] | None = Field(
        None, description="Frames-only jobs: signed URLs of the frames, in step order."
    )
    frames_zip: FramesArchivePublic | None = Field(None, description="Frames-only jobs: a zip of the frames.")


def video_public(info: VideoInfo, storage: Storage) -> VideoPublic:
    return VideoPublic(
        url=storage.signed_url(info.key, filename=info.filename),
        filename=info.filename,
        content_type=info.content_type,
        codec=info.codec,
        size_bytes=info.size_bytes,
        duration=info.duration,
        frames=info.frames,
    )


def rendition_public(rendition: Rendition, storage: Storage) -> RenditionPublic:
    return RenditionPublic(
        id=rendition.id,
        status=rendition.status,
        options=rendition.options,
        created_at=rendition.created_at,
        finished_at=rendition.finished_at,
        video=video_public(rendition.video, storage) if rendition.video else None,
        error=rendition.error,
    )


def to_public(job: Job, svc: Services) -> AnimationPublic:
    storage = svc.storage
    latest = job.progress.latest_frame
    video = video_public(job.video, storage) if job.video is not None else None
    archive = job.frames_archive
    frames_only = job.request.animation.frames_only and job.status == JobStatus.succeeded
    return AnimationPublic(
        id=job.id,
        status=job.status,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        model=job.model,
        seed=job.seed,
        progress=ProgressPublic(
            step=job.progress.step,
            total=job.progress.total or job.request.steps,
            latest_frame_url=storage.signed_url(latest) if latest else None,
        ),
        error=job.error,
        video=video,
        urls=JobUrls(get=f"{svc.settings.public_base_url.rstrip('/')}/animations/{job.id}"),
        request=job.request,
        renditions=[rendition_public(r, storage) for r in job.renditions],
        frame_urls=[storage.signed_url(key) for key in job.frames] if frames_only and not job.frames_deleted else None,
        frames_zip=FramesArchivePublic(
            url=storage.signed_url(archive.key, filename=archive.filename),
            filename=archive.filename,
            size_bytes=archive.size_bytes,
            frames=archive.frames,
        )
        if archive is not None
        else None,
    )

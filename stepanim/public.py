"""What clients see of a job: the API response and the webhook payload.

Storage keys never leave the service; they become signed URLs here, made at read
time so that a URL handed out is always fresh.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from stepanim.jobs import AnimationCreate, Codec, ErrorInfo, Job, JobStatus
from stepanim.services import Services


class ProgressPublic(BaseModel):
    step: int = Field(description="Steps captured so far.")
    total: int = Field(description="Steps requested.")
    latest_frame_url: str | None = Field(None, description="Signed URL of the newest frame.")
    elapsed_seconds: float | None = Field(None, description="Seconds since sampling started.")
    eta_seconds: float | None = Field(None, description="Estimated seconds of sampling left.")


class ImagePublic(BaseModel):
    batch_index: int = Field(description="Position in the batch; the frames' second two digits.")
    seed: int = Field(description="This image's real seed (the job's seed + batch_index).")
    frames: int = Field(description="Frames captured for this image.")


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
    images: list[ImagePublic] = Field(
        default_factory=list, description="One entry per image of the batch once rendering is done."
    )
    error: ErrorInfo | None
    video: VideoPublic | None
    urls: JobUrls
    request: AnimationCreate


def to_public(job: Job, svc: Services) -> AnimationPublic:
    storage = svc.storage
    latest = job.progress.latest_frame
    video = None
    if job.video is not None:
        info = job.video
        video = VideoPublic(
            url=storage.signed_url(info.key, filename=info.filename),
            filename=info.filename,
            content_type=info.content_type,
            codec=info.codec,
            size_bytes=info.size_bytes,
            duration=info.duration,
            frames=info.frames,
        )
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
            total=job.progress.total if job.progress.step else job.request.denoising_steps(),
            latest_frame_url=storage.signed_url(latest) if latest else None,
            elapsed_seconds=job.progress.elapsed_seconds,
            eta_seconds=job.progress.eta_seconds,
        ),
        images=[ImagePublic(batch_index=i.batch_index, seed=i.seed, frames=len(i.frames)) for i in job.images],
        error=job.error,
        video=video,
        urls=JobUrls(get=f"{svc.settings.public_base_url.rstrip('/')}/animations/{job.id}"),
        request=job.request,
    )

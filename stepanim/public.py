"""What clients see of a job: the API response and the webhook payload.

Storage keys never leave the service; they become signed URLs here, made at read
time so that a URL handed out is always fresh.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stepanim.jobs import ErrorInfo, Job, JobStatus, Rendition, RenditionStatus, Stage, VideoInfo
from stepanim.request import AnimationCreate
from stepanim.services import Services
from stepanim.storage import Storage
from stepanim.video_options import Codec, VideoOptions

_ID = "4f0c1a2b3c4d4e5f8a9b0c1d2e3f4a5b"
_BASE = "https://api.example.com"
_WHEN = "2026-01-02T03:04:05.678901Z"


class ProgressPublic(BaseModel):
    stage: Stage | None = Field(
        None,
        description="What the render worker does: `loading_model` (a cold start can take a while), then "
        "`sampling`; null while the job waits in the queue.",
        examples=["sampling"],
    )
    step: int = Field(description="Steps captured so far.", examples=[12])
    total: int = Field(description="Steps requested.", examples=[30])
    latest_frame_url: str | None = Field(
        None,
        description="Signed URL of the newest frame of the first image.",
        examples=[f"{_BASE}/files/jobs/{_ID}/frames/x.png"],
    )
    latest_frame_urls: list[str] = Field(
        default_factory=list,
        description="Signed URLs of the newest frame of each image of the batch, in batch order.",
        examples=[[f"{_BASE}/files/jobs/{_ID}/frames/x.png"]],
    )
    elapsed_seconds: float | None = Field(None, description="Seconds since sampling started.", examples=[4.2])
    eta_seconds: float | None = Field(None, description="Estimated seconds of sampling left.", examples=[6.3])


class VideoPublic(BaseModel):
    url: str = Field(description="Signed, expiring download URL.", examples=[f"{_BASE}/files/jobs/{_ID}/video.mp4"])
    filename: str = Field(description="File name: `<seed>-<prompt>.<ext>`.", examples=["1234-a lighthouse.mp4"])
    content_type: str = Field(description="MIME type of the video.", examples=["video/mp4"])
    codec: Codec = Field(description="Codec of the video.", examples=["h264"])
    size_bytes: int = Field(description="Size of the file in bytes.", examples=[183_204])
    duration: float = Field(description="Seconds, as measured by ffprobe.", examples=[3.0])
    frames: int = Field(description="Frames in the video, as measured by ffprobe.", examples=[90])


class ImagePublic(BaseModel):
    """One image of the batch, with its own animation."""

    batch_index: int = Field(description="Position in the batch; the frames' second two digits.", examples=[0])
    seed: int = Field(description="This image's real seed (the job's seed + batch_index).", examples=[1234])
    frames: int = Field(description="Frames captured for this image.", examples=[30])
    video: VideoPublic | None = Field(
        None, description="This image's video, named `<seed>-<prompt>.<ext>`; null until the job succeeded."
    )


class JobUrls(BaseModel):
    get: str = Field(description="This job (GET).", examples=[f"{_BASE}/animations/{_ID}"])
    cancel: str = Field(description="Cancel it (POST).", examples=[f"{_BASE}/animations/{_ID}/cancel"])
    stream: str = Field(
        description="Its live events (GET, server-sent events).", examples=[f"{_BASE}/animations/{_ID}/events"]
    )


class WebhookDeliveryPublic(BaseModel):
    """One attempt to deliver one webhook message."""

    webhook_id: str = Field(
        description="The message's `webhook-id` header; the same on every attempt.",
        examples=[f"msg_{_ID}_animation.succeeded"],
    )
    event: str = Field(description="Event type.", examples=["animation.succeeded"])
    attempt: int = Field(description="1 for the first attempt.", examples=[1])
    at: datetime = Field(description="When the attempt was made.", examples=[_WHEN])
    status_code: int | None = Field(description="The receiver's HTTP status; null when none came.", examples=[200])
    error: str | None = Field(description="What went wrong, when it did.", examples=[None, "HTTP 503"])
    duration_ms: float = Field(description="How long the request took.", examples=[35.2])
    outcome: Literal["delivered", "retrying", "failed", "gone"] = Field(
        description="delivered (2xx); retrying (another attempt is scheduled); failed (no more attempts); "
        "gone (the receiver answered 410 and is not called again).",
        examples=["delivered"],
    )
    next_attempt_at: datetime | None = Field(description="When the next attempt is due.", examples=[None])


class RenditionPublic(BaseModel):
    """One more video of the same frames, made by the encoder worker."""

    id: str = Field(description="The rendition's id.", examples=["3f2a9c0d1e4b5a6c"])
    status: RenditionStatus = Field(description="queued → encoding → succeeded or failed.", examples=["succeeded"])
    options: VideoOptions = Field(description="Codec, duration, fps and interpolation of this video.")
    created_at: datetime = Field(description="When it was asked for.", examples=[_WHEN])
    finished_at: datetime | None = Field(description="When it succeeded or failed.", examples=[_WHEN])
    video: VideoPublic | None = Field(
        description="Once the rendition succeeded: the first image's video (its signed URL and probe)."
    )
    videos: list[VideoPublic] = Field(
        default_factory=list,
        description="Once the rendition succeeded: one video per image of the batch, in batch order.",
    )
    error: ErrorInfo | None = Field(description="Why it failed; null otherwise.")


class FramesArchivePublic(BaseModel):
    url: str = Field(
        description="Signed, expiring download URL of a zip of the frames.",
        examples=[f"{_BASE}/files/jobs/{_ID}/frames.zip"],
    )
    filename: str = Field(description="File name of the zip.", examples=["1234-a lighthouse-frames.zip"])
    size_bytes: int = Field(description="Size of the zip in bytes.", examples=[48_213])
    frames: int = Field(description="Frames in the zip.", examples=[30])


class AnimationPublic(BaseModel):
    """An animation job as the API returns it."""

    id: str = Field(description="The job's id.", examples=[_ID])
    status: JobStatus = Field(
        description="queued → rendering → encoding → succeeded, or failed / canceled.", examples=["rendering"]
    )
    created_at: datetime = Field(description="When the job was accepted.", examples=[_WHEN])
    updated_at: datetime = Field(description="Last change of status or progress.", examples=[_WHEN])
    started_at: datetime | None = Field(description="When rendering started.", examples=[_WHEN])
    finished_at: datetime | None = Field(description="When the job reached its final status.", examples=[None])
    model: str = Field(description="The model that renders it.", examples=["tiny-sd"])
    seed: int = Field(description="The seed used (chosen by the server when the request had none).", examples=[1234])
    progress: ProgressPublic = Field(description="Steps captured so far, and the newest frame.")
    images: list[ImagePublic] = Field(
        default_factory=list,
        description="One entry per image of the batch once rendering is done: its seed, frame count and video.",
    )
    error: ErrorInfo | None = Field(description="Why the job failed; null otherwise.")
    warnings: list[str] = Field(
        default_factory=list,
        description="What the job was accepted with but may not do as hoped, e.g. a prompt with words the model "
        "does not know.",
        examples=[["model 'digits' does not know the words 'cat': ..."]],
    )
    video: VideoPublic | None = Field(
        description="The first image's finished video (the only one unless `batch_size` > 1: every image's is under "
        "`images[i].video`); null until the job succeeded."
    )
    urls: JobUrls = Field(description="Where to get, cancel and follow this job.")
    cancel_requested: bool = Field(
        False, description="A cancel was asked for; the job ends `canceled` within one step.", examples=[False]
    )
    webhook_deliveries: list[WebhookDeliveryPublic] = Field(
        default_factory=list, description="Attempts to deliver this job's webhooks, oldest first."
    )
    request: AnimationCreate = Field(description="The request, as accepted.")
    renditions: list[RenditionPublic] = Field(
        default_factory=list,
        description="Other videos of the same frames, each with its own status and one video per image.",
    )
    frame_urls: list[str] | None = Field(
        None,
        description="Frames-only jobs: signed URLs of every image's frames, image by image, each in step order "
        "(the batch index and seed are in each file name).",
        examples=[[f"{_BASE}/files/jobs/{_ID}/frames/0000001-1234-a lighthouse.png"]],
    )
    frames_zip: FramesArchivePublic | None = Field(
        None, description="Frames-only jobs: one zip of every image's frames, under their own names."
    )


class AnimationList(BaseModel):
    """One page of the caller's animations, newest first."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"data": [], "next_cursor": None}]})

    data: list[AnimationPublic] = Field(description="The animations on this page.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page.",
        examples=["1767323445678_4f0c1a2b3c4d4e5f8a9b0c1d2e3f4a5b"],
    )


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
        videos=[video_public(video, storage) for video in rendition.videos],
        error=rendition.error,
    )


# What a job that was just created has beside its record: no cancel flag, no deliveries.
NEW_JOB_EXTRAS: tuple[bool, list[dict[str, Any]]] = (False, [])


def to_public(job: Job, svc: Services, *, extras: tuple[bool, list[dict[str, Any]]] | None = None) -> AnimationPublic:
    """The job as clients see it. ``extras`` (cancel requested, webhook deliveries) are read
    from the store unless given."""
    storage = svc.storage
    cancel_requested, deliveries = extras if extras is not None else svc.store.public_extras(job.id)
    latest = [storage.signed_url(key) for key in job.progress.latest_frames]
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
            stage=job.progress.stage,
            step=job.progress.step,
            total=job.progress.total if job.progress.step else job.request.denoising_steps(),
            latest_frame_url=latest[0] if latest else None,
            latest_frame_urls=latest,
            elapsed_seconds=job.progress.elapsed_seconds,
            eta_seconds=job.progress.eta_seconds,
        ),
        images=[
            ImagePublic(
                batch_index=image.batch_index,
                seed=image.seed,
                frames=len(image.frames),
                video=video_public(image.video, storage) if image.video is not None else None,
            )
            for image in job.images
        ],
        error=job.error,
        warnings=job.warnings,
        video=video_public(job.video, storage) if job.video is not None else None,
        urls=job_urls(svc, job.id),
        cancel_requested=cancel_requested,
        webhook_deliveries=[WebhookDeliveryPublic.model_validate(r) for r in deliveries],
        request=job.request,
        renditions=[rendition_public(r, storage) for r in job.renditions],
        frame_urls=[storage.signed_url(key) for key in job.frame_keys()]
        if frames_only and not job.frames_deleted
        else None,
        frames_zip=FramesArchivePublic(
            url=storage.signed_url(archive.key, filename=archive.filename),
            filename=archive.filename,
            size_bytes=archive.size_bytes,
            frames=archive.frames,
        )
        if archive is not None
        else None,
    )


def job_urls(svc: Services, job_id: str) -> JobUrls:
    base = f"{svc.settings.public_base_url.rstrip('/')}/animations/{job_id}"
    return JobUrls(get=base, cancel=f"{base}/cancel", stream=f"{base}/events")

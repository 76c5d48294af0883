"""Encoding one job: fetch its frames, encode, check, publish. Plain code for the task.

A job's frames are downloaded once and serve its video and the renditions it asked
for up front; a later rendition downloads them again from storage. Nothing is
uploaded before ffprobe has checked it, so a failed encode publishes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from encoder.encode import encode_sequence, sequence_path
from encoder.ffmpeg import CODECS, FfmpegError, find_binary
from stepanim import lifecycle
from stepanim.jobs import ArchiveInfo, ErrorInfo, Job, JobStatus, Rendition, RenditionStatus, VideoInfo, VideoOptions
from stepanim.naming import (
    frames_archive_key,
    frames_archive_name,
    manifest_key,
    rendition_key,
    video_key,
    video_name,
)
from stepanim.services import Services
from stepanim.storage import StorageError

log = logging.getLogger(__name__)


class IncompleteRender(Exception):
    """The sampler made fewer steps than asked and the job did not ask to run on incomplete data."""


@dataclass(frozen=True)
class Outcome:
    video: VideoInfo | None
    archive: ArchiveInfo | None
    frames_deleted: bool


def load_manifest(job_id: str, svc: Services) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(svc.storage.get_bytes(manifest_key(job_id)))
    return data


def check_complete(job: Job, manifest: dict[str, Any]) -> None:
    # img2img runs int(steps x strength) steps: the manifest says how many were due.
    due = int(manifest.get("total_steps", job.request.denoising_steps()))
    steps_run = int(manifest.get("steps_run", due))
    if steps_run < due and not job.request.animation.run_on_incomplete:
        raise IncompleteRender(
            f"the render stopped after {steps_run} of {due} steps"
            " (set animation.run_on_incomplete to make a video from them)"
        )


def parallelism(svc: Services) -> int:
    return svc.settings.encode_parallelism or os.cpu_count() or 1


def frame_ext(keys: list[str]) -> str:
    exts = {PurePosixPath(key).suffix.lstrip(".").lower() for key in keys}
    if len(exts) != 1:
        raise ValueError(f"frames must share one image format, found {sorted(exts)}")
    return exts.pop()


def download_frames(keys: list[str], folder: Path, svc: Services, *, first: int = 1) -> str:
    """Frames ``first``.. (from 1) of ``keys`` as ``00001.<ext>``...; returns the extension."""
    ext = frame_ext(keys)
    for index, key in enumerate(keys, start=1):
        if index >= first:
            svc.storage.download(key, sequence_path(folder, index, ext))
    return ext


def metadata_params(job: Job, manifest: dict[str, Any], options: VideoOptions) -> dict[str, Any]:
    params = {k: v for k, v in manifest.items() if k != "animations"}
    params["seed"] = manifest["animations"][0]["seed"]
    params["animation"] = options.model_dump(mode="json")
    return params


def make_video(
    job: Job,
    svc: Services,
    *,
    folder: Path,
    ext: str,
    options: VideoOptions,
    params: dict[str, Any],
    key_for: Callable[[str], str],
    should_stop: Callable[[], bool] | None = None,
) -> VideoInfo:
    """Encode the frames in ``folder`` with ``options``, check, upload under ``key_for(name)``.

    ``should_stop`` (the job's cancel flag) stops a running ffmpeg: see ``encoder.ffmpeg.run_all``.
    """
    spec = CODECS[options.codec]
    name = video_name(seed=params["seed"], prompt=job.request.prompt, ext=spec.ext)
    with tempfile.TemporaryDirectory(prefix="video-", dir=folder) as out:
        encoded = encode_sequence(
            folder,
            len(job.frames),
            options=options,
            output=Path(out) / f"video.{spec.ext}",
            params=params,
            ffmpeg=find_binary("ffmpeg", svc.settings.ffmpeg_path),
            ffprobe=find_binary("ffprobe", svc.settings.ffprobe_path),
            timeout=svc.settings.encode_timeout_seconds,
            ext=ext,
            parallelism=parallelism(svc),
            should_stop=should_stop,
        )
        key = key_for(name)
        svc.storage.put_file(key, encoded.path, spec.content_type)
        size = encoded.path.stat().st_size
    return VideoInfo(
        key=key,
        filename=name,
        content_type=spec.content_type,
        codec=options.codec,
        size_bytes=size,
        duration=encoded.probe.duration,
        frames=encoded.probe.frames,
    )


def make_archive(job: Job, svc: Services, *, folder: Path, seed: int) -> ArchiveInfo:
    """A zip of the frames under their own names (PNGs are compressed already: stored)."""
    path = folder / "frames.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for index, key in enumerate(job.frames, start=1):
            local = sequence_path(folder, index, frame_ext(job.frames))
            archive.write(local, arcname=PurePosixPath(key).name)
    key = frames_archive_key(job.id)
    svc.storage.put_file(key, path, "application/zip")
    return ArchiveInfo(
        key=key,
        filename=frames_archive_name(seed=seed, prompt=job.request.prompt),
        size_bytes=path.stat().st_size,
        frames=len(job.frames),
    )


def make_renditions(job: Job, svc: Services, *, folder: Path, ext: str, manifest: dict[str, Any]) -> None:
    """The renditions asked for up front; each one's failure is its own (the job still succeeds)."""
    job = lifecycle.add_upfront_renditions(svc, job.id)
    for rendition in job.renditions:
        if rendition.status.is_terminal():
            continue
        lifecycle.rendition_status(svc, job.id, rendition.id, RenditionStatus.encoding)
        try:
            video = make_video(
                job,
                svc,
                folder=folder,
                ext=ext,
                options=rendition.options,
                params=metadata_params(job, manifest, rendition.options),
                key_for=lambda name, rid=rendition.id: rendition_key(job.id, rid, name),  # type: ignore[misc]
            )
        except (FfmpegError, ValueError) as e:
            lifecycle.rendition_status(
                svc, job.id, rendition.id, RenditionStatus.failed, error=ErrorInfo(code="encode_error", message=str(e))
            )
            continue
        lifecycle.rendition_status(svc, job.id, rendition.id, RenditionStatus.succeeded, video=video)


def encode_job(job: Job, svc: Services) -> Outcome:
    """The job's video (or, frames-only, its zip of frames) and its up-front renditions.

    Raises :class:`IncompleteRender`, :class:`FfmpegError`, ``NotFound`` (a frame or the
    manifest is missing) or ``StorageError``; nothing is published for the job's video
    in that case.
    """
    options = job.request.animation
    manifest = load_manifest(job.id, svc)
    check_complete(job, manifest)
    if not job.frames:
        raise ValueError("the render captured no frames")
    seed = manifest["animations"][0]["seed"]
    with tempfile.TemporaryDirectory(prefix=f"encode-{job.id[:8]}-") as tmp:
        folder = Path(tmp)
        first = 1 if job.request.renditions or options.frames_only else options.skip_steps + 1
        ext = download_frames(job.frames, folder, svc, first=first)
        if options.frames_only:
            return Outcome(video=None, archive=make_archive(job, svc, folder=folder, seed=seed), frames_deleted=False)
        video = make_video(
            job,
            svc,
            folder=folder,
            ext=ext,
            options=options,
            params=metadata_params(job, manifest, options),
            key_for=lambda name: video_key(job.id, name),
            # The API cancels an encoding job by its status (the cancel flag may be set already:
            # a render canceled with run_on_incomplete still encodes what it made).
            should_stop=lambda: svc.store.get(job.id).status == JobStatus.canceled,
        )
        if job.request.renditions:
            make_renditions(job, svc, folder=folder, ext=ext, manifest=manifest)
    return Outcome(video=video, archive=None, frames_deleted=not options.keep_frames)


def delete_frames(job: Job, svc: Services) -> None:
    """Delete exactly this job's frame keys (never a prefix: nothing else can match)."""
    try:
        svc.storage.delete(list(job.frames))
    except StorageError as e:
        log.error("job %s: frames not deleted: %s", job.id, e)


def encode_rendition(job: Job, rendition: Rendition, svc: Services) -> VideoInfo:
    """One rendition from the job's stored frames. ``NotFound`` when a frame is gone."""
    manifest = load_manifest(job.id, svc)
    with tempfile.TemporaryDirectory(prefix=f"rendition-{rendition.id[:8]}-") as tmp:
        folder = Path(tmp)
        ext = download_frames(job.frames, folder, svc, first=rendition.options.skip_steps + 1)
        return make_video(
            job,
            svc,
            folder=folder,
            ext=ext,
            options=rendition.options,
            params=metadata_params(job, manifest, rendition.options),
            key_for=lambda name: rendition_key(job.id, rendition.id, name),
        )

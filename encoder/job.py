"""Encoding one job: fetch its frames, encode, check, publish. Plain code for the task.

Every image of a batch gets its own video (named with that image's seed). A job's frames
are downloaded once and serve its videos and the renditions it asked for up front; a
later rendition downloads them again from storage. Nothing is
uploaded before ffprobe has checked it, so a failed encode publishes nothing.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from encoder.encode import encode_sequence, sequence_path
from encoder.ffmpeg import CODECS, find_binary
from stepanim import lifecycle
from stepanim.cancel import CancelWatch
from stepanim.failures import EncodeError, IncompleteRender, JobFailure
from stepanim.jobs import ArchiveInfo, ErrorInfo, Job, JobImage, Rendition, RenditionStatus, VideoInfo
from stepanim.manifest import Manifest
from stepanim.naming import frames_archive_key, frames_archive_name, rendition_key, video_key, video_name
from stepanim.services import Services
from stepanim.storage import StorageError
from stepanim.video_options import VideoOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    videos: list[VideoInfo] | None  # one per image of the batch, in order; None for a frames-only job
    archive: ArchiveInfo | None
    frames_deleted: bool


def check_complete(job: Job, manifest: Manifest) -> None:
    # img2img runs int(steps x strength) steps: the manifest says how many were due.
    if manifest.steps_run < manifest.total_steps and not job.request.animation.run_on_incomplete:
        raise IncompleteRender(
            f"the render stopped after {manifest.steps_run} of {manifest.total_steps} steps"
            " (set animation.run_on_incomplete to make a video from them)"
        )


def parallelism(svc: Services) -> int:
    return svc.settings.encode_parallelism or os.cpu_count() or 1


def frame_ext(keys: list[str]) -> str:
    exts = {PurePosixPath(key).suffix.lstrip(".").lower() for key in keys}
    if len(exts) != 1:
        raise EncodeError(f"frames must share one image format, found {sorted(exts)}")
    return exts.pop()


@dataclass(frozen=True)
class ImageFolder:
    """One image's frames, downloaded as ``00001.<ext>``... for ffmpeg's image2 reader."""

    image: JobImage
    path: Path
    ext: str

    @property
    def count(self) -> int:
        return len(self.image.frames)


def download_frames(image: JobImage, folder: Path, svc: Services, *, first: int = 1) -> ImageFolder:
    """Frames ``first``.. (from 1) of one image into ``folder``."""
    ext = frame_ext(image.frames)
    folder.mkdir(parents=True, exist_ok=True)
    for index, key in enumerate(image.frames, start=1):
        if index >= first:
            svc.storage.download(key, sequence_path(folder, index, ext))
    return ImageFolder(image=image, path=folder, ext=ext)


def download_images(job: Job, root: Path, svc: Services, *, first: int = 1) -> list[ImageFolder]:
    """Every image's frames, each in a folder of its own under ``root``."""
    return [download_frames(image, root / f"image-{image.batch_index}", svc, first=first) for image in job.images]


def metadata_params(manifest: Manifest, image: JobImage, options: VideoOptions) -> dict[str, Any]:
    """The generation parameters written into a video's metadata: the manifest's, with this image's seed."""
    params = manifest.metadata()
    params["seed"] = image.seed
    params["batch_index"] = image.batch_index
    params["animation"] = options.model_dump(mode="json")
    return params


def make_video(
    job: Job,
    svc: Services,
    *,
    frames: ImageFolder,
    options: VideoOptions,
    manifest: Manifest,
    key_for: Callable[[str], str],
    should_stop: Callable[[], bool] | None = None,
) -> VideoInfo:
    """Encode one image's frames with ``options``, check, upload under ``key_for(name)``.

    ``should_stop`` (the job's cancel flag) stops a running ffmpeg: see ``encoder.ffmpeg.run_all``.
    """
    spec = CODECS[options.codec]
    name = video_name(seed=frames.image.seed, prompt=job.request.prompt, ext=spec.ext)
    with tempfile.TemporaryDirectory(prefix="video-", dir=frames.path) as out:
        encoded = encode_sequence(
            frames.path,
            frames.count,
            options=options,
            output=Path(out) / f"video.{spec.ext}",
            params=metadata_params(manifest, frames.image, options),
            ffmpeg=find_binary("ffmpeg", svc.settings.ffmpeg_path),
            ffprobe=find_binary("ffprobe", svc.settings.ffprobe_path),
            timeout=svc.settings.encode_timeout_seconds,
            ext=frames.ext,
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


def make_archive(job: Job, svc: Services, *, folders: list[ImageFolder]) -> ArchiveInfo:
    """One zip of every image's frames under their own names (the batch index and seed are in
    each name); PNGs are compressed already, so they are stored."""
    path = folders[0].path.parent / "frames.zip"
    count = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for folder in folders:
            for index, key in enumerate(folder.image.frames, start=1):
                archive.write(sequence_path(folder.path, index, folder.ext), arcname=PurePosixPath(key).name)
                count += 1
    key = frames_archive_key(job.id)
    svc.storage.put_file(key, path, "application/zip")
    return ArchiveInfo(
        key=key,
        filename=frames_archive_name(seed=job.seed, prompt=job.request.prompt),
        size_bytes=path.stat().st_size,
        frames=count,
    )


def make_rendition(
    job: Job, svc: Services, rendition: Rendition, *, folders: list[ImageFolder], manifest: Manifest
) -> list[VideoInfo]:
    """A rendition: one video of each image's frames, with the rendition's options."""
    return [
        make_video(
            job,
            svc,
            frames=folder,
            options=rendition.options,
            manifest=manifest,
            key_for=lambda name: rendition_key(job.id, rendition.id, name),
        )
        for folder in folders
    ]


def make_renditions(job: Job, svc: Services, *, folders: list[ImageFolder], manifest: Manifest) -> None:
    """The renditions asked for up front; each one's failure is its own (the job still succeeds)."""
    job = lifecycle.add_upfront_renditions(svc, job.id)
    for rendition in job.renditions:
        if rendition.status.is_terminal():
            continue
        lifecycle.rendition_status(svc, job.id, rendition.id, RenditionStatus.encoding)
        try:
            videos = make_rendition(job, svc, rendition, folders=folders, manifest=manifest)
        except JobFailure as e:
            lifecycle.rendition_status(
                svc, job.id, rendition.id, RenditionStatus.failed, error=ErrorInfo(code=e.code, message=str(e))
            )
            continue
        lifecycle.rendition_status(svc, job.id, rendition.id, RenditionStatus.succeeded, videos=videos)


def encode_job(job: Job, svc: Services) -> Outcome:
    """Every image's video (or, frames-only, one zip of every image's frames) and the
    renditions asked for up front.

    Raises a :class:`JobFailure` (``IncompleteRender``, ``EncodeError``), ``EncodeCanceled``,
    ``NotFound`` (a frame or the manifest is missing) or ``StorageError``; nothing is
    published for the job's videos in that case.
    """
    options = job.request.animation
    manifest = Manifest.load(svc.storage, job.id)
    check_complete(job, manifest)
    if not job.frame_keys():
        raise EncodeError("the render captured no frames")
    with tempfile.TemporaryDirectory(prefix=f"encode-{job.id[:8]}-") as tmp, CancelWatch(svc.store, job.id) as cancel:
        first = 1 if job.request.renditions or options.frames_only else options.skip_steps + 1
        folders = download_images(job, Path(tmp), svc, first=first)
        if options.frames_only:
            return Outcome(videos=None, archive=make_archive(job, svc, folders=folders), frames_deleted=False)
        videos = [
            make_video(
                job,
                svc,
                frames=folder,
                options=options,
                manifest=manifest,
                key_for=lambda name: video_key(job.id, name),
                should_stop=cancel.is_set,  # a cancel stops ffmpeg within a moment (stepanim.cancel)
            )
            for folder in folders
        ]
        if job.request.renditions:
            make_renditions(job, svc, folders=folders, manifest=manifest)
    return Outcome(videos=videos, archive=None, frames_deleted=not options.keep_frames)


def delete_frames(job: Job, svc: Services) -> None:
    """Delete exactly this job's frame keys, every image's (never a prefix: nothing else can match)."""
    try:
        svc.storage.delete(job.frame_keys())
    except StorageError as e:
        log.error("job %s: frames not deleted: %s", job.id, e)


def encode_rendition(job: Job, rendition: Rendition, svc: Services) -> list[VideoInfo]:
    """One rendition (a video per image) from the job's stored frames. ``NotFound`` when a frame is gone."""
    manifest = Manifest.load(svc.storage, job.id)
    with tempfile.TemporaryDirectory(prefix=f"rendition-{rendition.id[:8]}-") as tmp:
        folders = download_images(job, Path(tmp), svc, first=rendition.options.skip_steps + 1)
        return make_rendition(job, svc, rendition, folders=folders, manifest=manifest)

"""Encoding a whole job (frames from storage -> videos, renditions, zip) against real Redis,
real storage (S3 via moto, and the local backend) and the real ffmpeg."""

from __future__ import annotations

import io
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from encoder.ffmpeg import FfmpegError
from encoder.job import delete_frames, encode_job, encode_rendition
from stepanim import lifecycle
from stepanim.failures import IncompleteRender
from stepanim.jobs import Job, JobImage, JobStatus, Rendition, RenditionStatus, utcnow
from stepanim.manifest import Manifest, ManifestImage
from stepanim.naming import frame_key, frame_name, manifest_key, upfront_rendition_id
from stepanim.queues import make_celery
from stepanim.request import AnimationCreate
from stepanim.services import Services
from stepanim.settings import Settings
from stepanim.storage import LocalStorage, NotFound, S3Storage
from stepanim.store import JobStore
from stepanim.video_options import VideoOptions
from tests.conftest import S3Server
from tests.integration.job_support import admitted_job

PROMPT = 'a "quoted" / prompt\nwith ✨'
SEED = 42


@pytest.fixture(params=["s3", "local"])
def svc(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path, s3: S3Server) -> Services:
    if request.param == "s3":
        settings = s3.settings_object(redis_url=redis_url, encode_parallelism=2)
        storage: LocalStorage | S3Storage = S3Storage(settings)
    else:
        settings = Settings(_env_file=None, redis_url=redis_url, encode_parallelism=2)  # type: ignore[call-arg]
        storage = LocalStorage(tmp_path / "storage", secret="s" * 16, base_url="http://x", ttl_seconds=60)
    return Services(
        settings=settings, store=JobStore.from_url(redis_url), storage=storage, celery=make_celery(settings)
    )


def png(step: int, batch_index: int = 0) -> bytes:
    image = np.full((48, 48, 3), (9 * step) % 256, np.uint8)
    image[step : step + 8, step : step + 8] = 255
    image[:, :, 2] = 60 * batch_index  # each image of a batch looks different
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def new_job(svc: Services, *, steps: int, batch_size: int = 1, **request: object) -> Job:
    """A job for PROMPT and SEED on the tiny model, admitted (``queued``)."""
    body = {"prompt": PROMPT, "steps": steps, "seed": SEED, "batch_size": batch_size, **request}
    return admitted_job(svc, AnimationCreate.model_validate(body), model="tiny", seed=SEED)


def save_manifest(svc: Services, job: Job, images: list[JobImage], *, steps_run: int) -> None:
    """The manifest the render worker stores last: ``steps_run`` of the job's steps, ``images``' frames."""
    steps = job.request.steps
    Manifest(
        job_id=job.id,
        model="tiny",
        prompt=PROMPT,
        width=48,
        height=48,
        steps=steps,
        steps_run=steps_run,
        total_steps=steps,
        complete=steps_run == steps,
        scheduler="euler",
        guidance_scale=7.5,
        seed=SEED,
        batch_size=job.request.batch_size,
        images=[ManifestImage(batch_index=i.batch_index, seed=i.seed, frames=i.frames) for i in images],
    ).save(svc.storage)


def rendered_job(
    svc: Services, *, steps: int = 8, steps_run: int | None = None, batch_size: int = 1, **request: object
) -> Job:
    """A job as the render worker leaves it: every image's frames and the manifest stored, status encoding."""
    job = new_job(svc, steps=steps, batch_size=batch_size, **request)
    run = steps if steps_run is None else steps_run
    images = []
    for index in range(batch_size):
        keys = []
        for step in range(1, run + 1):
            name = frame_name(batch_count=0, batch_index=index, step=step, seed=SEED + index, prompt=PROMPT)
            keys.append(frame_key(job.id, name))
            svc.storage.put_bytes(keys[-1], png(step, index), "image/png")
        images.append(JobImage(batch_index=index, seed=SEED + index, frames=keys))
    save_manifest(svc, job, images, steps_run=run)
    lifecycle.start_rendering(svc, job.id)
    return lifecycle.start_encoding(svc, job.id, images)


def finish(svc: Services, job: Job) -> Job:
    """What the encode task does on success."""
    outcome = encode_job(job, svc)
    done = lifecycle.finish_encoding(
        svc, job.id, videos=outcome.videos, archive=outcome.archive, frames_deleted=outcome.frames_deleted
    )
    if outcome.frames_deleted:
        delete_frames(done, svc)
    return done


def keys_of(svc: Services, job: Job) -> list[str]:
    return svc.storage.list_keys(f"jobs/{job.id}/")


def test_video_and_upfront_renditions(svc: Services) -> None:
    renditions = [
        {"codec": "vp9", "duration": 1, "interpolation": "blend"},
        {"codec": "gif", "duration": 2, "skip_steps": 3},
    ]
    job = rendered_job(svc, animation={"duration": 1.5, "interpolation": "mci"}, renditions=renditions)
    done = finish(svc, job)
    assert done.status == JobStatus.succeeded
    assert done.video is not None and done.video.frames == 45
    assert done.video.filename == f"{SEED}-a quoted prompt with ✨.mp4"
    assert [r.id for r in done.renditions] == [upfront_rendition_id(job.id, i) for i in range(2)]
    assert [r.status for r in done.renditions] == [RenditionStatus.succeeded] * 2
    vp9, gif = (r.video for r in done.renditions)
    assert vp9 is not None and vp9.codec == "vp9" and vp9.frames == 30
    assert gif is not None and gif.codec == "gif" and gif.frames == 20  # 2 s at 10 fps
    stored = keys_of(svc, job)
    assert done.video.key in stored and vp9.key in stored and gif.key in stored
    assert vp9.key == f"jobs/{job.id}/renditions/{done.renditions[0].id}/{SEED}-a quoted prompt with ✨.webm"
    assert set(done.frame_keys()) <= set(stored)  # kept by default


def test_delete_frames_removes_exactly_this_jobs_frames(svc: Services) -> None:
    job = rendered_job(svc, animation={"duration": 1, "keep_frames": False})
    other = rendered_job(svc, animation={"duration": 1})
    # Objects whose keys share a prefix with the frames must survive.
    lookalikes = [f"{job.frame_keys()[0]}.bak", f"jobs/{job.id}/frames-extra/x.png", f"jobs/{job.id}/frames/notes.txt"]
    for key in lookalikes:
        svc.storage.put_bytes(key, b"x", "text/plain")
    done = finish(svc, job)
    assert done.status == JobStatus.succeeded and done.frames_deleted
    remaining = keys_of(svc, job)
    assert not set(job.frame_keys()) & set(remaining)
    assert set(lookalikes) <= set(remaining)
    assert done.video is not None and done.video.key in remaining
    assert manifest_key(job.id) in remaining
    assert set(other.frame_keys()) <= set(keys_of(svc, other))
    with pytest.raises(lifecycle.RenditionRefused, match="deleted"):
        lifecycle.add_rendition(svc, job.id, Rendition(id="0" * 16, options=VideoOptions(), created_at=utcnow()))


def test_frames_only_makes_a_zip_and_no_video(svc: Services) -> None:
    job = rendered_job(svc, steps=5, animation={"frames_only": True})
    done = finish(svc, job)
    assert done.status == JobStatus.succeeded
    assert done.video is None
    assert done.frames_archive is not None and done.frames_archive.frames == 5
    assert done.frames_archive.filename == f"{SEED}-a quoted prompt with ✨-frames.zip"
    with zipfile.ZipFile(io.BytesIO(svc.storage.get_bytes(done.frames_archive.key))) as archive:
        assert archive.namelist() == [k.rsplit("/", 1)[1] for k in job.frame_keys()]
        assert archive.read(archive.namelist()[2]) == png(3)
    assert not [k for k in keys_of(svc, job) if "/videos/" in k]


def test_an_incomplete_render_needs_run_on_incomplete(svc: Services) -> None:
    job = rendered_job(svc, steps=10, steps_run=6, animation={"duration": 1})
    with pytest.raises(IncompleteRender, match="after 6 of 10 steps"):
        encode_job(job, svc)
    assert not [k for k in keys_of(svc, job) if "/videos/" in k]
    allowed = rendered_job(svc, steps=10, steps_run=6, animation={"duration": 1, "run_on_incomplete": True})
    done = finish(svc, allowed)
    assert done.video is not None and done.video.frames == 30


def test_a_missing_or_corrupt_frame_publishes_nothing(svc: Services) -> None:
    missing = rendered_job(svc, animation={"duration": 1})
    svc.storage.delete([missing.frame_keys()[3]])
    with pytest.raises(NotFound):
        encode_job(missing, svc)
    corrupt = rendered_job(svc, animation={"duration": 1}, renditions=[{"codec": "vp9", "duration": 1}])
    svc.storage.put_bytes(corrupt.frame_keys()[3], b"not a png", "image/png")
    with pytest.raises(FfmpegError):
        encode_job(corrupt, svc)
    for job in (missing, corrupt):
        assert not [k for k in keys_of(svc, job) if "/videos/" in k or "/renditions/" in k]


def test_a_rendition_of_stored_frames(svc: Services) -> None:
    job = finish(svc, rendered_job(svc, animation={"duration": 1}))
    rendition = Rendition(
        id="abcdef0123456789",
        options=VideoOptions(codec="prores", duration=0.5, fps=24, hold_last=0.5),
        created_at=utcnow(),
    )
    job = lifecycle.add_rendition(svc, job.id, rendition)
    [video] = encode_rendition(job, rendition, svc)
    assert video.codec == "prores" and video.frames == 24 and video.key.endswith(".mov")
    assert video.key in keys_of(svc, job)
    svc.storage.delete([job.frame_keys()[0]])
    with pytest.raises(NotFound):
        encode_rendition(job, rendition, svc)


def video_pixels(svc: Services, key: str, tmp_path: Path) -> np.ndarray:
    """The last frame of a stored video, as RGB pixels."""
    local = tmp_path / key.rsplit("/", 1)[1]
    svc.storage.download(key, local)
    out = tmp_path / f"{local.stem}.png"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-sseof", "-0.1", "-i", str(local), "-frames:v", "1", str(out)], check=True
    )
    return np.asarray(Image.open(out).convert("RGB")).astype(int)


def test_a_batch_gives_every_image_its_video_and_renditions(svc: Services, tmp_path: Path) -> None:
    job = rendered_job(svc, batch_size=3, animation={"duration": 1}, renditions=[{"codec": "vp9", "duration": 1}])
    done = finish(svc, job)
    assert done.status == JobStatus.succeeded
    videos = [image.video for image in done.images]
    assert all(v is not None and v.frames == 30 for v in videos)
    assert [v.filename for v in videos if v is not None] == [
        f"{SEED + i}-a quoted prompt with ✨.mp4" for i in range(3)
    ]
    assert done.video == videos[0]  # single-image clients see the first image's video
    assert len({v.key for v in videos if v is not None}) == 3
    pixels = [video_pixels(svc, v.key, tmp_path) for v in videos if v is not None]
    assert np.abs(pixels[0] - pixels[1]).mean() > 20 and np.abs(pixels[1] - pixels[2]).mean() > 20
    [rendition] = done.renditions
    assert rendition.status == RenditionStatus.succeeded and len(rendition.videos) == 3
    assert [v.filename for v in rendition.videos] == [f"{SEED + i}-a quoted prompt with ✨.webm" for i in range(3)]
    later = Rendition(id="0123456789abcdef", options=VideoOptions(codec="gif", duration=1), created_at=utcnow())
    lifecycle.add_rendition(svc, job.id, later)
    assert [v.filename for v in encode_rendition(done, later, svc)] == [
        f"{SEED + i}-a quoted prompt with ✨.gif" for i in range(3)
    ]


def test_a_batch_without_kept_frames_deletes_every_images_frames(svc: Services) -> None:
    job = rendered_job(svc, batch_size=2, animation={"duration": 1, "keep_frames": False})
    assert len(job.frame_keys()) == 16
    done = finish(svc, job)
    remaining = keys_of(svc, job)
    assert done.frames_deleted and not [k for k in remaining if "/frames/" in k]
    assert all(image.video is not None and image.video.key in remaining for image in done.images)


def test_a_frames_only_batch_zips_every_images_frames(svc: Services) -> None:
    job = rendered_job(svc, steps=4, batch_size=2, animation={"frames_only": True})
    done = finish(svc, job)
    assert done.frames_archive is not None and done.frames_archive.frames == 8
    with zipfile.ZipFile(io.BytesIO(svc.storage.get_bytes(done.frames_archive.key))) as archive:
        names = archive.namelist()
        assert names == [k.rsplit("/", 1)[1] for k in job.frame_keys()]
        assert names[4].startswith(f"0001001-{SEED + 1}-")  # the second image: batch index 01, its own seed
        assert archive.read(names[5]) == png(2, 1)


def test_a_partial_batch_with_run_on_incomplete_gives_every_image_a_video(svc: Services) -> None:
    job = rendered_job(svc, steps=10, steps_run=4, batch_size=2, animation={"duration": 1, "run_on_incomplete": True})
    done = finish(svc, job)
    assert [image.video is not None and image.video.frames for image in done.images] == [30, 30]

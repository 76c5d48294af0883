"""Encoding a whole job (frames from storage -> videos, renditions, zip) against real Redis,
real storage (S3 via moto, and the local backend) and the real ffmpeg."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from encoder.ffmpeg import FfmpegError
from encoder.job import IncompleteRender, delete_frames, encode_job, encode_rendition
from stepanim import lifecycle
from stepanim.jobs import AnimationCreate, Job, JobStatus, Rendition, RenditionStatus, VideoOptions, utcnow
from stepanim.naming import frame_key, frame_name, manifest_key, upfront_rendition_id
from stepanim.queues import make_celery
from stepanim.services import Services
from stepanim.settings import Settings
from stepanim.storage import LocalStorage, NotFound, S3Storage
from stepanim.store import JobStore
from tests.conftest import S3Server

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


def png(step: int) -> bytes:
    image = np.full((48, 48, 3), 10 * step, np.uint8)
    image[step : step + 8, step : step + 8] = 255
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def rendered_job(svc: Services, *, steps: int = 8, steps_run: int | None = None, **request: object) -> Job:
    """A job as the render worker leaves it: frames and manifest stored, status encoding."""
    now = utcnow()
    job = Job(
        id=uuid.uuid4().hex,
        request=AnimationCreate.model_validate({"prompt": PROMPT, "steps": steps, "seed": SEED, **request}),
        model="tiny",
        seed=SEED,
        created_at=now,
        updated_at=now,
    )
    svc.store.create(job)
    run = steps if steps_run is None else steps_run
    keys = []
    for step in range(1, run + 1):
        name = frame_name(batch_count=0, batch_index=0, step=step, seed=SEED, prompt=PROMPT)
        keys.append(frame_key(job.id, name))
        svc.storage.put_bytes(keys[-1], png(step), "image/png")
    manifest = {"job_id": job.id, "prompt": PROMPT, "steps": steps, "steps_run": run, "model": "tiny"}
    manifest["animations"] = [{"batch_index": 0, "seed": SEED, "frames": keys}]
    svc.storage.put_bytes(manifest_key(job.id), json.dumps(manifest).encode(), "application/json")
    lifecycle.start_rendering(svc, job.id)
    return lifecycle.start_encoding(svc, job.id, frames=keys)


def finish(svc: Services, job: Job) -> Job:
    """What the encode task does on success."""
    outcome = encode_job(job, svc)
    done = lifecycle.finish_encoding(
        svc, job.id, video=outcome.video, archive=outcome.archive, frames_deleted=outcome.frames_deleted
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
    assert set(done.frames) <= set(stored)  # kept by default


def test_delete_frames_removes_exactly_this_jobs_frames(svc: Services) -> None:
    job = rendered_job(svc, animation={"duration": 1, "keep_frames": False})
    other = rendered_job(svc, animation={"duration": 1})
    # Objects whose keys share a prefix with the frames must survive.
    lookalikes = [f"{job.frames[0]}.bak", f"jobs/{job.id}/frames-extra/x.png", f"jobs/{job.id}/frames/notes.txt"]
    for key in lookalikes:
        svc.storage.put_bytes(key, b"x", "text/plain")
    done = finish(svc, job)
    assert done.status == JobStatus.succeeded and done.frames_deleted
    remaining = keys_of(svc, job)
    assert not set(job.frames) & set(remaining)
    assert set(lookalikes) <= set(remaining)
    assert done.video is not None and done.video.key in remaining
    assert manifest_key(job.id) in remaining
    assert set(other.frames) <= set(keys_of(svc, other))
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
        assert archive.namelist() == [k.rsplit("/", 1)[1] for k in job.frames]
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
    svc.storage.delete([missing.frames[3]])
    with pytest.raises(NotFound):
        encode_job(missing, svc)
    corrupt = rendered_job(svc, animation={"duration": 1}, renditions=[{"codec": "vp9", "duration": 1}])
    svc.storage.put_bytes(corrupt.frames[3], b"not a png", "image/png")
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
    video = encode_rendition(job, rendition, svc)
    assert video.codec == "prores" and video.frames == 24 and video.key.endswith(".mov")
    assert video.key in keys_of(svc, job)
    svc.storage.delete([job.frames[0]])
    with pytest.raises(NotFound):
        encode_rendition(job, rendition, svc)

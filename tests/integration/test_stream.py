"""The streaming encode (encoder.stream) against real Redis, real storage (S3 via moto, and the
local backend) and the real ffmpeg. The test plays the render worker: it stores each step's
frames and records progress through the same lifecycle functions, while ``stream_job`` runs
in a thread; then the same frames are encoded post hoc and the two videos compared."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from encoder.encode import cut_for
from encoder.ffmpeg import find_binary, probe
from encoder.job import encode_job
from encoder.stream import Abandon, Stopped, Streamed, StreamPlan, stream_job
from stepanim import lifecycle
from stepanim.jobs import Job, JobImage
from stepanim.naming import frame_key, frame_name
from stepanim.services import Services
from tests.integration.test_encode_job import PROMPT, SEED, new_job, png, save_manifest, svc

__all__ = ["svc"]

FFPROBE = find_binary("ffprobe", None)


def rendering_job(svc: Services, *, steps: int, batch_size: int = 1, **request: Any) -> Job:
    """A new job, in ``rendering`` as the render worker moves it before its first step."""
    return lifecycle.start_rendering(svc, new_job(svc, steps=steps, batch_size=batch_size, **request).id)


def render(
    svc: Services,
    job: Job,
    *,
    steps_run: int | None = None,
    pace: float = 0.02,
    on_step: Callable[[int], None] | None = None,
) -> list[JobImage]:
    """What the render worker does: per step, its frames stored and progress recorded; at the end the
    manifest and the hand-over to encoding."""
    lifecycle.enter_stage(svc, job.id, "loading_model")
    lifecycle.enter_stage(svc, job.id, "sampling")
    total = job.request.steps
    run = total if steps_run is None else steps_run
    batch = job.request.batch_size
    images = [JobImage(batch_index=i, seed=SEED + i, frames=[]) for i in range(batch)]
    for step in range(1, run + 1):
        keys = []
        for index in range(batch):
            name = frame_name(batch_count=0, batch_index=index, step=step, seed=SEED + index, prompt=PROMPT)
            key = frame_key(job.id, name)
            svc.storage.put_bytes(key, png(step, index), "image/png")
            images[index].frames.append(key)
            keys.append(key)
        lifecycle.record_progress(svc, job.id, step=step, total=total, latest_frames=keys)
        if on_step is not None:
            on_step(step)
        time.sleep(pace)
    save_manifest(svc, job, images, steps_run=run)
    return images


class Streaming:
    """``stream_job`` in a thread, started before the render."""

    def __init__(self, svc: Services, job: Job) -> None:
        self.result: Streamed | BaseException | None = None
        self.lost = threading.Event()

        def run() -> None:
            try:
                self.result = stream_job(job, svc, lost=self.lost.is_set)
            except BaseException as e:  # handed to the test
                self.result = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> Streamed | BaseException | None:
        self.thread.join(60)
        assert not self.thread.is_alive(), "the stream did not end"
        return self.result


def frame_hashes(path: Path) -> list[str]:
    """The MD5 of every decoded frame (ffmpeg's framemd5 muxer)."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "framemd5", "-"], capture_output=True, text=True, check=True
    ).stdout
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if line and not line.startswith("#")]


def video_file(svc: Services, key: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{uuid.uuid4().hex}-{Path(key).name}"
    svc.storage.download(key, path)
    return path


@pytest.mark.parametrize(("interpolation", "slots"), [("none", 2), ("blend", 2), ("mci", 2), ("mci", 1)], ids=str)
def test_streamed_video_equals_the_post_hoc_one(svc: Services, tmp_path: Path, interpolation: str, slots: int) -> None:
    # mci with one encode slot: one piece, encoded once all the steps are stored
    svc.settings = svc.settings.model_copy(update={"encode_parallelism": slots})
    animation = {"duration": 1.5, "interpolation": interpolation, "skip_steps": 2, "hold_last": 0.5}
    job = rendering_job(svc, steps=26, animation=animation)
    plan = StreamPlan.of(job)
    # 24 kept steps: none/blend's last ones are a segment of their own, mci has a segment per slot
    assert len(cut_for(plan.options, plan.timeline, slots)) == (2 if slots == 2 else 0)
    stream = Streaming(svc, job)
    images = render(svc, job)
    lifecycle.start_encoding(svc, job.id, images)
    streamed = stream.join()
    assert isinstance(streamed, Streamed), streamed
    (a,) = streamed.videos
    streamed_file = video_file(svc, a.key, tmp_path)  # the post-hoc encode writes the same key
    post_hoc = encode_job(svc.store.get(job.id), svc).videos
    assert post_hoc is not None
    (b,) = post_hoc
    assert (a.key, a.filename) == (b.key, b.filename) == (a.key, f"{SEED}-a quoted prompt with ✨.mp4")
    assert a.frames == b.frames == 60  # (1.5 s + 0.5 s held) at 30 fps
    assert a.duration == pytest.approx(b.duration, abs=0.001) and a.duration == pytest.approx(2.0, abs=0.05)
    assert streamed.tail_seconds < 10
    # the same frames, to the bit (mci: the same segments as post hoc), and the same metadata
    post_hoc_file = video_file(svc, b.key, tmp_path)
    assert frame_hashes(streamed_file) == frame_hashes(post_hoc_file)
    assert probe(FFPROBE, streamed_file).tags == probe(FFPROBE, post_hoc_file).tags


def test_stream_stops_when_the_job_is_canceled(svc: Services) -> None:
    job = rendering_job(svc, steps=10)
    stream = Streaming(svc, job)

    def cancel_at(step: int) -> None:
        if step == 4:
            lifecycle.cancel(svc, job.id)

    render(svc, job, on_step=cancel_at)  # its progress is no longer recorded: the job is canceled
    assert isinstance(stream.join(), Stopped)


def test_a_render_that_made_fewer_steps_goes_to_the_post_hoc_encode(svc: Services) -> None:
    job = rendering_job(svc, steps=10, animation={"run_on_incomplete": True})
    stream = Streaming(svc, job)
    images = render(svc, job, steps_run=6)  # canceled, or a sampler that exited early
    lifecycle.start_encoding(svc, job.id, images)
    assert isinstance(stream.join(), Abandon)
    videos = encode_job(svc.store.get(job.id), svc).videos
    assert videos is not None and videos[0].frames == 150  # the default 5 s at 30 fps, of 6 steps


def test_a_restarted_render_goes_to_the_post_hoc_encode(svc: Services) -> None:
    job = rendering_job(svc, steps=8)
    stream = Streaming(svc, job)

    def restart_at(step: int) -> None:
        if step == 3:  # the worker is lost; the re-enqueued render loads its model again
            lifecycle.enter_stage(svc, job.id, "loading_model")

    images = render(svc, job, on_step=restart_at)
    lifecycle.start_encoding(svc, job.id, images)
    assert isinstance(stream.join(), Abandon)


def test_lost_lease_stops_the_stream(svc: Services) -> None:
    job = rendering_job(svc, steps=8)
    stream = Streaming(svc, job)
    stream.lost.set()
    assert isinstance(stream.join(), Stopped)


def test_a_batch_streams_one_video_per_image(svc: Services, tmp_path: Path) -> None:
    job = rendering_job(svc, steps=6, batch_size=2, animation={"duration": 1})
    stream = Streaming(svc, job)
    images = render(svc, job)
    lifecycle.start_encoding(svc, job.id, images)
    streamed = stream.join()
    assert isinstance(streamed, Streamed), streamed
    assert [v.filename for v in streamed.videos] == [
        f"{SEED}-a quoted prompt with ✨.mp4",
        f"{SEED + 1}-a quoted prompt with ✨.mp4",
    ]
    assert [v.frames for v in streamed.videos] == [30, 30]
    first, second = (frame_hashes(video_file(svc, v.key, tmp_path)) for v in streamed.videos)
    assert first != second  # each image its own frames

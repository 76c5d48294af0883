"""``worker.frames.FrameWriter``: every step written and reported once, in order, by a
thread that wakes per batch (not per step) and never keeps a step waiting past the
progress interval or the end of the run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from stepanim.storage import LocalStorage
from worker.frames import MAX_DECODE_BATCH, FrameWriter

JOB = "0123456789abcdef0123456789abcdef"


class Recorder:
    """A decoder (one grey 4x4 image per latent) and a progress sink that remember their calls."""

    def __init__(self) -> None:
        self.decoded: list[int] = []  # images per decode call
        self.reports: list[list[tuple[int, list[str]]]] = []
        self.reported = threading.Event()

    def decode(self, latents: torch.Tensor) -> list[np.ndarray]:
        self.decoded.append(latents.shape[0])
        return [np.full((4, 4, 3), 128, np.uint8) for _ in range(latents.shape[0])]

    def on_frames(self, steps: list[tuple[int, list[str]]]) -> None:
        self.reports.append(steps)
        self.reported.set()


def writer(
    tmp_path: Path, recorder: Recorder, *, seeds: int = 1, interval: float = 60.0, queue: int = 8
) -> FrameWriter:
    storage = LocalStorage(tmp_path, secret="s", base_url="http://x", ttl_seconds=60)
    return FrameWriter(
        storage=storage,
        decode=recorder.decode,
        job_id=JOB,
        prompt="a cat",
        seeds=list(range(1, seeds + 1)),
        on_frames=recorder.on_frames,
        queue_size=queue,
        progress_interval=interval,
    )


def latents(seeds: int = 1) -> torch.Tensor:
    return torch.zeros(seeds, 4, 2, 2)


@pytest.mark.parametrize("seeds", [1, 2])
def test_every_step_is_written_and_reported_once_in_order(tmp_path: Path, seeds: int) -> None:
    recorder = Recorder()
    frames = writer(tmp_path, recorder, seeds=seeds, interval=0.01)
    for step in range(1, 21):
        frames.submit(step, latents(seeds))
        time.sleep(0.002)
    frames.close()
    assert [len(keys) for keys in frames.keys] == [20] * seeds
    for index, keys in enumerate(frames.keys):
        assert [k.rsplit("/", 1)[1][4:7] for k in keys] == [f"{s:03d}" for s in range(1, 21)]
        assert all((tmp_path / k).read_bytes().startswith(b"\x89PNG") for k in keys), index
    assert [step for report in recorder.reports for step, _ in report] == list(range(1, 21))
    # Each step's report names that step's frame of every image of the batch.
    reported = [keys for report in recorder.reports for _, keys in report]
    assert reported == [[keys[n] for keys in frames.keys] for n in range(20)]
    assert sum(recorder.decoded) == 20 * seeds


def test_the_writer_wakes_per_batch_not_per_step(tmp_path: Path) -> None:
    """Steps arriving one by one (as from a sampler) are decoded in batches: the first at
    once (its report is due), then a batch each time one fills, the rest at the end."""
    recorder = Recorder()
    frames = writer(tmp_path, recorder)
    for step in range(1, 18):
        frames.submit(step, latents())
        time.sleep(0.003)  # the writer is idle between steps: it would write each one
    frames.close()
    assert sum(recorder.decoded) == 17
    assert len(recorder.decoded) <= 4, recorder.decoded
    assert max(recorder.decoded) == MAX_DECODE_BATCH


def test_a_step_waits_no_longer_than_the_progress_interval(tmp_path: Path) -> None:
    recorder = Recorder()
    frames = writer(tmp_path, recorder, interval=0.2)
    frames.submit(1, latents())
    assert recorder.reported.wait(5)  # the first step: at once
    recorder.reported.clear()
    started = time.monotonic()
    frames.submit(2, latents())  # a lone step, no batch to fill
    assert recorder.reported.wait(5)
    assert time.monotonic() - started < 2
    assert recorder.reports[-1][0][0] == 2
    frames.close()


def test_close_writes_a_partial_batch_at_once(tmp_path: Path) -> None:
    recorder = Recorder()
    frames = writer(tmp_path, recorder)  # the next report is due in a minute
    for step in range(1, 5):
        frames.submit(step, latents())
    started = time.monotonic()
    frames.close()
    assert time.monotonic() - started < 2
    assert [step for report in recorder.reports for step, _ in report] == [1, 2, 3, 4]


def test_a_queue_smaller_than_a_batch_does_not_stall_the_sampler(tmp_path: Path) -> None:
    recorder = Recorder()
    frames = writer(tmp_path, recorder, queue=2)
    started = time.monotonic()
    for step in range(1, 11):
        frames.submit(step, latents())
    frames.close()
    assert time.monotonic() - started < 2  # not a report interval (a minute) per batch
    assert len(frames.keys[0]) == 10


def test_a_decoder_error_reaches_the_sampling_thread(tmp_path: Path) -> None:
    recorder = Recorder()

    def broken(latents: torch.Tensor) -> list[np.ndarray]:
        raise RuntimeError("decoder broke")

    frames = writer(tmp_path, recorder, interval=0.0)
    frames.decode = broken
    with pytest.raises(RuntimeError, match="decoder broke"):
        for step in range(1, 100):
            frames.submit(step, latents())
            time.sleep(0.01)
        frames.close()

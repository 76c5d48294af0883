"""``worker.uploader``: frames stored a batch at a time by a real helper process, its
errors and death reported as storage errors, and a new helper after a dead one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from stepanim.settings import Settings
from stepanim.storage import LocalStorage, StorageError
from tests.conftest import S3Server
from worker.frames import FrameWriter
from worker.uploader import Uploader, frame_uploader

JOB = "0123456789abcdef0123456789abcdef"


def local_settings(root: Path) -> Settings:
    return Settings(_env_file=None, storage_backend="local", local_storage_dir=root)


@pytest.fixture
def uploader(tmp_path: Path) -> Iterator[Uploader]:
    up = Uploader(local_settings(tmp_path))
    yield up
    up.close()


def helper_pid(up: Uploader) -> int:
    assert up._proc is not None
    return up._proc.pid


def test_a_batch_is_stored_by_a_helper_process(tmp_path: Path, uploader: Uploader) -> None:
    items = [(f"jobs/{JOB}/frames/{n:03d}.png", bytes([n]) * (100 + n), "image/png") for n in range(8)]
    uploader.put_many(items)
    for key, body, _ in items:
        assert (tmp_path / key).read_bytes() == body
    assert helper_pid(uploader) != os.getpid()


def test_a_refused_item_fails_its_batch_with_the_storage_message_and_the_helper_goes_on(
    tmp_path: Path, uploader: Uploader
) -> None:
    uploader.put_many([("a.png", b"1", "image/png")])
    pid = helper_pid(uploader)
    with pytest.raises(StorageError, match="key outside storage"):
        uploader.put_many([("b.png", b"2", "image/png"), ("../escape.png", b"3", "image/png")])
    assert not (tmp_path.parent / "escape.png").exists()
    uploader.put_many([("c.png", b"4", "image/png")])
    assert (tmp_path / "c.png").read_bytes() == b"4"
    assert helper_pid(uploader) == pid


def test_a_dead_helper_fails_the_batch_and_the_next_batch_starts_a_new_one(tmp_path: Path, uploader: Uploader) -> None:
    uploader.put_many([("a.png", b"1", "image/png")])
    pid = helper_pid(uploader)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(StorageError, match="frame uploader process"):
        uploader.put_many([("b.png", b"2", "image/png")])
    uploader.put_many([("c.png", b"3", "image/png")])
    assert (tmp_path / "c.png").read_bytes() == b"3"
    assert helper_pid(uploader) != pid


def test_the_helper_outlasts_a_sigterm_to_the_process_group(tmp_path: Path, uploader: Uploader) -> None:
    """A warm shutdown signals the whole group; the render it lets finish still stores its frames."""
    uploader.put_many([("a.png", b"1", "image/png")])
    pid = helper_pid(uploader)
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.2)
    uploader.put_many([("b.png", b"2", "image/png")])
    assert (tmp_path / "b.png").read_bytes() == b"2"
    assert helper_pid(uploader) == pid
    uploader.close()  # the pipe closes: it ends
    assert uploader._proc is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_bad_settings_fail_the_first_batch_with_their_message(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, storage_backend="s3", s3_endpoint_url="not a url at all")
    up = Uploader(settings)
    try:
        with pytest.raises(StorageError, match="did not start: ValueError"):
            up.put_many([("a.png", b"1", "image/png")])
    finally:
        up.close()


def test_the_helper_ends_when_its_worker_is_killed(tmp_path: Path) -> None:
    """A render worker killed with SIGKILL closes the pipe: its helper ends by itself."""
    script = (
        "import os, sys\n"
        "from stepanim.settings import Settings\n"
        "from worker.uploader import Uploader\n"
        f"up = Uploader(Settings(_env_file=None, storage_backend='local', local_storage_dir={str(tmp_path)!r}))\n"
        "up.put_many([('a.png', b'1', 'image/png')])\n"
        "print(up._proc.pid, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == -signal.SIGKILL, run.stderr
    pid = int(run.stdout.strip())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    pytest.fail(f"the helper {pid} outlived its killed worker")


def test_frames_reach_s3_through_the_helper(s3: S3Server) -> None:
    up = Uploader(s3.settings_object())
    try:
        up.put_many([(f"jobs/{JOB}/frames/{n:03d}.png", b"png", "image/png") for n in range(1, 4)])
    finally:
        up.close()
    assert s3.keys() == [f"jobs/{JOB}/frames/{n:03d}.png" for n in range(1, 4)]


def test_a_frame_writer_with_an_uploader_stores_and_reports_every_step(tmp_path: Path, uploader: Uploader) -> None:
    reports: list[tuple[int, list[str]]] = []
    frames = FrameWriter(
        storage=LocalStorage(tmp_path, secret="s", base_url="http://x", ttl_seconds=60),
        decode=lambda latents: [np.full((4, 4, 3), 128, np.uint8) for _ in range(latents.shape[0])],
        job_id=JOB,
        prompt="a cat",
        seeds=[1, 2],
        on_frames=reports.extend,
        progress_interval=0.01,
        uploader=uploader,
    )
    for step in range(1, 12):
        frames.submit(step, torch.zeros(2, 4, 2, 2))
    frames.close()
    assert [len(keys) for keys in frames.keys] == [11, 11]
    assert all((tmp_path / key).read_bytes().startswith(b"\x89PNG") for keys in frames.keys for key in keys)
    assert [step for step, _ in reports] == list(range(1, 12))


@pytest.mark.parametrize(
    ("choice", "backend", "expected"),
    [("auto", "s3", True), ("auto", "local", False), ("thread", "s3", False), ("process", "local", True)],
)
def test_who_stores_the_frames(choice: str, backend: str, expected: bool) -> None:
    settings = Settings(_env_file=None, frame_uploader=choice, storage_backend=backend)  # type: ignore[arg-type]
    assert (frame_uploader(settings) is not None) is expected

"""The README's commands, run as a user runs them: ``make demo`` prints the path of a
playable h264 video as its last line; ``make serve`` (``scripts/serve.py``) stops every
process it started when Ctrl-C reaches it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from scripts.devstack import ROOT, free_port
from tests.conftest import ffprobe_json
from tests.processes import descendants, is_running, start_serve

pytestmark = pytest.mark.slow


def test_make_demo_prints_the_path_of_a_playable_h264_video_last(tmp_path: Path) -> None:
    venv = Path(sys.executable).parent.parent  # the venv running these tests: make must not build another
    done = subprocess.run(
        ["make", "-s", "demo", f"VENV={venv}", "PROMPT=a rocket", f"DEMO_ARGS=--out {tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert any("step 30/30" in line for line in lines), lines  # it showed the progress
    assert not any(line.startswith("warning:") for line in lines), lines  # the emoji model knows "rocket"
    video = Path(lines[-1])
    assert video.is_file() and video.parent == tmp_path, lines[-3:]
    probe = ffprobe_json(video)
    stream = probe["streams"][0]
    assert stream["codec_name"] == "h264" and stream["pix_fmt"] == "yuv420p"
    assert abs(float(probe["format"]["duration"]) - 3.0) < 0.15


def test_serve_stops_every_process_it_started_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    serve, log = start_serve(tmp_path, port)
    try:
        deadline = time.monotonic() + 180
        while "serving on" not in log.read_text():
            assert serve.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        started = descendants(serve.pid)
        assert len(started) >= 6, started  # redis, api, three workers (and their children), reconciler

        os.killpg(serve.pid, signal.SIGINT)  # what Ctrl-C does: the terminal signals the foreground group
        assert serve.wait(120) == 0, log.read_text()
        assert "stopping" in log.read_text()
        assert {pid for pid in started if is_running(pid)} == set()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()

"""What an operator found from outside (issue #17), each on real processes: hostile text in
every text field, published capabilities across a Redis restart, ffmpeg outliving a killed
encoder, and ``make serve`` restarting a crashed worker."""

from __future__ import annotations

import http.server
import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from scripts.devstack import free_port
from tests.conftest import RECEIVER_HOST, QuietHandler, ffprobe_json, serving
from tests.faults.conftest import Service, body, wait_for
from tests.processes import command_line, descendants, is_running, parents, start_serve

pytestmark = pytest.mark.slow

EMOJI = "🦊" * 2000  # the prompt limit, each a single code point
RTL = "\u202eمنارة على جرف عند الفجر שלום"  # right-to-left override, Arabic and Hebrew


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def image_server() -> Iterator[str]:
    """Serves one PNG at every path, on the loopback address the test stacks may call."""
    data = png_bytes()

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    with serving(http.server.ThreadingHTTPServer((RECEIVER_HOST, 0), Handler)) as server:
        yield f"http://{RECEIVER_HOST}:{server.server_address[1]}"


def post_raw(service: Service, request: dict[str, Any], **headers: str) -> httpx.Response:
    """POST the body as JSON with every non-ASCII character escaped (``\\ud800`` stays a lone
    surrogate on the server's side, as a client writing ASCII JSON would send it)."""
    content = json.dumps(request).encode()
    return httpx.post(
        f"{service.url}/animations",
        content=content,
        headers={"content-type": "application/json", **headers},
        timeout=30,
    )


def test_every_text_field_is_refused_at_create_or_rendered_with_metadata(
    make_service: Callable[..., Service], image_server: str, tmp_path: Path
) -> None:
    service = make_service(backend="local")
    hook = f"http://{RECEIVER_HOST}:{free_port()}/hook"  # nobody listens: the job still succeeds
    small = {**body(steps=2), "animation": {"duration": 0.5}}
    # (field, request fields, must it be refused?) Control characters and lone surrogates never
    # get into text that reaches files and metadata; a URL carries them percent-encoded (or refuses them).
    cases: list[tuple[str, dict[str, Any], bool | None]] = []
    for value in ("a\x00b", "a\x07b", "\x1b[31mred", "a\ud800b"):
        cases += [
            ("prompt", {"prompt": value}, True),
            ("negative_prompt", {"negative_prompt": value}, True),
            ("model", {"model": value}, True),
            ("init_image.data", {"init_image": {"data": value}}, True),
            ("init_image.upload_id", {"init_image": {"upload_id": value}}, True),
            ("webhook", {"webhook": f"{hook}/{value}"}, None),
            ("init_image.url", {"init_image": {"url": f"{image_server}/{value}.png"}}, None),
        ]
    for value in (EMOJI, RTL):
        cases += [
            ("prompt", {"prompt": value}, False),
            ("negative_prompt", {"negative_prompt": value}, False),
            ("webhook", {"webhook": f"{hook}/{value[:300]}"}, False),
            ("init_image.url", {"init_image": {"url": f"{image_server}/{value[:300]}.png"}}, False),
            ("model", {"model": value}, True),  # a folder name or hub id: letters, digits, . _ - /
            ("init_image.data", {"init_image": {"data": value}}, True),  # not base64
        ]
    cases.append(("prompt", {"prompt": "x" * 2000}, False))  # exactly the limit
    rendered: list[tuple[str, str]] = []
    for field, extra, refuse in cases:
        response = post_raw(service, {**small, **extra})
        if refuse is not False and response.status_code == 422:
            message = response.json()["error"]["message"]
            assert message.startswith(f"{field}:"), (field, message)
            continue
        assert refuse is not True, (field, extra, response.status_code, response.text)
        assert response.status_code == 202, (field, extra, response.text)
        rendered.append((field, response.json()["id"]))
    jobs = service.wait_terminal([job_id for _, job_id in rendered], timeout=300)
    for field, job_id in rendered:
        job = jobs[job_id]
        assert job["status"] == "succeeded", (field, job["error"])
        video = tmp_path / f"{job_id}.mp4"
        video.write_bytes(httpx.get(job["video"]["url"], timeout=60).content)
        tags = {k.lower(): v for k, v in ffprobe_json(video)["format"]["tags"].items()}
        assert tags["title"].startswith(job["request"]["prompt"][:50]), field
        assert json.loads(tags["description"])["prompt"] == job["request"]["prompt"]


def test_the_prompt_field_names_the_character_it_refuses(make_service: Callable[..., Service]) -> None:
    service = make_service(backend="local")
    response = post_raw(service, {**body(), "prompt": "a\x00b", "negative_prompt": "c\ud800"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["message"].startswith("prompt: U+0000")
    assert [d["field"] for d in error["details"]] == ["prompt", "negative_prompt"]  # every cause, not the first
    assert "negative_prompt" in error["message"]


@pytest.fixture
def ffmpeg_without_av1(tmp_path: Path) -> str:
    """The real ffmpeg, listing itself as a build without libaom-av1."""
    script = tmp_path / "ffmpeg"
    script.write_text(
        '#!/bin/sh\nif [ "$2" = "-encoders" ]; then ffmpeg "$@" | grep -v libaom-av1; else exec ffmpeg "$@"; fi\n'
    )
    script.chmod(0o755)
    return str(script)


def test_capabilities_and_create_checks_survive_a_redis_restart(
    make_service: Callable[..., Service], ffmpeg_without_av1: str
) -> None:
    service = make_service(backend="local", STEPANIM_FFMPEG_PATH=ffmpeg_without_av1)
    caps = wait_for(
        lambda: httpx.get(f"{service.url}/capabilities", timeout=5).status_code == 200,
        timeout=60,
        what="capabilities published",
    )
    assert caps
    av1 = {**body(), "animation": {"codec": "av1"}}
    assert httpx.post(f"{service.url}/animations", json=av1, timeout=30).status_code == 422

    service.stack.restart_redis(kill=True)  # no append-only file: Redis comes back empty
    restarted = time.monotonic()

    def republished() -> bool:
        response = httpx.get(f"{service.url}/capabilities", timeout=5)
        return response.status_code == 200 and bool(response.json()["models"])

    wait_for(republished, timeout=30, what="capabilities and models published again")
    assert time.monotonic() - restarted < 15  # within seconds, not the 30 s refresh period
    time.sleep(6)  # the API's own 5 s cache of what it read before the restart
    refused = httpx.post(f"{service.url}/animations", json=av1, timeout=30)
    assert refused.status_code == 422, refused.text
    assert "av1 is not supported" in refused.json()["error"]["message"]
    job_id = service.post(body())
    assert service.wait_terminal([job_id])[job_id]["status"] == "succeeded"


def encoding_ffmpegs(worker: int) -> dict[int, int]:
    """The ffmpegs below a worker's main process that interpolate a video (not the capability
    probe's, which the encode worker's main process runs as it starts), each with its parent."""
    found = parents(descendants(worker, named="ffmpeg"))
    return {pid: parent for pid, parent in found.items() if "minterpolate" in command_line(pid)}


def test_ffmpeg_dies_with_an_encoder_killed_with_sigkill(make_service: Callable[..., Service]) -> None:
    service = make_service(backend="local")
    # A long motion-interpolated video of 256² frames: an ffmpeg left alone would work on for longer
    # than the 10 s each check waits. First in the stream worker (a thread pool: its ffmpegs are
    # children of its main process).
    mci = {"duration": 60, "fps": 60, "interpolation": "mci"}
    job_id = service.post(body(steps=30, capture={"upscale": 4}, animation=mci))
    stream = service.stack.procs["stream"]
    ffmpegs = wait_for(lambda: encoding_ffmpegs(stream.popen.pid), timeout=120, what="the stream's ffmpeg")
    os.kill(stream.popen.pid, signal.SIGKILL)  # no clean-up runs
    wait_for(lambda: not any(is_running(pid) for pid in ffmpegs), timeout=10, what="ffmpeg gone with its worker")
    service.stack.restart("stream")

    # The job falls back to the encode worker (prefork): a pool process killed alone (its main
    # process stays) takes its ffmpeg with it, and the job is still not lost.
    encoder = service.stack.procs["encode"]
    ffmpegs = wait_for(lambda: encoding_ffmpegs(encoder.popen.pid), timeout=120, what="the encode's ffmpeg")
    pool = set(ffmpegs.values())
    assert encoder.popen.pid not in pool  # each started by a pool process
    for pid in pool:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(is_running(pid) for pid in ffmpegs), timeout=10, what="ffmpeg gone with its pool process")
    job = service.wait_terminal([job_id], timeout=300)[job_id]
    assert job["status"] == "succeeded", job["error"]

    # The encode worker's main process killed: its pool processes go too.
    pool = descendants(encoder.popen.pid)
    assert pool
    os.kill(encoder.popen.pid, signal.SIGKILL)
    wait_for(lambda: not any(is_running(pid) for pid in pool), timeout=10, what="the pool gone with its worker")


def test_serve_restarts_a_worker_that_crashed_and_keeps_the_api_up(tmp_path: Path) -> None:
    port = free_port()
    serve, log = start_serve(tmp_path, port)
    api = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: "serving on" in log.read_text(), timeout=180, what="make serve up")
        celery = [
            pid
            for pid in descendants(serve.pid)
            if "encoder.app" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        ]
        main = min(celery)  # the worker's main process started before its pool
        os.kill(main, signal.SIGKILL)
        wait_for(lambda: "encode exited" in log.read_text(), timeout=30, what="the exit noticed")
        assert httpx.get(f"{api}/healthz", timeout=5).status_code == 200  # the API stayed up
        wait_for(lambda: "encode restarted" in log.read_text(), timeout=60, what="the worker restarted")
        assert serve.poll() is None
        created = httpx.post(
            f"{api}/animations", json={"prompt": "a 7", "steps": 4, "width": 32, "height": 32}, timeout=30
        )
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]

        def finished() -> dict[str, Any] | None:
            job: dict[str, Any] = httpx.get(f"{api}/animations/{job_id}", timeout=10).json()
            return job if job["status"] in ("succeeded", "failed", "canceled") else None

        job = wait_for(finished, timeout=120, what="a job after the restart")
        assert job["status"] == "succeeded", job["error"]
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()

"""The ``stepanim`` CLI (as a separate process) and the Python client against the whole service on
real processes, with the tiny model and local storage."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from client import AsyncClient, Client
from scripts.devstack import free_port
from stepanim.settings import DEV_WEBHOOK_SECRET
from tests.conftest import WebhookReceiver, ffprobe_json
from tests.e2e.conftest import Service

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--steps", "3", "--width", "64", "--height", "64", "--duration", "1"]

pytestmark = pytest.mark.parametrize("service", ["local"], indirect=True)  # one backend is enough here


def stepanim(service: Service, *argv: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STEPANIM_URL": service.url, "PYTHONPATH": str(ROOT)}
    for name in ("STEPANIM_API_KEY", "STEPANIM_WEBHOOK_SECRET"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "client", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stderr)
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_submit_wait_gives_a_video_url_and_the_webhook_verifies(
    service: Service, webhook_receiver: WebhookReceiver, tmp_path: Path
) -> None:
    result = stepanim(
        service,
        *("submit", "a lighthouse on a cliff", *SMALL, "--seed", "5", "--wait"),
        *("--webhook", webhook_receiver.url, "--webhook-event", "animation.succeeded"),
    )
    url = ok(result).strip()
    assert len(result.stdout.splitlines()) == 1 and url.startswith(service.url)
    progress = result.stderr.splitlines()
    assert progress[0].startswith("animation ") and progress[0].endswith(" queued")
    assert any(line.startswith("rendering [") and line.endswith(" 3/3 steps") for line in progress), progress
    assert progress[-2:] == ["encoding", "succeeded"]

    download = httpx.get(url, timeout=30)
    assert download.status_code == 200
    video = tmp_path / "video.mp4"
    video.write_bytes(download.content)
    stream = ffprobe_json(video)["streams"][0]
    assert stream["codec_name"] == "h264" and int(stream["nb_read_frames"]) >= 3

    # The delivery the notify worker really sent, saved as a receiver would: body and headers.
    delivery = webhook_receiver.wait_for(1)[0]
    body, headers = tmp_path / "body.json", tmp_path / "headers.json"
    body.write_bytes(delivery.body)
    headers.write_text(json.dumps(delivery.headers))
    verified = ok(stepanim(service, "webhook", "verify", "--body", str(body), "--headers", str(headers)))
    assert verified.startswith(f"valid signature: {delivery.headers['webhook-id']} (animation.succeeded, animation ")

    lines = tmp_path / "headers.txt"  # the other format: `Name: value` lines, and the secret given
    lines.write_text("POST /hook HTTP/1.1\n" + "".join(f"{k}: {v}\n" for k, v in delivery.headers.items()))
    ok(
        stepanim(
            service, "webhook", "verify", "--body", str(body), "--headers", str(lines), "--secret", DEV_WEBHOOK_SECRET
        )
    )

    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(delivery.body.replace(b'"succeeded"', b'"failed"', 1))
    assert tampered.read_bytes() != delivery.body
    rejected = stepanim(service, "webhook", "verify", "--body", str(tampered), "--headers", str(headers))
    one_line_error(rejected, 1, "invalid webhook signature: no signature matches")
    other_secret = "whsec_" + "A" * 43 + "="
    wrong = stepanim(
        service, "webhook", "verify", "--body", str(body), "--headers", str(headers), "--secret", other_secret
    )
    one_line_error(wrong, 1, "invalid webhook signature")


def test_status_list_renditions_and_cancel_of_a_finished_job(service: Service, tmp_path: Path) -> None:
    job_id = ok(stepanim(service, "submit", "the number 3", *SMALL)).strip()
    assert len(job_id) == 32
    path = tmp_path / "out.mp4"
    assert ok(stepanim(service, "wait", job_id, "-o", str(path), "--quiet")).strip() == str(path)
    assert ffprobe_json(path)["streams"][0]["codec_name"] == "h264"

    status = ok(stepanim(service, "status", job_id))
    assert f"id         {job_id}" in status and "status     succeeded" in status and "video      http" in status
    assert json.loads(ok(stepanim(service, "--json", "status", job_id)))["id"] == job_id
    listed = ok(stepanim(service, "list", "--limit", "5"))
    assert any(line.startswith(f"{job_id}  succeeded") for line in listed.splitlines()), listed
    page = json.loads(ok(stepanim(service, "list", "--status", "succeeded", "--json")))
    assert job_id in [job["id"] for job in page["data"]]

    gif = tmp_path / "again.gif"
    rerender = stepanim(service, "rerender", job_id, "--codec", "gif", "--duration", "1", "--fps", "10", "-o", str(gif))
    assert ok(rerender).strip() == str(gif)
    stream = ffprobe_json(gif)["streams"][0]
    assert stream["codec_name"] == "gif" and int(stream["nb_read_frames"]) == 10
    queued = json.loads(ok(stepanim(service, "encode", job_id, "--codec", "vp9", "--duration", "1", "--json")))
    assert queued["status"] == "queued" and queued["options"]["codec"] == "vp9"

    finished = stepanim(service, "cancel", job_id)
    one_line_error(finished, 3, "the animation already succeeded; it cannot be canceled (HTTP 409 already_finished)")


def test_cancel_a_rendering_job_then_wait_reports_it(service: Service) -> None:
    job_id = ok(stepanim(service, "submit", "a long one", "--steps", "200", "--width", "64", "--height", "64")).strip()
    canceled = ok(stepanim(service, "cancel", job_id))
    assert canceled.startswith(f"{job_id} ") and ("canceled" in canceled or "cancel requested" in canceled)
    waited = stepanim(service, "wait", job_id, "--quiet", "--timeout", "120")
    one_line_error(waited, 4, f"animation {job_id} canceled")
    assert json.loads(ok(stepanim(service, "status", job_id, "--json")))["status"] == "canceled"


def test_errors_exit_non_zero_with_one_line(service: Service, tmp_path: Path) -> None:
    # (This service runs in development mode, where any API key is accepted: a 401 needs real keys.)
    cases = [
        # The server's limits (GET /capabilities) are checked before anything is sent, naming each option.
        (("submit", "p", "--steps", "5000", "--width", "4000"), 2, "--steps: 5000 is above this server's limit of 200"),
        (("submit", "p", "--width", "4000"), 2, "--width: 4000 is outside 32-2048 pixels"),
        (("submit", "p", "--width", "63"), 3, "width: Input should be a multiple of 8 (HTTP 422 invalid_request)"),
        (("status", "0" * 32), 3, f"no animation with id '{'0' * 32}' (HTTP 404 not_found)"),
        (("submit", "p", "--steps", "many"), 2, "argument --steps: invalid int value: 'many'"),
        (("submit", "p", "--init-image", str(tmp_path / "missing.png")), 2, "--init-image: no such file"),
        (("--url", f"http://127.0.0.1:{free_port()}", "list"), 6, "cannot reach the API"),
    ]
    for argv, code, message in cases:
        one_line_error(stepanim(service, *argv), code, message)


def test_img2img_from_an_uploaded_init_image(service: Service, tmp_path: Path) -> None:
    image = tmp_path / "init.png"
    Image.new("RGB", (80, 64), (200, 30, 30)).save(image)
    upload_id = ok(stepanim(service, "upload", str(image))).strip()
    assert len(upload_id) == 32
    result = stepanim(
        service,
        *("submit", "the same at night", *SMALL, "--steps", "4", "--strength", "0.5", "--init-image", str(image)),
        *("--decoder", "approx", "--wait", "--json", "--quiet"),
    )
    job = json.loads(ok(result))
    assert job["status"] == "succeeded" and job["progress"]["total"] == 2  # int(4 x 0.5) steps
    assert job["request"]["init_image"]["upload_id"] not in (None, upload_id)  # uploaded again by submit


def test_the_python_clients_follow_events_and_replay_an_idempotent_create(service: Service, tmp_path: Path) -> None:
    request = {"prompt": "digits", "steps": 3, "width": 64, "height": 64, "animation": {"duration": 1}}
    with Client(service.url) as api:
        first = api.create(request, idempotency_key="e2e-client-1")
        again = api.create(request, idempotency_key="e2e-client-1")
        assert again.id == first.id  # the same job: no second render
        events = list(api.events(first.id))
        steps = [e.data["step"] for e in events if e.event == "progress"]
        assert steps == [1, 2, 3]
        assert events[-1].is_final and events[-1].status == "succeeded"
        assert events[-1].animation is not None and events[-1].animation.video is not None
        resumed = list(api.events(first.id, last_event_id=events[-2].id))
        assert [e.id for e in resumed] == [events[-1].id]
        assert first.id in [job.id for job in api.list(limit=10).data]

    async def run() -> bytes:
        async with AsyncClient(service.url) as api:
            job = await api.create(request)
            seen: list[str] = []
            done = await api.wait(job.id, timeout=180, on_event=lambda e: seen.append(e.event))
            assert done.status == "succeeded" and done.video is not None
            assert seen[-1] == "status" and "progress" in seen
            path = await api.download(done.video.url, tmp_path / "async.mp4")
            return path.read_bytes()

    started = time.monotonic()
    assert asyncio.run(run())[4:8] == b"ftyp"
    assert time.monotonic() - started < 180


def test_a_batch_downloads_one_file_per_image_with_its_seed(service: Service, tmp_path: Path) -> None:
    result = stepanim(
        service,
        *("submit", "a batch", *SMALL, "--seed", "70", "--batch-size", "2", "--quiet"),
        *("-o", str(tmp_path / "cat.mp4")),
    )
    # -o cat.mp4 with two images: cat-70.mp4 and cat-71.mp4, printed one per line for a shell to use.
    paths = [Path(line) for line in ok(result).splitlines()]
    assert paths == [tmp_path / "cat-70.mp4", tmp_path / "cat-71.mp4"]
    assert all(ffprobe_json(p)["streams"][0]["codec_name"] == "h264" for p in paths)
    request = {"prompt": "a batch", "steps": 2, "seed": 80, "batch_size": 3, "width": 64, "height": 64}
    with Client(service.url) as api:
        job = api.wait(api.create(request).id, timeout=180)
        saved = api.download_videos(job, tmp_path / "lighthouse.mp4")
    assert [p.name for p in saved] == ["lighthouse-80.mp4", "lighthouse-81.mp4", "lighthouse-82.mp4"]
    assert len({p.read_bytes() for p in saved}) == 3

"""POST /animations -> render worker -> encoder -> signed video URL -> webhook, on real
processes (redis-server, moto S3 or local storage, uvicorn, Celery workers, ffmpeg)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from stepanim.settings import DEV_WEBHOOK_SECRET
from tests.conftest import WebhookReceiver, ffprobe_json
from tests.e2e.conftest import Service

PROMPT = 'a "lighthouse" / on a cliff\nat dawn ✨'


def test_a_job_becomes_a_video(service: Service, webhook_receiver: WebhookReceiver, tmp_path: Path) -> None:
    body = {
        "prompt": PROMPT,
        "steps": 8,
        "width": 64,
        "height": 64,
        "seed": 7,
        "scheduler": "euler_a",
        "animation": {"duration": 2, "codec": "h264"},
        "webhook": webhook_receiver.url,
    }
    response = service.post(body)
    assert response.status_code == 202, response.text
    created = response.json()
    assert response.headers["location"] == created["urls"]["get"] == f"{service.url}/animations/{created['id']}"
    assert created["status"] == "queued"
    assert created["seed"] == 7

    job = service.wait(created["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["step"] == job["progress"]["total"] == 8
    assert job["started_at"] <= job["finished_at"]
    assert job["progress"]["latest_frame_url"]

    video = job["video"]
    assert video["filename"] == "7-a lighthouse on a cliff at dawn ✨.mp4"
    download = httpx.get(video["url"], timeout=30)
    assert download.status_code == 200
    path = tmp_path / "video.mp4"
    path.write_bytes(download.content)
    info = ffprobe_json(path)
    stream = info["streams"][0]
    assert stream["codec_name"] == "h264"
    assert abs(float(info["format"]["duration"]) - 2.0) <= 0.05 * 2.0
    assert int(stream["nb_read_frames"]) >= 8

    frames = service.stored(f"jobs/{job['id']}/frames/")
    names = sorted(k.rsplit("/", 1)[1] for k in frames)
    assert names == [f"0000{step:03d}-7-a lighthouse on a cliff at dawn ✨.png" for step in range(1, 9)]

    deliveries = webhook_receiver.wait_for(1)
    assert len(deliveries) == 1
    payload = deliveries[0].json()
    assert payload["type"] == "animation.succeeded"
    assert payload["data"]["id"] == job["id"]
    assert payload["data"]["status"] == "succeeded"
    assert payload["data"]["video"]["filename"] == video["filename"]
    assert deliveries[0].headers["webhook-signature"].startswith("v1,")
    verify = readme_verifier()
    assert verify(DEV_WEBHOOK_SECRET, deliveries[0].headers, deliveries[0].body)
    assert not verify(DEV_WEBHOOK_SECRET, deliveries[0].headers, deliveries[0].body + b" ")


def readme_verifier() -> Any:
    """The receiver-side check exactly as the README shows it."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = next(block for block in readme.split("```python\n")[1:] if "def verify(" in block).split("```")[0]
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 (our own README)
    return namespace["verify"]


def test_an_invalid_job_is_refused_and_leaves_nothing(service: Service) -> None:
    redis_before, storage_before = service.redis_keys(), service.stored()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"prompt": "x", "steps": 0}, "steps"),
        ({"prompt": "x", "animation": {"duration": 500}}, "animation.duration"),
        ({"prompt": "x", "scheduler": "bogus"}, "scheduler"),
        ({"steps": 5}, "prompt"),
        ({"prompt": "x", "steps": 300}, "steps"),  # schema allows it; this server's limit (200) does not
    ]
    for body, field in cases:
        response = service.post(body)
        assert response.status_code == 422, (body, response.text)
        error = response.json()["error"]
        assert error["message"].startswith(f"{field}:"), error
    response = httpx.post(
        f"{service.url}/animations", content=b"{not json", timeout=10, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert service.redis_keys() == redis_before
    assert service.stored() == storage_before


def test_unknown_job_is_404(service: Service) -> None:
    for job_id in ["0" * 32, "not-an-id"]:
        response = httpx.get(f"{service.url}/animations/{job_id}", timeout=10)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_health_and_readiness(service: Service) -> None:
    assert httpx.get(f"{service.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{service.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"redis": "ok", "storage": "ok"}


def test_an_unknown_model_is_refused_at_create_naming_the_models_there_are(service: Service) -> None:
    unknown = service.post({"prompt": "x", "model": "no-such-model", "steps": 2, "width": 64, "height": 64})
    assert unknown.status_code == 422
    assert (
        unknown.json()["error"]["message"]
        == "model: no model 'no-such-model' on this server's render workers (tiny-sd)"
    )


def test_a_hub_model_that_cannot_load_fails_clearly_and_the_worker_stays_up(service: Service) -> None:
    bad = service.post({"prompt": "x", "model": "nobody/no-such-model", "steps": 2, "width": 64, "height": 64})
    assert bad.status_code == 202  # a hub id: the workers may have it; this one cannot load it (offline)
    job = service.wait(bad.json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "model_error"
    assert "nobody/no-such-model" in job["error"]["message"]
    good = service.post({"prompt": "x", "steps": 2, "width": 64, "height": 64, "animation": {"duration": 1}})
    assert service.wait(good.json()["id"])["status"] == "succeeded"


def test_cancel_while_encoding_stops_ffmpeg_and_publishes_nothing(service: Service) -> None:
    if service.backend != "local":
        pytest.skip("one backend is enough: the stop happens in the encoder process")
    # A long motion-interpolated video of a few small frames: ffmpeg runs for many seconds.
    body = {
        "prompt": "stop me",
        "steps": 4,
        "width": 64,
        "height": 64,
        "seed": 3,
        "animation": {"duration": 120, "interpolation": "mci"},
    }
    job_id = service.post(body).json()["id"]
    deadline = time.monotonic() + 120
    while (status := service.get(job_id)["status"]) != "encoding":
        # One read per round: the status may move on between two reads.
        assert status in ("queued", "rendering"), status
        assert time.monotonic() < deadline, "the job never reached encoding"
        time.sleep(0.05)
    response = httpx.post(f"{service.url}/animations/{job_id}/cancel", timeout=30)
    assert response.status_code == 200, response.text
    job = service.wait(job_id)
    assert job["status"] == "canceled" and job["video"] is None
    # The encoder notices within about half a second and kills ffmpeg; give it a moment, then
    # check that no video was ever published for this job.
    time.sleep(3)
    assert not service.stored(f"jobs/{job_id}/videos/")
    logs = [(service.stack.workdir / "logs" / f"{name}.log").read_text() for name in ("encode", "stream")]
    assert any("ffmpeg stopped, nothing published" in log for log in logs)  # the stream's, or post hoc

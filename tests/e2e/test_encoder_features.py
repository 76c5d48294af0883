"""Encoder features on the whole running service: capabilities, renditions (up front and
later, from stored frames), keep/delete frames, frames-only, and run on incomplete data."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from stepanim.store import JobStore
from tests.conftest import ffprobe_json
from tests.e2e.conftest import Service

SMALL = {"steps": 6, "width": 64, "height": 64, "seed": 11, "prompt": 're "encode" / me\n✨'}
NAME = "11-re encode me ✨"


def capabilities(service: Service, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{service.url}/capabilities", timeout=10)
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            return response.json()  # type: ignore[no-any-return]
        time.sleep(0.2)


def wait_rendition(service: Service, job_id: str, rendition_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{service.url}/animations/{job_id}/renditions/{rendition_id}", timeout=10)
        rendition = response.json()
        if rendition["status"] in ("succeeded", "failed"):
            return rendition  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise TimeoutError(f"rendition {rendition_id} not finished: {rendition}")


def probe_url(url: str, path: Path) -> dict[str, Any]:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200
    path.write_bytes(response.content)
    return ffprobe_json(path)


def test_capabilities_come_from_the_encoders_ffmpeg(service: Service) -> None:
    caps = capabilities(service)
    assert set(caps["codecs"]) == {"h264", "h265", "vp9", "av1", "prores", "gif"}
    assert set(caps["interpolations"]) == {"none", "blend", "mci"}
    assert "ddim" in caps["schedulers"] and "plms" in caps["schedulers"]
    # The render worker publishes the models in its folder when it starts (maybe after the encoder).
    deadline = time.monotonic() + 60
    while not caps["models"] and time.monotonic() < deadline:
        time.sleep(0.2)
        caps = capabilities(service)
    assert [m["name"] for m in caps["models"]] == ["tiny-sd"]
    assert caps["default_model"] == "tiny-sd"


def test_renditions_up_front_and_later(service: Service, tmp_path: Path) -> None:
    capabilities(service)
    body = {
        **SMALL,
        "animation": {"duration": 1, "codec": "h264"},
        "renditions": [{"codec": "gif", "duration": 2}, {"codec": "h265", "duration": 1, "interpolation": "blend"}],
    }
    job = service.wait(service.post(body).json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert [r["status"] for r in job["renditions"]] == ["succeeded", "succeeded"]
    gif, h265 = job["renditions"]
    assert gif["video"]["filename"] == f"{NAME}.gif" and gif["options"]["codec"] == "gif"
    assert probe_url(gif["video"]["url"], tmp_path / "a.gif")["streams"][0]["codec_name"] == "gif"
    assert probe_url(h265["video"]["url"], tmp_path / "b.mp4")["streams"][0]["codec_tag_string"] == "hvc1"

    url = f"{service.url}/animations/{job['id']}/renditions"
    created = httpx.post(url, json={"codec": "vp9", "duration": 2, "interpolation": "mci", "fps": 24}, timeout=30)
    assert created.status_code == 202, created.text
    rendition = wait_rendition(service, job["id"], created.json()["id"])
    assert rendition["status"] == "succeeded", rendition["error"]
    info = probe_url(rendition["video"]["url"], tmp_path / "c.webm")
    assert info["streams"][0]["codec_name"] == "vp9"
    assert int(info["streams"][0]["nb_read_frames"]) == 48
    assert rendition["video"]["filename"] == f"{NAME}.webm"
    listed = service.get(job["id"])["renditions"]
    assert [r["id"] for r in listed] == [gif["id"], h265["id"], rendition["id"]]
    keys = [k for k in service.stored() if f"/{rendition['id']}/" in k]
    assert keys == [f"jobs/{job['id']}/renditions/{rendition['id']}/{NAME}.webm"]


def test_a_rendition_request_with_an_idempotency_key_is_made_once(service: Service) -> None:
    if service.backend != "local":
        pytest.skip("API logic: one backend is enough")
    job = service.wait(service.post({**SMALL, "animation": {"duration": 1}}).json()["id"])
    assert job["status"] == "succeeded", job["error"]
    url = f"{service.url}/animations/{job['id']}/renditions"
    key = {"Idempotency-Key": "again-1"}
    first = httpx.post(url, json={"codec": "gif", "duration": 1}, headers=key, timeout=30)
    again = httpx.post(url, json={"codec": "gif", "duration": 1}, headers=key, timeout=30)
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    other = httpx.post(url, json={"codec": "vp9", "duration": 1}, headers=key, timeout=30)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    # The same key on another animation is another request.
    job2 = service.wait(service.post({**SMALL, "animation": {"duration": 1}}).json()["id"])
    url2 = f"{service.url}/animations/{job2['id']}/renditions"
    elsewhere = httpx.post(url2, json={"codec": "gif", "duration": 1}, headers=key, timeout=30)
    assert elsewhere.status_code == 202 and "Idempotent-Replayed" not in elsewhere.headers
    assert [r["id"] for r in service.get(job["id"])["renditions"]] == [first.json()["id"]]
    assert wait_rendition(service, job["id"], first.json()["id"])["status"] == "succeeded"


def test_deleted_frames_cannot_be_reencoded(service: Service) -> None:
    job = service.wait(service.post({**SMALL, "animation": {"duration": 1, "keep_frames": False}}).json()["id"])
    assert job["status"] == "succeeded", job["error"]
    keys = service.stored(f"jobs/{job['id']}/")
    assert not [k for k in keys if "/frames/" in k]
    assert [k for k in keys if "/videos/" in k]
    response = httpx.post(f"{service.url}/animations/{job['id']}/renditions", json={"codec": "vp9"}, timeout=30)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "frames_deleted"


def test_frames_only(service: Service) -> None:
    job = service.wait(service.post({**SMALL, "animation": {"frames_only": True}}).json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["video"] is None
    assert len(job["frame_urls"]) == 6
    first = httpx.get(job["frame_urls"][0], timeout=30)
    assert first.status_code == 200 and first.content.startswith(b"\x89PNG")
    archive = httpx.get(job["frames_zip"]["url"], timeout=30)
    assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
        assert z.namelist() == [f"0000{step:03d}-{NAME}.png" for step in range(1, 7)]
        assert z.read(z.namelist()[0]) == first.content
    assert not service.stored(f"jobs/{job['id']}/videos/")


def cancel_midway(service: Service, body: dict[str, Any]) -> dict[str, Any]:
    """Start a long render, ask to cancel once a few steps exist (as the cancel endpoint does), wait."""
    job_id = service.post(body).json()["id"]
    deadline = time.monotonic() + 120
    while service.get(job_id)["progress"]["step"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    JobStore.from_url(service.stack.redis_url).request_cancel(job_id)
    return service.wait(job_id)


def test_run_on_incomplete_data(service: Service, tmp_path: Path) -> None:
    long = {**SMALL, "steps": 200, "animation": {"duration": 1}}
    partial = cancel_midway(service, {**long, "animation": {"duration": 1, "run_on_incomplete": True}})
    assert partial["status"] == "succeeded", partial["error"]
    steps = partial["progress"]["step"]
    assert 3 <= steps < 200
    info = probe_url(partial["video"]["url"], tmp_path / "p.mp4")
    assert int(info["streams"][0]["nb_read_frames"]) == 30
    assert '"steps_run": ' + str(steps) in info["format"]["tags"]["description"]

    canceled = cancel_midway(service, long)
    assert canceled["status"] == "canceled"
    assert canceled["video"] is None
    assert not service.stored(f"jobs/{canceled['id']}/videos/")

"""Render options through the whole service: init images (multipart upload, base64), batches,
preview decoders, progress with ETA, cancel mid-render, and clear failures."""

from __future__ import annotations

import base64
import http.server
import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from stepanim.store import JobStore
from tests.conftest import RECEIVER_HOST
from tests.e2e.conftest import Service

SMALL = {"width": 64, "height": 64, "animation": {"duration": 1}}


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (96, 64)) -> bytes:
    pixels = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def upload(service: Service, data: bytes, name: str = "init.png", content_type: str = "image/png") -> httpx.Response:
    return httpx.post(f"{service.url}/uploads", files={"file": (name, data, content_type)}, timeout=30)


def frame_keys(service: Service, job_id: str) -> list[str]:
    return [k for k in service.storage_keys() if k.startswith(f"jobs/{job_id}/frames/")]


def test_img2img_from_an_upload_and_from_base64(service: Service) -> None:
    response = upload(service, image_bytes("JPEG"), name="photo.jpg", content_type="image/jpeg")
    assert response.status_code == 201, response.text
    uploaded = response.json()
    assert (uploaded["content_type"], uploaded["width"], uploaded["height"]) == ("image/jpeg", 96, 64)

    data_url = "data:image/png;base64," + base64.b64encode(image_bytes()).decode()
    forms: list[dict[str, Any]] = [{"upload_id": uploaded["id"]}, {"data": data_url}]
    for init in forms:
        body = {"prompt": "a cat", "steps": 8, "strength": 0.5, "seed": 3, "init_image": init, **SMALL}
        created = service.post(body)
        assert created.status_code == 202, created.text
        stored_init = created.json()["request"]["init_image"]
        assert stored_init["data"] is None and len(stored_init["upload_id"]) == 32  # base64 became an upload
        job = service.wait(created.json()["id"])
        assert job["status"] == "succeeded", job["error"]
        assert job["progress"]["step"] == job["progress"]["total"] == 4  # int(8 x 0.5)
        assert len(frame_keys(service, job["id"])) == 4


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    """Serves /init.png, /page.html (not an image) and 404s on the loopback address the stacks may call."""
    files = {"/init.png": (image_bytes(), "image/png"), "/page.html": (b"<html></html>", "text/html")}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path not in files:
                self.send_error(404)
                return
            body, content_type = files[self.path]
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((RECEIVER_HOST, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{RECEIVER_HOST}:{server.server_port}"
    finally:
        server.shutdown()


def test_img2img_from_a_url_fetched_once_through_the_guard(service: Service, image_server: str) -> None:
    body = {"prompt": "a cat", "steps": 4, "strength": 0.5, "init_image": {"url": f"{image_server}/init.png"}, **SMALL}
    created = service.post(body)
    assert created.status_code == 202, created.text
    stored_init = created.json()["request"]["init_image"]
    assert stored_init["url"] is None and len(stored_init["upload_id"]) == 32  # fetched, kept as an upload
    job = service.wait(created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["step"] == 2  # int(4 x 0.5)

    redis_before, storage_before = service.redis_keys(), service.storage_keys()
    refusals = [
        ("http://127.0.0.1:9/a.png", "init_image.url: refused URL"),  # loopback, not on the allow-list
        (f"{image_server}/missing.png", "init_image.url: fetch answered HTTP 404"),
        (f"{image_server}/page.html", "init_image.url: content type 'text/html' is not one of"),
    ]
    for url, message in refusals:
        response = service.post({**body, "init_image": {"url": url}})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["message"].startswith(message), response.json()
    assert service.redis_keys() == redis_before
    assert service.storage_keys() == storage_before


def test_upload_refusals_store_nothing(service: Service) -> None:
    redis_before, storage_before = service.redis_keys(), service.storage_keys()
    cases = [
        (upload(service, image_bytes("GIF"), "a.gif", "image/gif"), 415, "unsupported_media_type"),
        (upload(service, b"<html></html>", "a.png", "image/png"), 415, "unsupported_media_type"),
        (upload(service, image_bytes(size=(4, 4))), 422, "invalid_image"),
        (upload(service, image_bytes()[:-300]), 422, "invalid_image"),
        (upload(service, b"\x89PNG" + bytes(10 * 2**20)), 413, "payload_too_large"),
        (httpx.post(f"{service.url}/uploads", data={"x": "1"}, timeout=30), 422, "invalid_request"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
    bad_bodies: list[tuple[dict[str, Any], str]] = [
        ({"init_image": {"upload_id": "b" * 32}}, "init_image.upload_id: no upload"),
        ({"init_image": {"data": "%%% not base64"}}, "init_image.data: not valid base64"),
        ({"init_image": {"data": base64.b64encode(b"GIF89a....").decode()}}, "init_image.data: not an image"),
        ({"init_image": {"upload_id": "b" * 32, "data": "AAAA"}}, "init_image: give exactly one"),
        ({"strength": 0.5}, "strength: applies to img2img only"),
    ]
    for extra, message in bad_bodies:
        response = service.post({"prompt": "x", **extra})
        assert response.status_code in (415, 422), response.text
        assert response.json()["error"]["message"].startswith(message), response.json()
    assert service.redis_keys() == redis_before
    assert service.storage_keys() == storage_before


def test_a_batch_of_two_gives_two_animations_with_their_own_seeds(service: Service) -> None:
    body = {
        "prompt": "a dog",
        "steps": 3,
        "seed": 500,
        "batch_size": 2,
        "capture": {"decoder": "approx", "resolution": "quarter"},
        **SMALL,
    }
    job = service.wait(service.post(body).json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["images"] == [{"batch_index": 0, "seed": 500, "frames": 3}, {"batch_index": 1, "seed": 501, "frames": 3}]
    names = sorted(k.rsplit("/", 1)[1] for k in frame_keys(service, job["id"]))
    assert names == [f"00{i:02d}{s:03d}-{500 + i}-a dog.png" for i in range(2) for s in range(1, 4)]
    frame = httpx.get(job["progress"]["latest_frame_url"], timeout=30)
    assert Image.open(io.BytesIO(frame.content)).size == (16, 16)  # quarter of 64x64


def test_taesd_without_weights_fails_clearly_and_the_worker_stays_up(service: Service) -> None:
    body = {"prompt": "x", "steps": 2, "capture": {"decoder": "taesd"}, **SMALL}
    job = service.wait(service.post(body).json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "decoder_unavailable"
    assert "use decoder 'approx' or 'full'" in job["error"]["message"]
    assert frame_keys(service, job["id"]) == []
    good = service.wait(service.post({"prompt": "x", "steps": 2, **SMALL}).json()["id"])
    assert good["status"] == "succeeded"


@pytest.mark.slow
def test_cancel_mid_render_stops_within_a_step_and_keeps_its_frames(service: Service) -> None:
    """Set the cancel flag (as the cancel route will) once k steps are shown: the render stops soon after.

    Progress trails sampling by at most the frame queue (8) plus the frame being written, so
    the frames left are between what the client saw and that much more, far below the total.
    """
    store = JobStore.from_url(service.stack.redis_url)
    total, k, lag = 150, 3, 8 + 2
    created = service.post({"prompt": "x", "steps": total, "capture": {"decoder": "approx"}, **SMALL})
    job_id = created.json()["id"]
    deadline = time.monotonic() + 120
    while store.get(job_id).progress.step < k:
        assert time.monotonic() < deadline, "rendering did not start"
        time.sleep(0.01)
    store.request_cancel(job_id)
    seen = store.get(job_id).progress.step
    mid = service.get(job_id)["progress"]
    assert mid["elapsed_seconds"] > 0 and mid["eta_seconds"] > 0
    assert httpx.get(mid["latest_frame_url"], timeout=30).status_code == 200

    job = service.wait(job_id)
    assert job["status"] == "canceled"
    frames = frame_keys(service, job_id)
    assert k <= len(frames) <= seen + lag < total
    assert job["progress"]["step"] == len(frames)  # every sampled step was written before the job ended
    names = sorted(f.rsplit("/", 1)[1][:7] for f in frames)
    assert names == [f"0000{s:03d}" for s in range(1, len(frames) + 1)]
    assert job["video"] is None

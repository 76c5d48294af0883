"""Render options through the whole service: init images (multipart upload, base64), batches,
preview decoders, progress with ETA, cancel mid-render, and clear failures."""

from __future__ import annotations

import base64
import http.server
import io
import itertools
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from stepanim.store import JobStore
from tests.conftest import RECEIVER_HOST, QuietHandler, ffprobe_json, serving
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
    return service.stored(f"jobs/{job_id}/frames/")


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

    class Handler(QuietHandler):
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

    with serving(http.server.ThreadingHTTPServer((RECEIVER_HOST, 0), Handler)) as server:
        yield f"http://{RECEIVER_HOST}:{server.server_port}"


def test_img2img_from_a_url_fetched_once_through_the_guard(service: Service, image_server: str) -> None:
    body = {"prompt": "a cat", "steps": 4, "strength": 0.5, "init_image": {"url": f"{image_server}/init.png"}, **SMALL}
    created = service.post(body)
    assert created.status_code == 202, created.text
    stored_init = created.json()["request"]["init_image"]
    assert stored_init["url"] is None and len(stored_init["upload_id"]) == 32  # fetched, kept as an upload
    job = service.wait(created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["step"] == 2  # int(4 x 0.5)

    redis_before, storage_before = service.redis_keys(), service.stored()
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
    assert service.stored() == storage_before


def test_upload_refusals_store_nothing(service: Service) -> None:
    redis_before, storage_before = service.redis_keys(), service.stored()
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
    assert service.stored() == storage_before


def download(url: str, path: Path) -> Path:
    response = httpx.get(url, timeout=60)
    response.raise_for_status()
    path.write_bytes(response.content)
    return path


def last_frame(video: Path) -> np.ndarray:
    png = video.with_suffix(".last.png")
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-sseof", "-0.1", "-i", str(video), "-frames:v", "1", str(png)], check=True
    )
    return np.asarray(Image.open(png).convert("RGB")).astype(int)


def test_a_batch_of_three_gives_every_image_its_own_video(service: Service, tmp_path: Path) -> None:
    body = {
        "prompt": "a dog",
        "steps": 3,
        "seed": 500,
        "batch_size": 3,
        "capture": {"decoder": "approx", "resolution": "quarter"},
        "renditions": [{"codec": "vp9", "duration": 1}],
        **SMALL,
    }
    job = service.wait(service.post(body).json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert [(i["batch_index"], i["seed"], i["frames"]) for i in job["images"]] == [
        (0, 500, 3),
        (1, 501, 3),
        (2, 502, 3),
    ]
    names = sorted(k.rsplit("/", 1)[1] for k in frame_keys(service, job["id"]))
    assert names == [f"00{i:02d}{s:03d}-{500 + i}-a dog.png" for i in range(3) for s in range(1, 4)]
    assert job["video"] == job["images"][0]["video"]  # single-image clients keep working
    pixels = []
    for image in job["images"]:
        video = image["video"]
        assert video["filename"] == f"{image['seed']}-a dog.mp4"
        path = download(video["url"], tmp_path / video["filename"])
        probe = ffprobe_json(path)
        assert probe["streams"][0]["codec_name"] == "h264" and int(probe["streams"][0]["nb_read_frames"]) == 30
        tags = {k.lower(): v for k, v in probe["format"]["tags"].items()}
        assert f"seed {image['seed']}" in tags["title"] and f'"seed": {image["seed"]}' in tags["description"]
        pixels.append(last_frame(path))
    assert all(np.abs(a - b).mean() > 1 for a, b in itertools.combinations(pixels, 2)), "the seeds must differ"
    [rendition] = job["renditions"]
    assert [v["filename"] for v in rendition["videos"]] == [f"{500 + i}-a dog.webm" for i in range(3)]
    later = httpx.post(f"{service.url}/animations/{job['id']}/renditions", json={"codec": "gif", "duration": 1})
    assert later.status_code == 202, later.text
    deadline = time.monotonic() + 120
    while (r := httpx.get(later.headers["location"], timeout=30).json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert [v["filename"] for v in r["videos"]] == [f"{500 + i}-a dog.gif" for i in range(3)]
    progress = job["progress"]
    assert len(progress["latest_frame_urls"]) == 3 and progress["latest_frame_url"] == progress["latest_frame_urls"][0]
    frame = httpx.get(progress["latest_frame_urls"][2], timeout=30)
    assert Image.open(io.BytesIO(frame.content)).size == (16, 16)  # quarter of 64x64


def test_a_batch_without_kept_frames_and_a_frames_only_batch(service: Service) -> None:
    base = {"prompt": "a cat", "steps": 3, "seed": 7, "batch_size": 2, "capture": {"decoder": "approx"}, **SMALL}
    deleted = service.wait(service.post({**base, "animation": {"duration": 1, "keep_frames": False}}).json()["id"])
    assert deleted["status"] == "succeeded", deleted["error"]
    assert frame_keys(service, deleted["id"]) == []  # no frame of any image is left
    assert all(httpx.get(i["video"]["url"], timeout=30).status_code == 200 for i in deleted["images"])

    only = service.wait(service.post({**base, "animation": {"duration": 1, "frames_only": True}}).json()["id"])
    assert only["status"] == "succeeded", only["error"]
    assert only["video"] is None and all(i["video"] is None for i in only["images"])
    assert len(only["frame_urls"]) == 6
    for url in only["frame_urls"]:
        assert httpx.get(url, timeout=30).content.startswith(b"\x89PNG")
    archive = httpx.get(only["frames_zip"]["url"], timeout=30)
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        assert sorted(zipped.namelist()) == sorted(k.rsplit("/", 1)[1] for k in frame_keys(service, only["id"]))
        assert {name[2:4] for name in zipped.namelist()} == {"00", "01"}


@pytest.mark.slow
def test_a_batch_canceled_with_run_on_incomplete_gives_two_shorter_videos(service: Service) -> None:
    if service.backend == "s3":
        pytest.skip("one backend is enough: the encoder reads frames through the same storage interface")
    store = JobStore.from_url(service.stack.redis_url)
    body = {
        "prompt": "x",
        "steps": 150,
        "seed": 9,
        "batch_size": 2,
        "capture": {"decoder": "approx"},
        "width": 64,
        "height": 64,
        "animation": {"duration": 1, "run_on_incomplete": True},
    }
    job_id = service.post(body).json()["id"]
    deadline = time.monotonic() + 120
    while store.get(job_id).progress.step < 3:
        assert time.monotonic() < deadline, "rendering did not start"
        time.sleep(0.01)
    assert httpx.post(f"{service.url}/animations/{job_id}/cancel", timeout=30).status_code in (200, 202)
    job = service.wait(job_id)
    assert job["status"] == "succeeded", job["error"]
    made = [i["frames"] for i in job["images"]]
    assert made[0] == made[1] and 3 <= made[0] < 150
    assert [i["video"]["frames"] for i in job["images"]] == [30, 30]  # every image's partial steps, 1 s at 30 fps


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
    total, k, lag = 150, 16, 8 + 2  # an ETA once a tenth of the steps is timed
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


def test_every_step_can_be_listed_and_downloaded_while_and_after_it_renders(service: Service, tmp_path: Path) -> None:
    body = {"prompt": "steps", "steps": 4, "seed": 3, "batch_size": 2, "capture": {"decoder": "approx"}, **SMALL}
    job = service.wait(service.post(body).json()["id"])
    assert job["status"] == "succeeded", job["error"]
    second = httpx.get(f"{service.url}/animations/{job['id']}/frames", params={"image": 1}, timeout=30).json()
    assert (second["batch_index"], second["images"], second["total"], second["complete"]) == (1, 2, 4, True)
    assert [f["step"] for f in second["frames"]] == [1, 2, 3, 4]
    assert second["frames"][0]["filename"] == "0001001-4-steps.png"
    assert httpx.get(second["frames"][3]["url"], timeout=30).content.startswith(b"\x89PNG")
    assert httpx.get(f"{service.url}/animations/{job['id']}/frames", params={"image": 2}).status_code == 404
    archive = httpx.get(f"{service.url}/animations/{job['id']}/frames.zip", timeout=60)
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        assert len(zipped.namelist()) == 8 and zipped.read("0001004-4-steps.png").startswith(b"\x89PNG")
    deleted = service.wait(service.post({**body, "animation": {"duration": 1, "keep_frames": False}}).json()["id"])
    assert httpx.get(f"{service.url}/animations/{deleted['id']}/frames").status_code == 410

"""Grids through the whole service on the committed digits model: POST /grids fans out to cells
rendered by the render worker, and the encoder composes one synced, captioned video."""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from encoder.grid import layout
from stepanim.grids import GridCreate, GridPlan, cell_requests
from tests.conftest import WebhookReceiver, ffprobe_json
from tests.e2e.conftest import Service
from tests.service import TERMINAL

pytestmark = pytest.mark.slow

BASE: dict[str, Any] = {
    "prompt": "the number 3",
    "seed": 5,
    "capture": {"upscale": 2, "source": "noisy"},  # 64x64 frames: noise that becomes the digit
    "animation": {"duration": 1, "fps": 10},
}


def post(service: Service, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{service.url}/grids", json=body, timeout=30, **kwargs)


def get(service: Service, grid_id: str) -> dict[str, Any]:
    response = httpx.get(f"{service.url}/grids/{grid_id}", timeout=30)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def wait(service: Service, grid_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        grid = get(service, grid_id)
        if grid["status"] in TERMINAL:
            return grid
        time.sleep(0.2)
    raise TimeoutError(f"grid {grid_id} not finished: {grid}")


def video_frames(path: Path, out: Path) -> list[np.ndarray]:
    """Every frame of a video, decoded."""
    out.mkdir()
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-fps_mode", "passthrough", str(out / "%04d.png")], check=True
    )
    return [np.asarray(Image.open(png).convert("RGB")).astype(float) for png in sorted(out.glob("*.png"))]


def cell_frames(service: Service, job_id: str) -> list[np.ndarray]:
    """A cell's own frames, in step order (through GET /animations/{id}/frames)."""
    frames = httpx.get(f"{service.url}/animations/{job_id}/frames", timeout=30).json()["frames"]
    return [np.asarray(Image.open(io.BytesIO(httpx.get(f["url"], timeout=30).content)).convert("RGB")) for f in frames]


def tile(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A cell's frame as its tile shows it (resized), without its 2-pixel border."""
    return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BICUBIC)).astype(float)[2:-2, 2:-2]


def test_a_three_by_two_grid_is_one_synced_captioned_video(
    digits_service: Service, tmp_path: Path, webhook_receiver: WebhookReceiver
) -> None:
    body = {
        "base": {**BASE, "webhook": webhook_receiver.url},
        "x": {"field": "scheduler", "values": ["Euler a", "DPM++ 2M Karras", "DDIM"]},
        "y": {"field": "steps", "values": [6, 12]},
    }
    response = post(digits_service, body)
    assert response.status_code == 202, response.text
    grid = response.json()
    assert response.headers["location"].endswith(f"/grids/{grid['id']}")
    assert grid["progress"] == {"cells_done": 0, "cells_total": 6, "steps_done": 0, "steps_total": 54}
    assert [c["x_label"] for c in grid["cells"][:3]] == ["Euler a", "DPM++ 2M Karras", "DDIM"]

    grid = wait(digits_service, grid["id"])
    assert grid["status"] == "succeeded", grid["error"]
    assert grid["progress"] == {"cells_done": 6, "cells_total": 6, "steps_done": 54, "steps_total": 54}
    cells = grid["cells"]
    assert [(c["x"], c["y"]) for c in cells] == [(x, y) for y in range(2) for x in range(3)]
    for cell in cells:  # every cell is an animation job of its own, with its own video
        job = digits_service.get(cell["id"])
        assert job["status"] == "succeeded" and cell["video"] is not None
        assert job["request"]["steps"] == (6 if cell["y"] == 0 else 12)
        assert job["seed"] == 5
    sampler = {
        (c["request"]["scheduler"], c["request"]["schedule"]) for c in map(digits_service.get, [c["id"] for c in cells])
    }
    assert sampler == {("euler_a", "default"), ("dpmpp_2m", "karras"), ("ddim", "default")}
    listed = httpx.get(f"{digits_service.url}/animations", timeout=30).json()["data"]
    assert not {c["id"] for c in cells} & {job["id"] for job in listed}  # cells are not listed

    video = tmp_path / "grid.mp4"
    video.write_bytes(httpx.get(grid["video"]["url"], timeout=60).content)
    assert grid["video"]["filename"] == "5-the number 3.mp4"
    stream = next(s for s in ffprobe_json(video)["streams"] if s["codec_type"] == "video")
    plan = GridPlan(
        x=grid["x"],
        y=grid["y"],
        cells=cell_requests(GridCreate.model_validate({k: body[k] for k in ("base", "x", "y")}))[0],
    )
    place = layout(plan, (64, 64))
    assert (stream["width"], stream["height"]) == place.size
    assert int(stream["nb_read_frames"]) == 10  # 1 s at 10 fps

    decoded = video_frames(video, tmp_path / "decoded")
    assert len(decoded) == 10
    first, last = decoded[0], decoded[-1]
    for cell in cells:
        frames = cell_frames(digits_service, cell["id"])
        left, top = place.origin(cell["x"], cell["y"])
        box = (slice(top + 2, top + place.tile[1] - 2), slice(left + 2, left + place.tile[0] - 2))
        start, end = (tile(frame, place.tile) for frame in (frames[0], frames[-1]))
        # The first frame is each cell's first step (noise), the last each cell's own final frame:
        # a 6-step and a 12-step cell end together.
        assert np.abs(first[box] - start).mean() < 12, cell
        assert np.abs(last[box] - end).mean() < 12, cell
        assert np.abs(last[box] - start).mean() > np.abs(last[box] - end).mean() + 5, cell
    assert np.abs(first[: place.header - 2] - first[: place.header - 2].mean()).max() > 50  # captions are drawn

    deliveries = webhook_receiver.wait_for(1)
    assert [d.json()["type"] for d in deliveries] == ["grid.succeeded"]
    assert deliveries[0].json()["data"]["id"] == grid["id"]
    assert deliveries[0].json()["data"]["video"]["filename"] == grid["video"]["filename"]

    # Its events: status changes with the grid, and a cell event for every cell's every status.
    with httpx.stream("GET", f"{digits_service.url}/grids/{grid['id']}/events", timeout=30) as events:
        names = [line.removeprefix("event: ") for line in events.iter_lines() if line.startswith("event: ")]
    assert names[0] == "status" and names[-1] == "status"
    assert names.count("cell") == 6 * 3  # rendering, encoding, succeeded
    # Another video of the same grid, composed again by the encoder.
    rendition = httpx.post(
        f"{digits_service.url}/grids/{grid['id']}/renditions", json={"codec": "vp9", "duration": 2}, timeout=30
    )
    assert rendition.status_code == 202, rendition.text
    deadline = time.monotonic() + 120
    while (done := get(digits_service, grid["id"])["renditions"][0])["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert done["status"] == "succeeded", done["error"]
    assert done["video"]["codec"] == "vp9" and done["video"]["duration"] == pytest.approx(2, abs=0.1)


def test_a_grid_with_an_invalid_cell_is_refused_whole(digits_service: Service) -> None:
    before = digits_service.redis_keys()
    body = {
        "base": BASE,
        "x": {"field": "steps", "values": [10, 2000]},
        "y": {"field": "scheduler", "values": ["euler_a", "no_such_sampler"]},
    }
    response = post(digits_service, body)
    assert response.status_code == 422, response.text
    fields = {d["field"] for d in response.json()["error"]["details"]}
    assert {"cells[1,0].steps", "cells[0,1].scheduler", "cells[1,1].steps"} <= fields, fields
    too_many = post(
        digits_service,
        {
            "base": BASE,
            "x": {"field": "seed", "values": list(range(16))},
            "y": {"field": "steps", "values": [5, 6, 7, 8, 9]},
        },
    )
    assert too_many.status_code == 422 and too_many.json()["error"]["details"][0]["field"] == "x.values"
    assert digits_service.redis_keys() == before  # nothing stored


def test_the_same_idempotency_key_gives_the_same_grid(digits_service: Service) -> None:
    body = {"base": {**BASE, "steps": 4}, "x": {"field": "seed", "values": [1, 2]}}
    headers = {"Idempotency-Key": "grid-key-1"}
    first, again = post(digits_service, body, headers=headers), post(digits_service, body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert wait(digits_service, first.json()["id"])["status"] == "succeeded"
    assert httpx.get(f"{digits_service.url}/animations/{first.json()['id']}", timeout=30).status_code == 404


def test_canceling_a_grid_cancels_its_cells(digits_service: Service) -> None:
    body = {"base": {**BASE, "steps": 200}, "x": {"field": "seed", "values": [1, 2, 3]}}
    grid_id = post(digits_service, body).json()["id"]
    deadline = time.monotonic() + 120
    while not any(c["status"] == "rendering" and c["step"] > 2 for c in get(digits_service, grid_id)["cells"]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    response = httpx.post(f"{digits_service.url}/grids/{grid_id}/cancel", timeout=30)
    assert response.status_code == 200 and response.json()["status"] == "canceled"
    deadline = time.monotonic() + 60
    while any(c["status"] not in TERMINAL for c in get(digits_service, grid_id)["cells"]):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    grid = get(digits_service, grid_id)
    assert {c["status"] for c in grid["cells"]} == {"canceled"}
    assert grid["status"] == "canceled" and grid["video"] is None
    assert httpx.post(f"{digits_service.url}/grids/{grid_id}/cancel", timeout=30).status_code == 200  # repeatable


@pytest.mark.parametrize("allow_partial", [False, True])
def test_a_failed_cell_fails_the_grid_or_becomes_a_placeholder(digits_service: Service, allow_partial: bool) -> None:
    body = {
        "base": {**BASE, "steps": 200},
        "x": {"field": "steps", "values": [200, 4]},
        "allow_partial": allow_partial,
    }
    grid = post(digits_service, body).json()
    long_cell = grid["cells"][0]["id"]
    deadline = time.monotonic() + 60
    while digits_service.get(long_cell)["status"] == "queued" and get(digits_service, grid["id"])["status"] == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    httpx.post(f"{digits_service.url}/animations/{long_cell}/cancel", timeout=30)
    grid = wait(digits_service, grid["id"])
    if allow_partial:
        assert grid["status"] == "succeeded", grid["error"]
        assert grid["video"]["frames"] == 10
    else:
        assert grid["status"] == "failed"
        assert grid["error"]["code"] == "cells_failed"
        assert "cell 0 (steps 200): canceled" in grid["error"]["message"]

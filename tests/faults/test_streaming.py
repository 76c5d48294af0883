"""Encoding while the frames arrive (encoder.stream), on real processes: the stream worker
(threads) follows the render worker's frames; cancels, a killed stream worker and a lost render
worker still give each job its one video, or none when canceled."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.faults.conftest import Service, body, wait_for
from tests.faults.test_faults import assert_done_once

pytestmark = pytest.mark.slow


def published_by_stream(service: Service, job_id: str) -> bool:
    return any(
        str(line.get("message", "")).startswith(f"stream: job {job_id} published") for line in service.log("stream")
    )


def under_way(service: Service, job_id: str, step: int = 5) -> None:
    wait_for(lambda: service.get(job_id)["progress"]["step"] >= step, timeout=120, what="render", interval=0.05)


def cancel(service: Service, job_id: str) -> None:
    httpx.post(f"{service.url}/animations/{job_id}/cancel", timeout=30).raise_for_status()


def test_a_batch_of_two_streams_two_videos(make_service: Callable[..., Service]) -> None:
    service = make_service(backend="local")
    job_id = service.post(body(steps=20, batch_size=2, animation={"duration": 2, "interpolation": "blend"}))
    job = service.wait_terminal([job_id])[job_id]
    assert job["status"] == "succeeded", job["error"]
    assert published_by_stream(service, job_id)
    videos = [image["video"] for image in job["images"]]
    assert [v["frames"] for v in videos] == [60, 60] and len(service.videos(job_id)) == 2
    assert len({v["filename"] for v in videos}) == 2  # one per seed


def test_cancel_mid_stream(make_service: Callable[..., Service]) -> None:
    service = make_service(backend="local")
    plain = service.post(body(steps=150))
    partial = service.post(body(steps=150, seed=4, animation={"duration": 1, "run_on_incomplete": True}))
    for job_id in (plain, partial):
        under_way(service, job_id)
        cancel(service, job_id)
    done = service.wait_terminal([plain, partial])
    assert done[plain]["status"] == "canceled" and service.videos(plain) == []
    assert done[partial]["status"] == "succeeded", done[partial]["error"]
    made = len(service.frames(partial))
    assert 5 <= made < 150
    video = done[partial]["images"][0]["video"]
    assert video["frames"] == 30 and len(service.videos(partial)) == 1  # 1 s of the steps made
    assert not published_by_stream(service, partial)  # fewer steps than planned: encoded from the stored frames


def test_stream_worker_killed_mid_stream(make_service: Callable[..., Service]) -> None:
    service = make_service(backend="local")
    steps = 150
    job_id = service.post(body(steps=steps))
    under_way(service, job_id, step=10)
    service.stack.procs["stream"].kill()  # kill -9: the stream and its ffmpeg
    service.stack.start_worker("stream")
    service.wait_terminal([job_id], timeout=240)
    assert_done_once(service, job_id, steps=steps)  # encoded from the stored frames, once
    assert not published_by_stream(service, job_id)

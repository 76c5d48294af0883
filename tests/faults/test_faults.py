"""Faults on real processes: every accepted job still reaches a terminal state, once.

Each test asserts: the job succeeded, exactly one video, each frame once, and (where a
webhook is set) exactly one delivery.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from stepanim.broker import Broker
from stepanim.queues import RENDER_QUEUE
from stepanim.store import JobStore
from tests.faults.conftest import Receiver, Service, TcpProxy, body, wait_for
from tests.service import TERMINAL

pytestmark = pytest.mark.slow


def assert_done_once(service: Service, job_id: str, *, steps: int) -> None:
    job = service.get(job_id)
    assert job["status"] == "succeeded", job["error"]
    assert len(service.videos(job_id)) == 1, service.videos(job_id)
    frames = service.frames(job_id)
    assert len(frames) == len(set(frames)) == steps


def test_render_worker_killed_mid_render(make_service: Callable[..., Service]) -> None:
    service = make_service()
    receiver = Receiver()
    receiver.up()
    steps = 150
    job_id = service.post(body(steps=steps, webhook=receiver.url))
    wait_for(lambda: service.get(job_id)["progress"]["step"] >= 5, timeout=120, what="render under way", interval=0.05)
    service.stack.procs["render"].kill()  # kill -9, the whole process group
    assert service.get(job_id)["status"] == "rendering"
    service.stack.start_worker("render")

    service.wait_terminal([job_id])
    assert_done_once(service, job_id, steps=steps)
    assert service.metrics()["stepanim_reconciler_requeues_total{stage=render}"] == 1
    wait_for(lambda: receiver.deliveries, timeout=60, what="webhook")
    time.sleep(1)
    assert [d["body"]["type"] for d in receiver.deliveries] == ["animation.succeeded"]
    receiver.down()


def test_encoder_killed_mid_encode(make_service: Callable[..., Service]) -> None:
    service = make_service(STEPANIM_STREAMING="false")  # the post-hoc encode (test_streaming.py: a stream)
    steps = 30
    # A long motion-interpolated video: seconds of ffmpeg work to interrupt.
    job_id = service.post(body(steps=steps, animation={"duration": 60, "fps": 60, "interpolation": "mci"}))

    def encoding_started() -> bool:
        return any(
            line.get("message") == "task started" and line.get("job_id") == job_id for line in service.log("encode")
        )

    wait_for(encoding_started, timeout=120, what="encode under way")
    time.sleep(0.5)
    service.stack.procs["encode"].kill()  # ffmpeg, a child in the same group, goes too
    assert service.get(job_id)["status"] == "encoding"
    service.stack.start_worker("encode")

    service.wait_terminal([job_id], timeout=240)
    assert_done_once(service, job_id, steps=steps)
    assert service.metrics()["stepanim_reconciler_requeues_total{stage=encode}"] == 1


def test_redis_restarted_with_jobs_queued(make_service: Callable[..., Service]) -> None:
    service = make_service(appendonly=True)
    job_ids = [service.post(body(seed=n)) for n in range(5)]
    # Most of them still wait in the render queue (one render worker, one job at a time).
    service.stack.restart_redis(kill=True)
    done = service.wait_terminal(job_ids, timeout=240)
    assert {job["status"] for job in done.values()} == {"succeeded"}
    for job_id in job_ids:
        assert_done_once(service, job_id, steps=6)
    assert service.metrics()["stepanim_jobs_finished_total{status=succeeded}"] == 5


def test_storage_down_for_a_while(make_service: Callable[..., Service], s3_server: object) -> None:
    from tests.conftest import S3Server

    assert isinstance(s3_server, S3Server)
    proxy = TcpProxy(int(s3_server.endpoint.rsplit(":", 1)[1]))
    service = make_service(s3_endpoint=proxy.endpoint)
    steps = 60
    job_id = service.post(body(steps=steps))
    wait_for(lambda: service.get(job_id)["progress"]["step"] >= 3, timeout=120, what="render under way")
    proxy.down()
    time.sleep(5)
    proxy.up()

    service.wait_terminal([job_id], timeout=240)
    assert_done_once(service, job_id, steps=steps)
    m = service.metrics()
    assert m["stepanim_storage_errors_total{task=render}"] >= 1
    assert m["stepanim_task_retries_total{task=render}"] >= 1
    proxy.down()


def test_webhook_receiver_down_then_back(make_service: Callable[..., Service]) -> None:
    service = make_service(backend="local")
    receiver = Receiver()  # not listening yet
    job_id = service.post(body(webhook=receiver.url))
    service.wait_terminal([job_id])
    wait_for(
        lambda: service.metrics().get("stepanim_webhook_failures_total", 0) >= 1,
        timeout=60,
        what="a failed delivery",
    )
    receiver.up()
    wait_for(lambda: receiver.deliveries, timeout=120, what="the webhook after the receiver came back")
    time.sleep(1)
    assert len(receiver.deliveries) == 1
    payload = receiver.deliveries[0]["body"]
    assert payload["type"] == "animation.succeeded"
    assert payload["data"]["id"] == job_id
    receiver.down()


class Blackhole:
    """A TCP port that accepts connections and never answers: a broker that hangs."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.listener.accept()[0])

    def close(self) -> None:
        for conn in [*self.held, self.listener]:
            conn.close()


def test_api_killed_between_storing_a_job_and_sending_its_task(make_service: Callable[..., Service]) -> None:
    """The admission script stores the job; the render task is sent after it, by the API's task
    sender thread (api/dispatch.py). An API that dies between the two leaves a stored job with no
    task: the reconciler sends it. Here the broker never answers, so the sender holds the task
    while the client already has its 202."""
    service = make_service()
    blackhole = Blackhole()
    try:
        service.stack.procs["api"].stop()
        service.stack.start_api(env={"STEPANIM_BROKER_URL": f"redis://127.0.0.1:{blackhole.port}/0"})
        store = JobStore.from_url(service.stack.redis_url)
        response = httpx.post(f"{service.url}/animations", json=body(), timeout=30)
        assert response.status_code == 202, response.text  # the request never waits for the broker
        job_id = response.json()["id"]
        time.sleep(0.5)  # its render task is on its way to a broker that never answers
        service.stack.procs["api"].kill()
        assert store.get(job_id).status == "queued"
        assert Broker(store.redis).queue_depth(RENDER_QUEUE) == 0  # no task was sent
    finally:
        blackhole.close()
    service.stack.start_api()  # a replacement with the real broker (the reconciler needs none)
    done = service.wait_terminal([job_id], timeout=120)[job_id]
    assert done["status"] == "succeeded", done["error"]
    assert service.metrics()["stepanim_reconciler_requeues_total{stage=render}"] == 1


def test_a_grid_survives_a_render_worker_killed_mid_cell(make_service: Callable[..., Service]) -> None:
    service = make_service()
    steps = 120
    grid = {"base": body(steps=steps), "x": {"field": "seed", "values": [1, 2]}}
    response = httpx.post(f"{service.url}/grids", json=grid, timeout=30)
    assert response.status_code == 202, response.text
    grid_id = response.json()["id"]

    def cells() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = httpx.get(f"{service.url}/grids/{grid_id}", timeout=30).json()["cells"]
        return found

    wait_for(lambda: any(c["step"] >= 5 for c in cells()), timeout=120, what="a cell under way", interval=0.05)
    service.stack.procs["render"].kill()  # kill -9, the whole process group
    service.stack.start_worker("render")

    done = wait_for(
        lambda: (g := httpx.get(f"{service.url}/grids/{grid_id}", timeout=30).json())["status"] in TERMINAL and g,
        timeout=300,
        what="the grid finished",
    )
    assert done["status"] == "succeeded", done["error"]
    for cell in done["cells"]:
        assert_done_once(service, cell["id"], steps=steps)
    assert len(service.videos(grid_id)) == 1
    assert service.metrics()["stepanim_reconciler_requeues_total{stage=render}"] >= 1

"""Faults on real processes: every accepted job still reaches a terminal state, once.

Each test asserts: the job succeeded, exactly one video, each frame once, and (where a
webhook is set) exactly one delivery.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.faults.conftest import Receiver, Service, TcpProxy, body, wait_for

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
    service = make_service()
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

"""Graceful shutdown on SIGTERM, sent to the main process only, as an orchestrator does."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from stepanim.broker import Broker, message_job
from stepanim.queues import RENDER_QUEUE
from stepanim.store import JobStore
from tests.faults.conftest import Service, body, wait_for

pytestmark = pytest.mark.slow


def sigterm(service: Service, name: str, *, timeout: float) -> int:
    proc = service.stack.procs[name]
    os.kill(proc.popen.pid, signal.SIGTERM)
    try:
        return proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def test_sigterm_lets_the_render_worker_finish_its_job_and_take_no_other(
    make_service: Callable[..., Service],
) -> None:
    service = make_service(backend="local")
    first = service.post(body(steps=100))
    wait_for(lambda: service.get(first)["progress"]["step"] >= 3, timeout=120, what="render under way")
    second = service.post(body(steps=6))

    assert sigterm(service, "render", timeout=120) == 0
    assert service.get(first)["progress"]["step"] == 100  # finished before the worker left
    assert service.get(first)["status"] in ("encoding", "succeeded")
    assert service.get(second)["status"] == "queued"  # not started by a worker on its way out

    service.stack.start_worker("render")
    done = service.wait_terminal([first, second])
    assert {job["status"] for job in done.values()} == {"succeeded"}
    assert len(service.videos(first)) == len(service.videos(second)) == 1
    assert service.metrics().get("stepanim_reconciler_requeues_total{stage=render}", 0) == 0


def test_sigterm_hands_back_a_job_that_outlasts_the_shutdown_timeout(make_service: Callable[..., Service]) -> None:
    service = make_service(backend="local")
    service.stack.procs["render"].stop()
    service.stack.start_worker("render", env={"STEPANIM_SHUTDOWN_TIMEOUT_SECONDS": "1"})
    job_id = service.post(body(steps=200))
    wait_for(lambda: service.get(job_id)["progress"]["step"] >= 3, timeout=120, what="render under way")

    started = time.monotonic()
    sigterm(service, "render", timeout=60)
    assert time.monotonic() - started < 30  # it did not wait for the 200 steps
    assert service.get(job_id)["status"] == "rendering"

    service.stack.start_worker("render")
    service.wait_terminal([job_id])
    job = service.get(job_id)
    assert job["status"] == "succeeded", job["error"]
    assert len(service.videos(job_id)) == 1
    assert len(service.frames(job_id)) == 200


def test_sigterm_drains_the_api_and_loses_no_accepted_job(make_service: Callable[..., Service]) -> None:
    service = make_service(backend="local")
    service.stack.procs["render"].stop()  # jobs stay queued: we count their messages
    accepted: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                response = httpx.post(f"{service.url}/animations", json=body(), timeout=30)
            except httpx.ConnectError:
                refused.append("connect")
                time.sleep(0.05)
                continue
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
                # Closed or reset before answering (a connection still in the listen backlog when
                # the server stops gets a reset): it must not have been processed, which the
                # comparison of stored, accepted and queued jobs below checks.
                refused.append(repr(e))
                continue
            assert response.status_code == 202, response.text
            accepted.append(response.json()["id"])

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    wait_for(lambda: len(accepted) >= 20, timeout=60, what="requests flowing")
    code = sigterm(service, "api", timeout=60)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(60)

    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down cleanly
    assert refused, "the clients never saw the API go away"
    store = JobStore.from_url(service.stack.redis_url)
    stored = {job.id for job in store.get_many(store.open_job_ids()) if job is not None}
    waiting, _ = Broker(store.redis).broker_messages([RENDER_QUEUE])
    queued = {found[1] for raw in waiting if (found := message_job(raw)) is not None}
    # Every 202 is a stored, queued job, and nothing was stored that the client was not told of.
    assert stored == set(accepted) == queued

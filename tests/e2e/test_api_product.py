"""The API product on real processes (redis-server, uvicorn, Celery render, encode and
notify workers, local storage): signed webhooks with retries, cancel, live events,
tenants and the SSRF guard, with API keys and no development mode."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.devstack import Stack
from stepanim import auth
from tests import standard_webhooks
from tests.conftest import RECEIVER_SETTINGS, WebhookReceiver
from tests.e2e.conftest import dev_settings
from tests.integration.test_api import parse_sse
from tests.service import TERMINAL
from tests.unit.test_ssrf import CREATE_TIME_REASON, REFUSED

KEYS = {"alice": "sa_e2e_alice_" + "a" * 24, "bob": "sa_e2e_bob_" + "b" * 24}
SMALL = {"steps": 6, "width": 64, "height": 64, "animation": {"duration": 1}}


class Product:
    def __init__(self, stack: Stack, storage: Path) -> None:
        self.stack = stack
        self.storage = storage
        self.url = stack.api_url

    def headers(self, who: str = "alice", **extra: str) -> dict[str, str]:
        return {"authorization": f"Bearer {KEYS[who]}", **extra}

    def post(self, body: dict[str, Any], who: str = "alice", **extra: str) -> httpx.Response:
        return httpx.post(f"{self.url}/animations", json=body, headers=self.headers(who, **extra), timeout=30)

    def get(self, path: str, who: str = "alice", **extra: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=self.headers(who, **extra), timeout=30)

    def cancel(self, job_id: str, who: str = "alice") -> httpx.Response:
        return httpx.post(f"{self.url}/animations/{job_id}/cancel", headers=self.headers(who), timeout=30)

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.get(f"/animations/{job_id}")
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def wait(self, job_id: str, until: Any = None, timeout: float = 180) -> dict[str, Any]:
        done = until or (lambda j: j["status"] in TERMINAL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if done(job):
                return job
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id}: condition not met after {timeout}s: {job}")

    def frames_of(self, job_id: str) -> list[Path]:
        folder = self.storage / "jobs" / job_id / "frames"
        return sorted(folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def product(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Product]:
    workdir = tmp_path_factory.mktemp("product")
    keys = [
        {"id": "alice-1", "tenant": "acme", "sha256": auth.hash_key(KEYS["alice"])},
        {"id": "bob-1", "tenant": "globex", "sha256": auth.hash_key(KEYS["bob"])},
    ]
    settings = dev_settings(
        workdir,
        models_dir,
        STEPANIM_ALLOW_ANONYMOUS="false",  # the keys are the only way in
        STEPANIM_API_KEYS=json.dumps(keys),
        STEPANIM_WEBHOOK_PROGRESS_INTERVAL_SECONDS="0.2",
        # Short, so that webhook waits hop every 18.75 s (a quarter); it must exceed the task limit by 60 s.
        STEPANIM_VISIBILITY_TIMEOUT="75",
        STEPANIM_TASK_TIME_LIMIT_SECONDS="14",
        **RECEIVER_SETTINGS,
    )
    stack = Stack(workdir=workdir, settings=settings)
    try:
        stack.start()
        yield Product(stack, workdir / "storage")
    finally:
        stack.stop()


def wait_for_attempts(product: Product, job_id: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    job = product.wait(job_id, until=lambda j: len(j["webhook_deliveries"]) >= count, timeout=timeout)
    return job["webhook_deliveries"]  # type: ignore[no-any-return]


def test_deliveries_are_signed_retried_with_the_same_id_and_shown_on_the_job(
    product: Product, webhook_receiver: WebhookReceiver
) -> None:
    secret = product.get("/webhooks/secret").json()["current"]
    webhook_receiver.statuses = [500, (429, {"retry-after": "2"})]
    response = product.post({**SMALL, "prompt": "retry me", "webhook": webhook_receiver.url})
    assert response.status_code == 202
    job_id = response.json()["id"]
    assert product.wait(job_id)["status"] == "succeeded"
    first, second, third = webhook_receiver.wait_for(3)
    ids = {d.headers["webhook-id"] for d in (first, second, third)}
    assert ids == {f"msg_{job_id}_animation.succeeded"}
    for delivery in (first, second, third):
        standard_webhooks.verify(secret, delivery.headers, delivery.body)  # the independent verifier
        assert delivery.json()["type"] == "animation.succeeded" and delivery.json()["data"]["id"] == job_id
    assert third.at - second.at >= 1.9  # Retry-After: 2 was honoured (the schedule says 0.5 s)
    attempts = wait_for_attempts(product, job_id, 3)
    shown = [(a["attempt"], a["status_code"], a["outcome"]) for a in attempts]
    assert shown == [(1, 500, "retrying"), (2, 429, "retrying"), (3, 200, "delivered")]
    assert {a["webhook_id"] for a in attempts} == ids
    time.sleep(1.5)
    assert len(webhook_receiver.deliveries) == 3  # delivered: no more attempts


@pytest.mark.slow
def test_a_long_wait_hops_and_still_delivers_once(product: Product, webhook_receiver: WebhookReceiver) -> None:
    """A wait longer than a hop (a quarter of the visibility timeout: 18.75 s here) is a chain of
    short countdowns; the attempt still comes once, after the whole wait."""
    webhook_receiver.statuses = [(503, {"retry-after": "20"})]
    job_id = product.post(
        {**SMALL, "prompt": "hop", "model": "nobody/no-such-model", "webhook": webhook_receiver.url}
    ).json()["id"]
    first, second = webhook_receiver.wait_for(2, timeout=90)
    assert second.at - first.at >= 19.5
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    attempts = wait_for_attempts(product, job_id, 2)
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "retrying"), (2, "delivered")]
    time.sleep(1)
    assert len(webhook_receiver.deliveries) == 2


def test_410_stops_retries(product: Product, webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.statuses = [410, 500, 500]
    job_id = product.post(
        {**SMALL, "prompt": "gone", "model": "nobody/no-such-model", "webhook": webhook_receiver.url}
    ).json()["id"]
    assert product.wait(job_id)["status"] == "failed"
    assert wait_for_attempts(product, job_id, 1)[0]["outcome"] == "gone"
    time.sleep(2.5)  # five times the retry delay
    assert len(webhook_receiver.deliveries) == 1
    assert len(product.job(job_id)["webhook_deliveries"]) == 1


def test_a_redirecting_receiver_is_not_followed(product: Product, webhook_receiver: WebhookReceiver) -> None:
    elsewhere = webhook_receiver.url.replace("/hook", "/elsewhere")
    webhook_receiver.statuses = [(302, {"location": elsewhere})]
    job_id = product.post(
        {**SMALL, "prompt": "moved", "model": "nobody/no-such-model", "webhook": webhook_receiver.url}
    ).json()["id"]
    product.wait(job_id)
    attempt = wait_for_attempts(product, job_id, 1)[0]
    assert (attempt["status_code"], attempt["outcome"]) == (302, "failed")
    time.sleep(2.5)
    assert [d.path for d in webhook_receiver.deliveries] == ["/hook"]


def test_rotation_sends_both_signatures(product: Product, webhook_receiver: WebhookReceiver) -> None:
    old = product.get("/webhooks/secret", "bob").json()["current"]
    rotated = httpx.post(f"{product.url}/webhooks/secret/rotate", headers=product.headers("bob"), timeout=30).json()
    new = rotated["current"]
    assert new != old and [s["secret"] for s in rotated["secrets"]] == [new, old]
    job_id = product.post(
        {**SMALL, "prompt": "rotate", "model": "nobody/no-such-model", "webhook": webhook_receiver.url}, "bob"
    )
    assert job_id.status_code == 202
    (delivery,) = webhook_receiver.wait_for(1)
    assert len(standard_webhooks.signatures(delivery.headers)) == 2
    standard_webhooks.verify(old, delivery.headers, delivery.body)
    standard_webhooks.verify(new, delivery.headers, delivery.body)


def test_started_and_progress_events_when_asked(product: Product, webhook_receiver: WebhookReceiver) -> None:
    events = ["animation.started", "animation.progress", "animation.succeeded"]
    body = {**SMALL, "steps": 30, "prompt": "progress", "webhook": webhook_receiver.url, "webhook_events": events}
    job_id = product.post(body).json()["id"]
    assert product.wait(job_id)["status"] == "succeeded"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
        d.json()["type"] == "animation.succeeded" for d in webhook_receiver.deliveries
    ):
        time.sleep(0.1)
    types = [d.json()["type"] for d in webhook_receiver.deliveries]
    assert types[0] == "animation.started" and "animation.succeeded" in types
    progress = [
        d.json()["data"]["progress"]["step"]
        for d in webhook_receiver.deliveries
        if d.json()["type"] == "animation.progress"
    ]
    assert progress and all(0 < step <= 30 for step in progress)
    assert len(progress) < 30  # throttled
    assert len({d.headers["webhook-id"] for d in webhook_receiver.deliveries}) == len(webhook_receiver.deliveries)


def test_cancel_stops_a_rendering_job_and_a_queued_one_never_starts(product: Product) -> None:
    long = product.post({**SMALL, "steps": 150, "prompt": "long"}).json()["id"]
    queued = product.post({**SMALL, "prompt": "behind"}).json()["id"]  # one render worker: waits behind
    product.wait(long, until=lambda j: j["progress"]["step"] >= 1 or j["status"] in TERMINAL)
    response = product.cancel(queued)
    assert response.status_code == 200 and response.json()["status"] == "canceled"
    response = product.cancel(long)
    assert response.status_code == 202 and response.json()["cancel_requested"] is True
    ended = product.wait(long)
    assert ended["status"] == "canceled"
    assert ended["progress"]["step"] < 150 and len(product.frames_of(long)) < 150
    assert product.cancel(long).status_code == 200  # idempotent
    after = product.post({**SMALL, "prompt": "after"}).json()["id"]  # runs after the canceled one's turn
    assert product.wait(after)["status"] == "succeeded"
    job = product.job(queued)
    assert job["status"] == "canceled" and job["started_at"] is None and product.frames_of(queued) == []
    conflict = product.cancel(after)
    assert conflict.status_code == 409 and conflict.json()["error"]["details"][0]["status"] == "succeeded"


def read_events(product: Product, job_id: str, *, last_event_id: str | None = None, stop_after: int | None = None):  # type: ignore[no-untyped-def]
    headers = product.headers(**({"last-event-id": last_event_id} if last_event_id else {}))
    events: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{product.url}/animations/{job_id}/events", headers=headers, timeout=60) as response:
        assert response.status_code == 200
        buffer = ""
        for chunk in response.iter_text():
            buffer += chunk
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                events += parse_sse(block + "\n\n")
                if stop_after is not None and len(events) >= stop_after:
                    return events
    return events


def test_live_events_resume_after_a_reconnect_without_loss(product: Product) -> None:
    job_id = product.post({**SMALL, "steps": 12, "prompt": "live"}).json()["id"]
    head = read_events(product, job_id, stop_after=3)  # disconnect mid-stream
    tail = read_events(product, job_id, last_event_id=head[-1]["id"])
    everything = read_events(product, job_id)  # a fresh replay after the end
    assert [e["id"] for e in head + tail] == [e["id"] for e in everything]
    assert everything[0]["data"]["status"] == "queued"
    assert everything[-1]["event"] == "status" and everything[-1]["data"]["status"] == "succeeded"
    assert everything[-1]["data"]["animation"]["video"]["url"]
    progress = [e for e in everything if e["event"] == "progress"]
    assert [e["data"]["step"] for e in progress] == list(range(1, 13))
    assert all(e["data"]["latest_frame_url"] for e in progress)


def test_the_ssrf_table_is_refused_at_create_time_on_the_live_service(product: Product) -> None:
    for url, word in REFUSED:
        if "example.com" in url:
            continue  # those rows need the unit test's fake DNS
        response = product.post({**SMALL, "prompt": "ssrf", "webhook": url})
        assert response.status_code == 422, (url, response.text)
        message = response.json()["error"]["message"]
        assert message.startswith("webhook:") and CREATE_TIME_REASON.get(url, word) in message, (url, message)
    listed = product.get("/animations?limit=100").json()["data"]
    assert [j for j in listed if j["request"]["prompt"] == "ssrf"] == []  # nothing was stored


def test_tenants_are_isolated_on_the_live_service(product: Product) -> None:
    job_id = product.post({**SMALL, "prompt": "mine", "model": "nobody/no-such-model"}).json()["id"]
    assert product.get(f"/animations/{job_id}", "bob").status_code == 404
    assert product.cancel(job_id, "bob").status_code == 404
    assert job_id not in [j["id"] for j in product.get("/animations?limit=100", "bob").json()["data"]]
    assert job_id in [j["id"] for j in product.get("/animations?limit=100").json()["data"]]
    assert httpx.post(f"{product.url}/animations", json=SMALL, timeout=30).status_code == 401

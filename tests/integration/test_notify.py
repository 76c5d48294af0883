"""One webhook attempt at a time (notify.delivery), against real Redis and a real HTTP
receiver; the Celery side (hops, the worker) is in the e2e tests."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from notify.delivery import deliver_job_event
from stepanim import lifecycle
from stepanim.admission import admit_now
from stepanim.jobs import Job, utcnow
from stepanim.request import AnimationCreate
from stepanim.services import Services
from stepanim.settings import Settings
from stepanim.webhooks import current_secrets
from tests import standard_webhooks
from tests.conftest import RECEIVER_HOST, WebhookReceiver

EVENT = "animation.failed"


def services(redis_url: str, tmp_path: Path, **overrides: Any) -> Services:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "local_storage_dir": tmp_path,
        "outbound_allow": [RECEIVER_HOST],
        "webhook_retry_schedule": [0.5, 0.5],
        "webhook_retry_jitter": 0,
        **overrides,
    }
    return Services.from_settings(Settings(_env_file=None, **values))


@pytest.fixture
def svc(redis_url: str, tmp_path: Path) -> Services:
    return services(redis_url, tmp_path)


def failed_job(svc: Services, url: str, **request: Any) -> Job:
    now = utcnow()
    job = Job(
        id=uuid.uuid4().hex,
        request=AnimationCreate.model_validate({"prompt": "p", "webhook": url, **request}),
        model="m",
        seed=1,
        created_at=now,
        updated_at=now,
        tenant="acme",
        key_id="acme-1",
    )
    admit_now(svc.store, job)
    lifecycle.fail(svc, job.id, "render_error", "boom")
    return job


def test_a_failed_attempt_is_scheduled_again_with_the_same_webhook_id(
    svc: Services, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.statuses = [500]
    job = failed_job(svc, webhook_receiver.url)
    before = time.time()
    next_at = deliver_job_event(svc, job.id, EVENT, 1)
    assert next_at is not None and before + 0.5 <= next_at <= time.time() + 0.5
    assert deliver_job_event(svc, job.id, EVENT, 1) is None  # a duplicate of attempt 1 sends nothing
    assert deliver_job_event(svc, job.id, EVENT, 2) is None  # delivered: nothing more to schedule
    first, second = webhook_receiver.wait_for(2)
    assert len(webhook_receiver.deliveries) == 2
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == f"msg_{job.id}_{EVENT}"
    assert first.json()["timestamp"] == second.json()["timestamp"]  # when the event happened
    secret = current_secrets(svc.webhooks, svc.settings, "acme-1")[0]
    for delivery in (first, second):
        standard_webhooks.verify(secret, delivery.headers, delivery.body)
    shown = [(d["attempt"], d["status_code"], d["outcome"]) for d in svc.webhooks.deliveries(job.id)]
    assert shown == [(1, 500, "retrying"), (2, 200, "delivered")]


def test_a_receiver_that_does_not_answer_in_time_is_tried_again(redis_url: str, tmp_path: Path) -> None:
    svc = services(redis_url, tmp_path, webhook_timeout_seconds=0.5)
    with socket.socket() as silent:  # accepts the connection, reads nothing, never answers
        silent.bind((RECEIVER_HOST, 0))
        silent.listen()
        job = failed_job(svc, f"http://{RECEIVER_HOST}:{silent.getsockname()[1]}/hook")
        started = time.monotonic()
        next_at = deliver_job_event(svc, job.id, EVENT, 1)
        assert time.monotonic() - started < 5
    assert next_at is not None  # scheduled again
    record = svc.webhooks.deliveries(job.id)[0]
    assert (record["status_code"], record["outcome"]) == (None, "retrying")
    assert "Timeout" in record["error"], record


def test_410_stops_and_redirects_are_not_followed(svc: Services, webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.statuses = [410]
    gone = failed_job(svc, webhook_receiver.url)
    assert deliver_job_event(svc, gone.id, EVENT, 1) is None
    assert svc.webhooks.deliveries(gone.id)[0]["outcome"] == "gone"

    elsewhere = webhook_receiver.url.replace("/hook", "/elsewhere")
    webhook_receiver.statuses = [(307, {"location": elsewhere})]
    moved = failed_job(svc, webhook_receiver.url)
    assert deliver_job_event(svc, moved.id, EVENT, 1) is None
    record = svc.webhooks.deliveries(moved.id)[0]
    assert (record["status_code"], record["outcome"]) == (307, "failed")
    assert "redirects are not followed" in record["error"]
    assert [d.path for d in webhook_receiver.deliveries] == ["/hook", "/hook"]


def test_the_url_is_checked_again_at_send_time(
    redis_url: str, tmp_path: Path, webhook_receiver: WebhookReceiver
) -> None:
    accepted = services(redis_url, tmp_path)
    job = failed_job(accepted, webhook_receiver.url)  # allowed when the job was created
    strict = services(redis_url, tmp_path, outbound_allow=[])  # the allow-list is gone now
    assert deliver_job_event(strict, job.id, EVENT, 1) is None
    record = strict.webhooks.deliveries(job.id)[0]
    assert record["outcome"] == "failed" and record["error"].startswith("refused: host 127.0.0.2")
    assert webhook_receiver.deliveries == []


def test_only_the_events_asked_for_are_sent(svc: Services, webhook_receiver: WebhookReceiver) -> None:
    job = failed_job(svc, webhook_receiver.url, webhook_events=["animation.succeeded"])
    assert deliver_job_event(svc, job.id, EVENT, 1) is None
    assert svc.webhooks.deliveries(job.id) == [] and webhook_receiver.deliveries == []


@pytest.mark.parametrize(("interval", "expected"), [(3600, 1), (0, 20)])
def test_progress_webhooks_are_throttled(redis_url: str, tmp_path: Path, interval: float, expected: int) -> None:
    svc = services(redis_url, tmp_path, webhook_progress_interval_seconds=interval)
    now = utcnow()
    job = Job(
        id=uuid.uuid4().hex,
        request=AnimationCreate.model_validate(
            {"prompt": "p", "steps": 50, "webhook": "http://127.0.0.2:9/h", "webhook_events": ["animation.progress"]}
        ),
        model="m",
        seed=1,
        created_at=now,
        updated_at=now,
    )
    admit_now(svc.store, job)
    lifecycle.start_rendering(svc, job.id)  # animation.started was not asked for
    for step in range(1, 21):
        lifecycle.record_progress(svc, job.id, step=step, total=50, latest_frames=[])
    assert svc.store.redis.llen("notify") == expected

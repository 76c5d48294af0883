"""Webhook signing, the retry schedule and Retry-After: pure logic."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from stepanim import webhooks
from stepanim.settings import DEFAULT_WEBHOOK_RETRY_SCHEDULE, Settings
from stepanim.webhooks import Attempt, parse_retry_after, retry_delay
from tests import standard_webhooks

# The Standard Webhooks specification's published test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_signer_reproduces_the_specification_vector() -> None:
    assert webhooks.signature(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE


def test_the_independent_verifier_accepts_the_vector_and_refuses_tampering() -> None:
    headers = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS), "webhook-signature": VECTOR_SIGNATURE}
    standard_webhooks.verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TS + 10)
    for body, extra, now in [
        (VECTOR_BODY + b" ", {}, VECTOR_TS),
        (VECTOR_BODY, {"webhook-id": "msg_other"}, VECTOR_TS),
        (VECTOR_BODY, {"webhook-timestamp": str(VECTOR_TS + 1)}, VECTOR_TS),
        (VECTOR_BODY, {}, VECTOR_TS + 301),  # too old: replay protection
        (VECTOR_BODY, {"webhook-signature": "v2," + VECTOR_SIGNATURE[3:]}, VECTOR_TS),
    ]:
        with pytest.raises(standard_webhooks.VerificationError):
            standard_webhooks.verify(VECTOR_SECRET, {**headers, **extra}, body, now=now)


def test_during_rotation_every_secret_signs_and_either_verifies() -> None:
    old, new = webhooks.new_secret(), webhooks.new_secret()
    header = webhooks.signatures([new, old], "msg_1", VECTOR_TS, b"{}")
    assert len(header.split(" ")) == 2
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(VECTOR_TS), "webhook-signature": header}
    standard_webhooks.verify(old, headers, b"{}", now=VECTOR_TS)
    standard_webhooks.verify(new, headers, b"{}", now=VECTOR_TS)
    with pytest.raises(standard_webhooks.VerificationError):
        standard_webhooks.verify(webhooks.new_secret(), headers, b"{}", now=VECTOR_TS)


def test_new_secrets_are_32_random_bytes_in_whsec_form() -> None:
    secret = webhooks.new_secret()
    assert secret.startswith("whsec_") and len(webhooks.secret_bytes(secret)) == 32
    assert secret != webhooks.new_secret()


def test_message_ids_are_stable_per_event() -> None:
    assert webhooks.message_id("j1", "animation.succeeded") == webhooks.message_id("j1", "animation.succeeded")
    assert webhooks.message_id("j1", "animation.progress", step=3) != webhooks.message_id(
        "j1", "animation.progress", step=4
    )


def fail(status: int | None, retry_after: float | None = None) -> Attempt:
    return Attempt(status_code=status, error="x", retry_after=retry_after)


SCHEDULE = [5.0, 300.0, 1800.0]


def delay(attempt: Attempt, made: int, rand: float = 0.5, **kw: float) -> float | None:
    return retry_delay(attempt, made, schedule=SCHEDULE, jitter=0.2, max_retry_after=3600, rand=lambda: rand, **kw)


def test_timeouts_5xx_and_429_are_retried_on_the_schedule_with_jitter() -> None:
    for attempt in [fail(None), fail(500), fail(503), fail(429)]:
        assert delay(attempt, 1, rand=0.0) == 5.0
        assert delay(attempt, 1, rand=1.0) == pytest.approx(6.0)
        assert delay(attempt, 2, rand=0.5) == pytest.approx(330.0)
        assert delay(attempt, 3, rand=0.0) == 1800.0
        assert delay(attempt, 4) is None  # the schedule is over


def test_success_410_redirects_and_other_4xx_stop() -> None:
    for attempt in [
        Attempt(200, None, None),
        Attempt(204, None, None),
        fail(410),
        fail(301),
        fail(302),
        fail(307),
        fail(400),
        fail(404),
        Attempt(None, "refused: loopback", None, refused=True),
    ]:
        assert delay(attempt, 1) is None, attempt
    assert fail(410).gone and not fail(500).gone


def test_retry_after_is_honoured_when_longer_and_capped() -> None:
    assert delay(fail(429, retry_after=120), 1, rand=0.0) == 120.0
    assert delay(fail(503, retry_after=1), 2, rand=0.0) == 300.0  # the schedule asks for longer
    assert delay(fail(429, retry_after=10**9), 1, rand=0.0) == 3600.0  # max_retry_after


def test_the_default_schedule_lasts_at_least_a_day() -> None:
    settings = Settings(_env_file=None)
    assert settings.webhook_retry_schedule == DEFAULT_WEBHOOK_RETRY_SCHEDULE
    total = 0.0
    attempts = 1
    while (
        d := retry_delay(
            fail(503),
            attempts,
            schedule=settings.webhook_retry_schedule,
            jitter=settings.webhook_retry_jitter,
            max_retry_after=settings.webhook_max_retry_after,
            rand=lambda: 0.0,  # the shortest jitter
        )
    ) is not None:
        total += d
        attempts += 1
    assert total >= 24 * 3600
    assert attempts == 8  # the first try and seven retries


def test_retry_after_in_both_forms() -> None:
    assert parse_retry_after("120") == 120.0
    now = time.time()
    date = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(90, abs=1)
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_payload_is_the_standard_shape() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    class Fake:
        def model_dump(self, mode: str) -> dict[str, str]:
            return {"id": "j"}

    body = webhooks.payload("animation.succeeded", Fake(), at=when)  # type: ignore[arg-type]
    assert body == b'{"type":"animation.succeeded","timestamp":"2026-01-02T03:04:05Z","data":{"id":"j"}}'


def test_retry_waits_hop_well_inside_the_visibility_timeout() -> None:
    from notify.tasks import hop_seconds

    assert hop_seconds(3 * 3600) == 2700  # a quarter of the default visibility timeout
    assert hop_seconds(24 * 3600) == 3600  # never more than an hour
    assert hop_seconds(60) == 15

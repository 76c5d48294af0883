"""Webhook payloads, Standard Webhooks signatures, the retry schedule, and one delivery attempt.

Signatures (https://www.standardwebhooks.com/) are made and verified in
``stepanim.webhook_signing`` (standard library only, shared with the client and CLI);
they are re-exported here.

Each job event is one message with one ``webhook-id`` (``msg_<job>_<event>``, plus the
step for progress), kept on every attempt so receivers can drop duplicates. Only
terminal events are retried (``retry_delay``); ``started`` and ``progress`` get one
best-effort attempt. The Celery side (when to try again) is ``notify/tasks.py``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import BaseModel

from stepanim import ssrf
from stepanim.auth import initial_webhook_secret
from stepanim.settings import Settings
from stepanim.webhook_signing import secret_bytes as secret_bytes
from stepanim.webhook_signing import signature as signature
from stepanim.webhook_signing import signatures as signatures
from stepanim.webhook_signing import verify as verify
from stepanim.webhook_store import WebhookStore

TERMINAL_EVENTS = frozenset({"animation.succeeded", "animation.failed", "animation.canceled"})
RESPONSE_LIMIT = 64 * 1024  # bytes of a receiver's answer that are read (and dropped)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def message_id(job_id: str, event: str, *, step: int | None = None) -> str:
    """The ``webhook-id`` of a job event; the same on every attempt."""
    suffix = f"_{step}" if step is not None else ""
    return f"msg_{job_id}_{event}{suffix}"


def payload(event: str, job: BaseModel, *, at: datetime | None = None) -> bytes:
    when = (at or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    body = {"type": event, "timestamp": when, "data": job.model_dump(mode="json")}
    return json.dumps(body, separators=(",", ":")).encode()


def current_secrets(store: WebhookStore, settings: Settings, key_id: str) -> list[str]:
    """The secrets that sign the webhooks of jobs created with this API key, newest first."""

    def initial() -> str:
        return initial_webhook_secret(settings, key_id) or new_secret()

    return [s for s, _ in store.secrets(key_id, initial=initial)]


@dataclass(frozen=True)
class Attempt:
    status_code: int | None
    error: str | None
    retry_after: float | None
    duration: float = 0.0
    refused: bool = False  # the SSRF guard refused the URL at send time: nothing was sent

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        """410 Gone: the receiver asks us to stop."""
        return self.status_code == 410

    @property
    def retryable(self) -> bool:
        """Timeouts, connection errors, 5xx and 429 are worth another try; 3xx and other 4xx are not.

        A URL the SSRF guard refuses at send time is not retried either.
        """
        if self.refused:
            return False
        if self.status_code is None:
            return True
        return self.status_code == 429 or self.status_code >= 500


def deliver(
    url: str,
    body: bytes,
    *,
    msg_id: str,
    secrets: Sequence[str],
    timeout: float,
    allow: Sequence[str] = (),
    resolve: ssrf.Resolver = ssrf.system_resolver,
) -> Attempt:
    """POST one signed message. The URL is checked again now and the checked address is called."""
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "stepanim-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures(secrets, msg_id, timestamp, body),
    }
    started = time.perf_counter()
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            response = ssrf.request(client, "POST", url, allow=allow, headers=headers, content=body, resolve=resolve)
            with contextlib.suppress(ssrf.FetchError):  # a chatty receiver: its status code is what counts
                ssrf.read_limited(response, max_bytes=RESPONSE_LIMIT)
    except ssrf.UnsafeURL as e:
        return Attempt(status_code=None, error=f"refused: {e}", retry_after=None, refused=True)
    except httpx.HTTPError as e:
        return Attempt(
            status_code=None, error=f"{type(e).__name__}: {e}", retry_after=None, duration=time.perf_counter() - started
        )
    elapsed = time.perf_counter() - started
    error = None
    if not 200 <= response.status_code < 300:
        error = f"HTTP {response.status_code}"
        if 300 <= response.status_code < 400:
            error += " (redirects are not followed)"
    return Attempt(
        status_code=response.status_code,
        error=error,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        duration=elapsed,
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or invalid."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_delay(
    attempt: Attempt,
    attempts_made: int,
    *,
    schedule: Sequence[float],
    jitter: float,
    max_retry_after: float,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds until the next attempt of a terminal event, or None to stop.

    ``schedule[n-1]`` is the wait after the n-th failed attempt, stretched by up to
    ``jitter`` (a share of it, at random) so that receivers recovering from an outage
    are not hit by every sender at once. A ``Retry-After`` of the receiver is honoured
    when it asks for longer (up to ``max_retry_after``). Delivered, 410 and
    non-retryable answers stop; so does the end of the schedule.
    """
    if attempt.delivered or attempt.gone or not attempt.retryable or attempts_made > len(schedule):
        return None
    delay = schedule[attempts_made - 1] * (1 + jitter * rand())
    if attempt.retry_after is not None:
        delay = max(delay, min(attempt.retry_after, max_retry_after))
    return delay


def attempt_record(
    *, msg_id: str, event: str, number: int, attempt: Attempt, at: float, next_at: float | None
) -> dict[str, Any]:
    """What the job shows of one delivery attempt."""
    if attempt.delivered:
        outcome = "delivered"
    elif attempt.gone:
        outcome = "gone"
    elif next_at is not None:
        outcome = "retrying"
    else:
        outcome = "failed"
    return {
        "webhook_id": msg_id,
        "event": event,
        "attempt": number,
        "at": datetime.fromtimestamp(at, UTC).isoformat(),
        "status_code": attempt.status_code,
        "error": attempt.error,
        "duration_ms": round(attempt.duration * 1000, 1),
        "outcome": outcome,
        "next_attempt_at": datetime.fromtimestamp(next_at, UTC).isoformat() if next_at is not None else None,
    }

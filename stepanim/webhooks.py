"""Webhook payloads, Standard Webhooks signatures, and one delivery attempt.

Signature: ``webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``
with the secret's bytes (a ``whsec_`` prefix is stripped and the rest base64-decoded),
as in https://www.standardwebhooks.com/. Retries are the notify task's business.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

import httpx

from stepanim.public import AnimationPublic


def secret_bytes(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def payload(event: str, job: AnimationPublic) -> bytes:
    body = {"type": event, "timestamp": int(time.time()), "data": job.model_dump(mode="json")}
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Attempt:
    status_code: int | None
    error: str | None
    retry_after: float | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        """Timeouts, connection errors, 5xx and 429 are worth another try; 3xx and other 4xx are not."""
        if self.status_code is None:
            return True
        return self.status_code == 429 or self.status_code >= 500


def deliver(url: str, body: bytes, *, msg_id: str, secret: str, timeout: float) -> Attempt:
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "stepanim-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
    }
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as e:
        return Attempt(status_code=None, error=f"{type(e).__name__}: {e}", retry_after=None)
    return Attempt(
        status_code=response.status_code,
        error=None if response.is_success else f"HTTP {response.status_code}",
        retry_after=_retry_after(response.headers.get("retry-after")),
    )


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None

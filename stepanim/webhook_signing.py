"""Standard Webhooks signatures: signing (the notify worker) and verifying (receivers, the CLI).

Standard library only, so that the Python client and ``stepanim webhook verify`` can use
the very code that signs deliveries without importing the service (Redis, Celery).

``webhook-signature: v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">``,
keyed with the secret's bytes (a ``whsec_`` prefix is stripped and the rest
base64-decoded). During a secret rotation every valid secret signs and the signatures
are sent space-separated, so a receiver holding either secret accepts the message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

DEFAULT_TOLERANCE_SECONDS = 300  # Standard Webhooks' replay window


class SignatureError(Exception):
    """A delivery that does not verify; the message says why."""


def secret_bytes(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signatures(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one ``v1,`` signature per valid secret, space-separated."""
    return " ".join(signature(s, msg_id, timestamp, body) for s in secrets_)


def verify(
    secrets_: str | Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float | None = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Check a delivery's ``webhook-signature`` against one secret or several; raise SignatureError if it fails.

    ``headers`` are matched case-insensitively. The timestamp must be within ``tolerance``
    seconds of ``now`` (replay protection); ``tolerance=None`` skips that check, for a
    delivery saved earlier. Any ``v1`` signature made with any of the secrets is enough.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    missing = [h for h in ("webhook-id", "webhook-timestamp", "webhook-signature") if h not in lowered]
    if missing:
        raise SignatureError(f"missing header {', '.join(missing)}")
    msg_id, stamp, header = lowered["webhook-id"], lowered["webhook-timestamp"].strip(), lowered["webhook-signature"]
    if not stamp.isdigit():
        raise SignatureError(f"webhook-timestamp {stamp!r} is not a Unix time")
    if tolerance is not None:
        age = (time.time() if now is None else now) - int(stamp)
        if abs(age) > tolerance:
            raise SignatureError(f"webhook-timestamp is {age:.0f}s from now, outside the {tolerance:g}s tolerance")
    keys = [secrets_] if isinstance(secrets_, str) else list(secrets_)
    if not keys:
        raise SignatureError("no secret to verify with")
    given = [value for version, _, value in (s.partition(",") for s in header.split()) if version == "v1"]
    if not given:
        raise SignatureError("webhook-signature holds no v1 signature")
    for key in keys:
        if key.startswith("whsec_"):
            try:
                base64.b64decode(key.removeprefix("whsec_"), validate=True)
            except (binascii.Error, ValueError) as e:
                raise SignatureError(f"not a valid whsec_ secret (base64 after the prefix): {e}") from e
        expected = signature(key, msg_id, int(stamp), body).removeprefix("v1,")
        if any(hmac.compare_digest(expected.encode(), value.encode()) for value in given):
            return
    raise SignatureError("no signature matches: wrong secret, or the body or headers were changed")

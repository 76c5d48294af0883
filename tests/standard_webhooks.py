"""An independent Standard Webhooks verifier, written from the specification
(https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md),
not from the project's signer; the tests check real deliveries with it.

Spec points it follows: the signed content is ``msg_id + "." + timestamp + "." + payload``;
the key is the base64 part of the ``whsec_`` secret; the signature is HMAC-SHA256,
base64-encoded, prefixed ``v1,``; the header may hold several space-delimited
signatures (rotation) and any valid one is enough; compare in constant time; refuse
timestamps too far from now (replay protection).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping


class VerificationError(Exception):
    pass


def verify(
    secret: str, headers: Mapping[str, str], payload: bytes, *, tolerance: int = 300, now: float | None = None
) -> None:
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lowered["webhook-id"]
        timestamp = lowered["webhook-timestamp"]
        header = lowered["webhook-signature"]
    except KeyError as e:
        raise VerificationError(f"missing header {e}") from e
    try:
        sent_at = int(timestamp)
    except ValueError as e:
        raise VerificationError("bad timestamp") from e
    current = time.time() if now is None else now
    if sent_at < current - tolerance or sent_at > current + tolerance:
        raise VerificationError("timestamp outside tolerance")
    if not secret.startswith("whsec_"):
        raise VerificationError("not a whsec_ secret")
    key = base64.b64decode(secret[len("whsec_") :])
    to_sign = msg_id.encode() + b"." + timestamp.encode() + b"." + payload
    expected = base64.b64encode(hmac.new(key, to_sign, hashlib.sha256).digest())
    for versioned in header.split(" "):
        version, _, value = versioned.partition(",")
        if version == "v1" and hmac.compare_digest(expected, value.encode()):
            return
    raise VerificationError("no matching signature")


def signatures(headers: Mapping[str, str]) -> list[str]:
    return {k.lower(): v for k, v in headers.items()}["webhook-signature"].split(" ")

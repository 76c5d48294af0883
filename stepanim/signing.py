"""HMAC-signed, expiring download links for the local storage backend. Pure functions.

A link is ``/files/<key>?expires=<unix-seconds>&signature=<hex>``; the signature is
HMAC-SHA256 over ``<key>\\n<expires>`` with the service's signing secret.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote


class LinkError(Exception):
    """A download link that is expired, tampered with or malformed."""


def sign(secret: str, key: str, expires: int) -> str:
    message = f"{key}\n{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_path(secret: str, key: str, ttl_seconds: int, *, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + ttl_seconds)
    return f"/files/{quote(key)}?expires={expires}&signature={sign(secret, key, expires)}"


def verify(secret: str, key: str, expires: str | int, signature: str, *, now: float | None = None) -> None:
    """Raise :class:`LinkError` unless the link is authentic and unexpired."""
    try:
        expires_at = int(expires)
    except (TypeError, ValueError) as e:
        raise LinkError("malformed expiry") from e
    if not hmac.compare_digest(sign(secret, key, expires_at), signature):
        raise LinkError("invalid signature")
    if (time.time() if now is None else now) > expires_at:
        raise LinkError("link expired")

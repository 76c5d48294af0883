"""API keys and tenants. Pure logic; the API turns the results into HTTP.

A key is a random bearer token (``sa_`` + 43 URL-safe characters). Settings keep only
its SHA-256 (enough for a 256-bit random token: there is nothing to brute-force), its
public id and its tenant. Every job belongs to the tenant of the key that created it.

Development mode (``settings.allow_anonymous``, refused in production) lets requests
without a key act as key ``dev`` of tenant ``dev``; a key that is sent is still checked.

``python -m stepanim.auth new-key --id acme-1 --tenant acme`` prints a new key and the
entry to add to ``STEPANIM_API_KEYS``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import secrets
import sys
from dataclasses import dataclass

from stepanim.settings import ANONYMOUS_KEY_ID, ApiKeyConfig, Settings

KEY_PREFIX = "sa_"


class AuthError(Exception):
    """No usable credentials: missing, malformed or unknown key."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id (rate limits, quota, webhook secret) and its tenant (ownership)."""

    key_id: str
    tenant: str
    webhook_secret: str | None = None  # the configured initial secret, if any


ANONYMOUS = Principal(key_id=ANONYMOUS_KEY_ID, tenant=ANONYMOUS_KEY_ID)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def parse_bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None when absent, AuthError when malformed."""
    if authorization is None or not authorization.strip():
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("use an 'Authorization: Bearer <API key>' header")
    return token.strip()


def authenticate(settings: Settings, token: str | None) -> Principal:
    """The principal for a bearer token; raises AuthError. In development mode
    (``allow_anonymous``) a configured key is still its own tenant, and anything else (no key,
    an unknown one) acts as the development tenant, so examples work with or without a key."""
    found: ApiKeyConfig | None = None
    if token is not None:
        digest = hash_key(token)
        for key in settings.api_keys:  # compare every entry, in constant time each
            if hmac.compare_digest(key.sha256, digest):
                found = key
    if found is not None:
        return Principal(key_id=found.id, tenant=found.tenant, webhook_secret=found.webhook_secret)
    if settings.allow_anonymous:
        return principal_for_anonymous(settings)
    if token is None:
        raise AuthError("an API key is required: send 'Authorization: Bearer <API key>'")
    raise AuthError("unknown API key")


def authenticate_header(settings: Settings, authorization: str | None) -> Principal:
    """:func:`authenticate` for an ``Authorization`` header; a malformed one is refused, except
    in development mode, where it counts as no key."""
    try:
        token = parse_bearer(authorization)
    except AuthError:
        if settings.allow_anonymous:
            return principal_for_anonymous(settings)
        raise
    return authenticate(settings, token)


def principal_for_anonymous(settings: Settings) -> Principal:
    return Principal(key_id=ANONYMOUS.key_id, tenant=ANONYMOUS.tenant, webhook_secret=settings.webhook_secret)


def initial_webhook_secret(settings: Settings, key_id: str) -> str | None:
    """The configured first secret of a key (the development key uses ``settings.webhook_secret``)."""
    if key_id == ANONYMOUS_KEY_ID:
        return settings.webhook_secret
    for key in settings.api_keys:
        if key.id == key_id:
            return key.webhook_secret
    return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m stepanim.auth", description="Make an API key.")
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("new-key", help="print a new key and its STEPANIM_API_KEYS entry")
    make.add_argument("--id", required=True, help="public id of the key, e.g. acme-1")
    make.add_argument("--tenant", required=True, help="tenant that owns the key's jobs")
    args = parser.parse_args(argv)
    key = new_key()
    entry = ApiKeyConfig(id=args.id, tenant=args.tenant, sha256=hash_key(key))
    print(f"key (give it to the client; it is not stored): {key}")
    print(f"STEPANIM_API_KEYS entry: {json.dumps(entry.model_dump(exclude_none=True))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

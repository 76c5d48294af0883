"""Idempotency-Key (IETF draft) for the POSTs that create something: one place for the rules.

The first request with a key claims it, makes the thing, and records its id with the
body's fingerprint (new jobs do all three in the Redis script that stores the job). A
repeat with the same body gets that id back (replayed); with another body, 422; while
the first is still in flight, 409 with Retry-After. A key whose thing has expired is
released and the request runs afresh.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Header
from pydantic import BaseModel

from api.errors import ApiError
from stepanim.admission import Admission, IdempotencyRecord, IdempotencyRequest

IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
KEY_EXAMPLES = ["5e1f3c9a-6c1d-4f0e-9d8b-2a7f4b3c1e0d"]


def key_description(what: str) -> str:
    return (
        "Makes the request safe to repeat (IETF Idempotency-Key draft): the same key and body "
        f"return the same {what} for 24 hours; another body with the same key is refused (422); a repeat "
        "while the first is in flight gets 409."
    )


def key_header(what: str) -> Any:
    """The ``Idempotency-Key`` header parameter of a POST that creates ``what``."""
    return Header(pattern=IDEMPOTENCY_KEY_PATTERN, description=key_description(what), examples=KEY_EXAMPLES)


def created_headers(location: str, *, replayed: bool) -> dict[str, str]:
    """The headers of a create's answer: the ``Location`` of what it made, and
    ``Idempotent-Replayed: true`` when a repeated key returned what an earlier request made."""
    headers = {"Location": location}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return headers


def fingerprint(body: BaseModel) -> str:
    """Identity of a request body: its canonical JSON, defaults filled in."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def replayed_id(record: IdempotencyRecord, print_: str) -> str:
    """What a key that is already taken means for a request with body fingerprint ``print_``:
    the id it made (a replay), or 422 (another body) or 409 (its first request is in flight)."""
    if record.fingerprint != print_:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "Idempotency-Key: this key was used with a different request body",
            details=[{"field": "Idempotency-Key", "message": "used before with a different body"}],
        )
    if record.made is None:
        raise ApiError(
            409,
            "idempotency_conflict",
            "Idempotency-Key: a request with this key is still being processed; retry shortly",
            headers={"Retry-After": "1"},
        )
    return record.made


async def claim(
    admission: Admission, request: IdempotencyRequest, *, exists: Callable[[str], Awaitable[bool]]
) -> tuple[IdempotencyRequest, str | None]:
    """Claim the key before making anything: (the request, now holding the claim, None); or
    (the request, the id it made) when the key made something that still ``exists`` (a
    replay); 422 or 409 as :func:`replayed_id` says. A key whose thing expired is released
    and claimed afresh."""
    while True:
        claimed, record = await admission.claim(request)
        if record is None:
            return claimed, None
        made = replayed_id(record, request.fingerprint)
        if await exists(made):
            return request, made
        await admission.release(request, record)


async def run_once(
    admission: Admission,
    request: IdempotencyRequest | None,
    *,
    make: Callable[[], Awaitable[str]],
    exists: Callable[[str], Awaitable[bool]],
) -> tuple[str, bool]:
    """``make()`` once per key; returns (the id it made, whether this is a replay).

    (New jobs take the same rules in the admission script instead: ``api.routes.animations``.)
    """
    if request is None:
        return await make(), False
    claimed, made = await claim(admission, request, exists=exists)
    if made is not None:
        return made, True
    try:
        made = await make()
    except BaseException:
        await admission.release_claim(claimed)
        raise
    await admission.complete(claimed, made)
    return made, False

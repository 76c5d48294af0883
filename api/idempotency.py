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
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Header
from pydantic import BaseModel, StringConstraints, TypeAdapter

from api.errors import ApiError
from api.params import header_parameter
from stepanim.store import IdempotencyRecord, JobStore

IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
KEY_EXAMPLES = ["5e1f3c9a-6c1d-4f0e-9d8b-2a7f4b3c1e0d"]
# The header's value checked by hand (``api.params.header``), with the error FastAPI gives.
KEY_ADAPTER: TypeAdapter[str] = TypeAdapter(Annotated[str, StringConstraints(pattern=IDEMPOTENCY_KEY_PATTERN)])


def key_description(what: str) -> str:
    return (
        "Makes the request safe to repeat (IETF Idempotency-Key draft): the same key and body "
        f"return the same {what} for 24 hours; another body with the same key is refused (422); a repeat "
        "while the first is in flight gets 409."
    )


def key_header(what: str) -> Any:
    """The ``Idempotency-Key`` header parameter of a POST that creates ``what``."""
    return Header(pattern=IDEMPOTENCY_KEY_PATTERN, description=key_description(what), examples=KEY_EXAMPLES)


def key_parameter(what: str) -> dict[str, Any]:
    """The same parameter's OpenAPI entry, for a route that reads the header by hand."""
    return header_parameter(
        "idempotency-key",
        title="Idempotency-Key",
        description=key_description(what),
        examples=KEY_EXAMPLES,
        pattern=IDEMPOTENCY_KEY_PATTERN,
    )


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
    if record.job_id is None:
        raise ApiError(
            409,
            "idempotency_conflict",
            "Idempotency-Key: a request with this key is still being processed; retry shortly",
            headers={"Retry-After": "1"},
        )
    return record.job_id


def run_once(
    store: JobStore,
    *,
    tenant: str,
    key: str | None,
    body: BaseModel,
    make: Callable[[], str],
    exists: Callable[[str], bool],
    ttl: int,
) -> tuple[str, bool]:
    """``make()`` once per (tenant, key); returns (the id it made, whether this is a replay).

    (New jobs take the same rules in one Redis script instead: ``api.routes.animations.accept``.)
    """
    if key is None:
        return make(), False
    print_ = fingerprint(body)
    record = store.claim_idempotency(tenant, key, print_)
    if record is not None:
        made_before = replayed_id(record, print_)
        if exists(made_before):
            return made_before, True
        store.release_idempotency(tenant, key)  # what it made expired before the key: start afresh
        return run_once(store, tenant=tenant, key=key, body=body, make=make, exists=exists, ttl=ttl)
    try:
        made = make()
    except BaseException:
        store.release_idempotency(tenant, key)
        raise
    store.complete_idempotency(tenant, key, print_, made, ttl=ttl)
    return made, False

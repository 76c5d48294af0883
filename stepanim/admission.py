"""Admitting new jobs: rate limits, the concurrent-job quota, Idempotency-Keys and the record.

A new job is stored by one Redis script (:data:`ADMIT`), all or nothing: it counts the request
in the API key's rate-limit windows, takes a place in the key's quota of unfinished jobs,
records the Idempotency-Key (if any), and writes the record, its place in the open set and in
the tenant's listing, and its first event. Production (``POST /animations``), the tests and
the benchmarks create jobs through it and nothing else (:meth:`Admission.admit`, or
:func:`admit_now` from synchronous code).

The render task is sent afterwards, with Celery's public API. Between the two a job is stored
with no task: if the API dies there, the reconciler finds the job queued, unleased and in no
queue, and enqueues it (``stepanim.reconcile.decide``, after ``lease_seconds``). So a ``202``
means the record is stored, and a stored job always gets rendered.

Idempotency-Keys (one implementation, for jobs and renditions): the first request claims the
key (:meth:`Admission.claim`) or, for a job, takes it in the script; it then records what it
made (:meth:`Admission.complete`); a claim lapses after ``CLAIM_SECONDS`` if its request died.
What a taken key means for a repeat (replay, 422, 409) is the API's rule: ``api.idempotency``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import redis
import redis.asyncio

from stepanim.events import StatusEvent
from stepanim.jobs import Job, JobStatus
from stepanim.keys import Keys
from stepanim.store import JobStore, millis

CLAIM_SECONDS = 60  # an Idempotency-Key claimed by a request that died is free again after this
RATE_WINDOW_SECONDS = 60


@dataclass(frozen=True)
class RateLimit:
    """A per-key window: at most ``limit`` ``what`` a minute, counted under ``bucket``."""

    bucket: str
    limit: int
    what: str


@dataclass(frozen=True)
class IdempotencyRecord:
    """What an Idempotency-Key holds: the request body's fingerprint and the id it made (None
    while its first request is still at work)."""

    fingerprint: str
    made: str | None
    raw: bytes = b""  # the record as stored (to release exactly this one)

    @classmethod
    def from_json(cls, raw: bytes | str) -> IdempotencyRecord:
        data = json.loads(raw)
        return cls(data["fingerprint"], data["job_id"], raw if isinstance(raw, bytes) else raw.encode())


@dataclass(frozen=True)
class IdempotencyRequest:
    """An ``Idempotency-Key`` as the admission needs it: whose, which, and the body's fingerprint."""

    tenant: str
    key: str
    fingerprint: str
    ttl: int
    claim: str = ""  # set when this request claimed the key before slow work (:meth:`Admission.claim`)


@dataclass(frozen=True)
class Admitted:
    """What :meth:`Admission.admit` did.

    ``created``: stored. ``rate_limited``: a rate-limit window is full (``waits`` says which,
    and for how long). ``replay``: the key already made ``record.made``. ``reused``: the key
    was used with another body. ``in_flight``: another request holds the key. ``quota``: the
    API key has its limit of unfinished jobs. Nothing but the rate counters is written unless
    ``created``.
    """

    outcome: Literal["created", "rate_limited", "replay", "reused", "in_flight", "quota"]
    record: IdempotencyRecord | None = None
    waits: list[float | None] = field(default_factory=list)


# KEYS: job, open set, tenant index, events, key's active set, n rate-limit windows[, idempotency key]
# ARGV: job JSON, and a JSON object of the rest (see Admission._call)
# Returns {outcome, what the idempotency key holds (or ''), the rate-window counts...}
ADMIT = """
local p = cjson.decode(ARGV[2])
local nrates = #p.limits
local counts = {}
-- The job exists only if this very call ran before (ids are new per request): a call retried
-- after its connection broke, the first reply lost. It is admitted already; count nothing again.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'created', ''} end
for i = 1, nrates do
    counts[i] = redis.call('INCR', KEYS[5 + i])
    if counts[i] == 1 then redis.call('EXPIRE', KEYS[5 + i], p.window_expiry) end
end
local function reply(outcome, raw) return {outcome, raw, unpack(counts)} end
for i = 1, nrates do
    if counts[i] > p.limits[i] then return reply('rate_limited', '') end
end
local idem = KEYS[6 + nrates]
if p.fingerprint ~= '' then
    local raw = redis.call('GET', idem)
    if raw then
        local record = cjson.decode(raw)
        if record.fingerprint ~= p.fingerprint then return reply('reused', raw) end
        if record.job_id ~= cjson.null then return reply('replay', raw) end
        if record.claim ~= p.claim or p.claim == '' then return reply('in_flight', raw) end
    end
end
if p.max_active > 0 and redis.call('SISMEMBER', KEYS[5], p.id) == 0 then
    if redis.call('SCARD', KEYS[5]) >= p.max_active then return reply('quota', '') end
    redis.call('SADD', KEYS[5], p.id)
    redis.call('EXPIRE', KEYS[5], p.ttl)
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', p.ttl)
redis.call('ZADD', KEYS[2], 'NX', p.created, p.id)
if p.listed then
    redis.call('ZADD', KEYS[3], p.created_ms, p.id)
    redis.call('EXPIRE', KEYS[3], p.ttl)
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 10000, '*', 'data', p.event)
redis.call('EXPIRE', KEYS[4], p.ttl)
if p.fingerprint ~= '' then
    redis.call('SET', idem, cjson.encode({fingerprint = p.fingerprint, job_id = p.id}), 'EX', p.idempotency_ttl)
end
return reply('created', '')
"""

# Rate limit of a request that creates nothing: every key of KEYS is a window.
COUNT = """
local counts = {}
for i = 1, #KEYS do
    counts[i] = redis.call('INCR', KEYS[i])
    if counts[i] == 1 then redis.call('EXPIRE', KEYS[i], ARGV[1]) end
end
return counts
"""

# Delete a key only while it still holds what we read (our claim, or a record whose thing expired).
DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _windows(keys: Keys, key_id: str, limits: Sequence[RateLimit]) -> tuple[list[str], float]:
    """The keys of the current fixed window of each limit, and the seconds until it ends."""
    now = time.time()
    number = int(now // RATE_WINDOW_SECONDS)
    names = [keys.rate(key_id, limit.bucket, number) for limit in limits]
    return names, max(0.001, (number + 1) * RATE_WINDOW_SECONDS - now)


def _waits(counts: Sequence[Any], limits: Sequence[RateLimit], wait: float) -> list[float | None]:
    return [wait if int(count) > limit.limit else None for count, limit in zip(counts, limits, strict=True)]


def _pending(fingerprint: str, *, claim: str) -> str:
    """The record of a key whose request is still in flight; ``claim`` tells its owner."""
    return json.dumps({"fingerprint": fingerprint, "job_id": None, "claim": claim})


def _call(
    keys: Keys,
    job: Job,
    *,
    ttl: int,
    max_active: int,
    idempotency: IdempotencyRequest | None,
    limits: Sequence[RateLimit],
    listed: bool = True,
) -> tuple[list[str], list[str], float]:
    """The admission script's KEYS and ARGV for ``job``, and the seconds left in the rate windows."""
    tenant = job.tenant or "dev"
    key_id = job.key_id or "dev"
    windows, wait = _windows(keys, key_id, limits)
    created = job.created_at.timestamp()
    params = {
        "id": job.id,
        "created": repr(created),  # strings: Lua would print a number with 14 digits
        "created_ms": str(millis(created)),
        "event": StatusEvent(status=JobStatus.queued).model_dump_json(),
        "ttl": ttl,
        "max_active": max_active,
        "fingerprint": idempotency.fingerprint if idempotency else "",
        "idempotency_ttl": idempotency.ttl if idempotency else 0,
        "claim": idempotency.claim if idempotency else "",
        "window_expiry": RATE_WINDOW_SECONDS + 5,
        "limits": [limit.limit for limit in limits],
        "listed": listed,
    }
    names = [
        keys.job(job.id),
        keys.open_jobs(),
        keys.tenant_jobs(tenant),
        keys.events(job.id),
        keys.active(key_id),
        *windows,
        *([keys.idempotency(idempotency.tenant, idempotency.key)] if idempotency else []),
    ]
    return names, [job.model_dump_json(), json.dumps(params)], wait


def _admitted(reply: Sequence[Any], limits: Sequence[RateLimit], wait: float) -> Admitted:
    outcome, raw, *counts = (_text(part) for part in reply)
    record = IdempotencyRecord.from_json(raw) if raw else None
    return Admitted(outcome, record, _waits(counts, limits, wait) if counts else [None] * len(limits))  # type: ignore[arg-type]


class Admission:
    """The API's side: admission of new jobs, rate limits and Idempotency-Key claims (asyncio)."""

    def __init__(self, client: redis.asyncio.Redis, keys: Keys, *, ttl: int) -> None:
        self.client = client
        self.keys = keys
        self.ttl = ttl
        self._admit = client.register_script(ADMIT)
        self._count = client.register_script(COUNT)
        self._delete_if_equal = client.register_script(DELETE_IF_EQUAL)

    async def admit(
        self,
        job: Job,
        *,
        max_active: int,
        idempotency: IdempotencyRequest | None = None,
        limits: Sequence[RateLimit] = (),
        listed: bool = True,
    ) -> Admitted:
        """Count the request in the key's ``limits``, then store ``job`` if no window is full, the
        API key has fewer than ``max_active`` unfinished jobs (0: no quota) and the
        Idempotency-Key (if any) is free or claimed by this request. ``listed``: in the tenant's
        GET /animations listing (grids and their cells are not)."""
        names, args, wait = _call(
            self.keys, job, ttl=self.ttl, max_active=max_active, idempotency=idempotency, limits=limits, listed=listed
        )
        return _admitted(await self._admit(keys=names, args=args), limits, wait)

    async def hit_rates(self, key_id: str, limits: Sequence[RateLimit]) -> list[float | None]:
        """Count one request in the current window of each limit; for each, the seconds to wait
        when over it, else None."""
        names, wait = _windows(self.keys, key_id, limits)
        counts = await self._count(keys=names, args=[RATE_WINDOW_SECONDS + 5])
        return _waits(counts, limits, wait)

    async def claim(self, request: IdempotencyRequest) -> tuple[IdempotencyRequest, IdempotencyRecord | None]:
        """Claim the key before slow work: (the request, now holding the claim), None; or what the
        key already holds. A claim lapses after ``CLAIM_SECONDS`` if its request died."""
        claim = uuid.uuid4().hex
        key = self.keys.idempotency(request.tenant, request.key)
        pending = _pending(request.fingerprint, claim=claim)
        while True:
            if await self.client.set(key, pending, nx=True, ex=CLAIM_SECONDS):
                return replace(request, claim=claim), None
            raw = await self.client.get(key)
            if raw is not None:
                return request, IdempotencyRecord.from_json(raw)

    async def complete(self, request: IdempotencyRequest, made: str) -> None:
        """The claimed request made ``made``: a repeat gets it back for ``request.ttl`` seconds."""
        value = json.dumps({"fingerprint": request.fingerprint, "job_id": made})
        await self.client.set(self.keys.idempotency(request.tenant, request.key), value, ex=request.ttl)

    async def release(self, request: IdempotencyRequest, record: IdempotencyRecord) -> None:
        """Forget the key while it still holds ``record`` (a claim of ours, or a thing that is gone)."""
        await self._delete_if_equal(keys=[self.keys.idempotency(request.tenant, request.key)], args=[record.raw])

    async def release_claim(self, request: IdempotencyRequest) -> None:
        """Give up our claim of the key (the request failed before it made anything)."""
        await self.release(request, IdempotencyRecord.from_json(_pending(request.fingerprint, claim=request.claim)))

    async def forget_finished_active(self, key_id: str) -> bool:
        """Drop the key's active jobs that finished without releasing their place (or expired);
        True if any place was freed."""
        key = self.keys.active(key_id)
        members = [_text(m) for m in await self.client.smembers(key)]
        raws = await self.client.mget([self.keys.job(m) for m in members]) if members else []
        stale = [m for m, raw in zip(members, raws, strict=True) if raw is None or _is_terminal(raw)]
        if stale:
            await self.client.srem(key, *stale)
        return bool(stale)


def admit_now(store: JobStore, job: Job, *, listed: bool = True) -> Admitted:
    """:meth:`Admission.admit` from synchronous code (a grid's cells, tests, benchmarks): the same
    script, without limits, quota or Idempotency-Key."""
    names, args, wait = _call(
        store.keys, job, ttl=store.ttl_seconds, max_active=0, idempotency=None, limits=(), listed=listed
    )
    return _admitted(store.redis.register_script(ADMIT)(keys=names, args=args), (), wait)


def release_place(client: redis.Redis, keys: Keys, key_id: str, job_id: str) -> None:
    """A job of API key ``key_id`` finished: its place in the key's quota is free."""
    client.srem(keys.active(key_id), job_id)


def _is_terminal(raw: bytes | str) -> bool:
    return JobStatus(json.loads(raw)["status"]).is_terminal()


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

"""The job store in Redis. The only module that knows Redis key names.

Keys (``<p>`` is ``settings.key_prefix``):

- ``<p>:job:<id>``         the job record as JSON
- ``<p>:job:<id>:cancel``  set when a client asked to cancel; also a pub/sub channel that tells the
  render worker at once (``worker.cancel``)
- ``<p>:job:<id>:events``  a stream of the job's events (status changes, progress)
- ``<p>:job:<id>:lease:<stage>`` who works on the job's render or encode now, kept by a heartbeat
- ``<p>:job:<id>:requeues`` how often the reconciler re-enqueued the job after its worker was lost
- ``<p>:jobs:open``        sorted set of the jobs not yet terminal (score: creation time)
- ``<p>:metrics``          hash of counters every process adds to (``stepanim.metrics``)
- ``<p>:reconcile:lock``   held by the one reconciler that acts in a period

- ``<p>:job:<id>:deliveries``  the job's webhook delivery attempts (a capped list)
- ``<p>:job:<id>:throttle:<name>``  set while a throttled action (progress webhook) must wait
- ``<p>:tenant:<t>:jobs``  the tenant's job ids, scored by creation time (listing)
- ``<p>:apikey:<k>:active``  ids of the key's unfinished jobs (concurrent-job quota)
- ``<p>:apikey:<k>:rate:<bucket>:<window>``  request counter of one rate-limit window
- ``<p>:apikey:<k>:webhook-secrets``  the key's webhook secrets, newest first, with expiry
- ``<p>:idempotency:<t>:<sha256 of the key>``  what an Idempotency-Key produced
- ``<p>:delivery:<webhook-id>``  attempts made of one webhook message (one scheduler per attempt)
- ``<p>:upload:<id>``         the tenant that stored an init image; it expires with the upload's usability

Celery's Redis transport keeps its own keys in the same database: one list per queue
(named after the queue) and ``unacked`` / ``unacked_index`` for delivered messages not
yet acknowledged; :meth:`JobStore.broker_messages` reads them for the reconciler.

Every write of a record is an optimistic transaction (WATCH/MULTI), so a progress
update from the worker and a cancel from the API never overwrite each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import redis
import redis.asyncio

from stepanim.group_commit import ScriptBatch
from stepanim.jobs import Job, JobStatus
from stepanim.keys import Keys

CLAIM_SECONDS = 60  # an Idempotency-Key claimed by a request that died is free again after this


class JobNotFound(Exception):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}")
        self.job_id = job_id


class JobStore:
    def __init__(self, client: redis.Redis, *, prefix: str = "stepanim", ttl_seconds: int = 7 * 24 * 3600) -> None:
        self.redis = client
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> JobStore:
        client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)
        return cls(client, **kwargs)

    # Key layout -----------------------------------------------------------------
    def _job_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def _cancel_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:cancel"

    def _events_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:events"

    def _lease_key(self, job_id: str, stage: str) -> str:
        return f"{self.prefix}:job:{job_id}:lease:{stage}"

    def _requeues_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:requeues"

    def _open_key(self) -> str:
        return f"{self.prefix}:jobs:open"

    def _metrics_key(self) -> str:
        return f"{self.prefix}:metrics"

    def _lock_key(self, name: str) -> str:
        return f"{self.prefix}:{name}:lock"

    def _deliveries_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:deliveries"

    def _throttle_key(self, job_id: str, name: str) -> str:
        return f"{self.prefix}:job:{job_id}:throttle:{name}"

    def _tenant_jobs_key(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}:jobs"

    def _active_key(self, key_id: str) -> str:
        return f"{self.prefix}:apikey:{key_id}:active"

    def _rate_key(self, key_id: str, bucket: str, window: int) -> str:
        return f"{self.prefix}:apikey:{key_id}:rate:{bucket}:{window}"

    def _secrets_key(self, key_id: str) -> str:
        return f"{self.prefix}:apikey:{key_id}:webhook-secrets"

    def _idempotency_key(self, tenant: str, key: str) -> str:
        return f"{self.prefix}:idempotency:{tenant}:{hashlib.sha256(key.encode()).hexdigest()}"

    def _delivery_key(self, msg_id: str) -> str:
        return f"{self.prefix}:delivery:{msg_id}"

    # Records ----------------------------------------------------------------------
    def create(self, job: Job, *, event: dict[str, Any] | None = None) -> None:
        """Store a new job; refuses to overwrite an existing id.

        In one transaction: the record, its place in the open set (for the reconciler),
        in the tenant's listing, and ``event`` (the ``queued`` status) starting its stream.
        """
        with self.redis.pipeline() as pipe:
            pipe.set(self._job_key(job.id), job.model_dump_json(), nx=True, ex=self.ttl_seconds)
            pipe.zadd(self._open_key(), {job.id: job.created_at.timestamp()}, nx=True)
            if job.tenant is not None:
                index = self._tenant_jobs_key(job.tenant)
                pipe.zadd(index, {job.id: _millis(job.created_at.timestamp())})
                pipe.expire(index, self.ttl_seconds)
            if event is not None:
                self._append_events(pipe, job.id, [event])
            created = pipe.execute()[0]
        if not created:
            raise ValueError(f"job {job.id} already exists")

    def get(self, job_id: str) -> Job:
        raw = self.redis.get(self._job_key(job_id))
        if raw is None:
            raise JobNotFound(job_id)
        return Job.model_validate_json(raw)

    def delete(self, job_id: str) -> None:
        self.redis.delete(
            self._job_key(job_id),
            self._cancel_key(job_id),
            self._events_key(job_id),
            self._lease_key(job_id, "render"),
            self._lease_key(job_id, "encode"),
            self._requeues_key(job_id),
            self._deliveries_key(job_id),
        )
        self.redis.zrem(self._open_key(), job_id)

    def update(
        self,
        job_id: str,
        mutate: Callable[[Job], Job | None],
        *,
        event: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
    ) -> Job:
        """Apply ``mutate`` to the current record atomically.

        ``mutate`` returns the new record, or None to leave it unchanged. ``event`` (one,
        or several in order) is appended to the job's event stream in the same
        transaction. Returns the record as stored.
        """
        key = self._job_key(job_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(key)
                    if raw is None:
                        raise JobNotFound(job_id)
                    current = Job.model_validate_json(raw)
                    updated = mutate(Job.model_validate_json(raw))  # a copy: 4x cheaper than a deep copy
                    if updated is None:
                        pipe.unwatch()
                        return current
                    pipe.multi()
                    pipe.set(key, updated.model_dump_json(), keepttl=True)
                    self._append_events(pipe, job_id, [event] if isinstance(event, dict) else event or ())
                    pipe.execute()
                    return updated
                except redis.WatchError:
                    continue

    # Cancel flag ------------------------------------------------------------------
    def request_cancel(self, job_id: str) -> None:
        """Set the job's cancel flag and announce it on the channel of the same name."""
        with self.redis.pipeline() as pipe:
            pipe.set(self._cancel_key(job_id), "1", ex=self.ttl_seconds)
            pipe.publish(self._cancel_key(job_id), "1")
            pipe.execute()

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(self._cancel_key(job_id)))

    @contextlib.contextmanager
    def cancel_subscription(self, job_id: str) -> Iterator[Any]:
        """A pub/sub subscription that receives a message when :meth:`request_cancel` runs."""
        sub = self.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            sub.subscribe(self._cancel_key(job_id))
            yield sub
        finally:
            sub.close()

    # Events -----------------------------------------------------------------------
    def _append_events(self, pipe: Any, job_id: str, events: Sequence[dict[str, Any]]) -> None:
        if not events:
            return
        key = self._events_key(job_id)
        for event in events:
            pipe.xadd(key, {"data": json.dumps(event, default=str)}, maxlen=10_000, approximate=True)
        pipe.expire(key, self.ttl_seconds)

    def events(self, job_id: str, after: str = "0-0") -> list[tuple[str, dict[str, Any]]]:
        """Events of a job after the given stream id, oldest first."""
        start = f"({after}" if after != "0-0" else "-"
        entries: list[tuple[bytes, dict[bytes, bytes]]] = self.redis.xrange(self._events_key(job_id), min=start)  # type: ignore[assignment]
        return [(_text(eid), json.loads(fields[b"data"])) for eid, fields in entries]

    # Uploads ----------------------------------------------------------------------------
    def _upload_key(self, upload_id: str) -> str:
        return f"{self.prefix}:upload:{upload_id}"

    def set_upload_owner(self, upload_id: str, tenant: str) -> None:
        """Record who stored an init image; it can be used for ``ttl_seconds`` (as long as a job lives)."""
        self.redis.set(self._upload_key(upload_id), tenant, ex=self.ttl_seconds)

    def upload_owner(self, upload_id: str) -> str | None:
        raw = self.redis.get(self._upload_key(upload_id))
        return None if raw is None else _text(raw)

    def ping(self) -> None:
        self.redis.ping()

    # Open jobs ------------------------------------------------------------------------
    def open_job_ids(self) -> list[str]:
        """Ids of the jobs not yet terminal, oldest first."""
        ids: list[bytes] = self.redis.zrange(self._open_key(), 0, -1)  # type: ignore[assignment]
        return [_text(v) for v in ids]

    def mark_closed(self, job_id: str) -> None:
        """The job is terminal: the reconciler need not look at it again."""
        self.redis.zrem(self._open_key(), job_id)

    def get_many(self, job_ids: list[str]) -> list[Job | None]:
        """The records of ``job_ids`` in order (None where a record is gone)."""
        jobs: list[Job | None] = []
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start : start + 500]
            raws: list[bytes | None] = self.redis.mget([self._job_key(i) for i in chunk])  # type: ignore[assignment]
            jobs.extend(None if raw is None else Job.model_validate_json(raw) for raw in raws)
        return jobs

    # Leases ---------------------------------------------------------------------------
    # A lease says "a live process works on this job". Its holder renews it every few
    # seconds; if the process dies the key expires. Compare-and-set scripts keep a slow
    # holder from renewing or deleting a lease someone else took over.
    _ACQUIRE = """
        local v = redis.call('GET', KEYS[1])
        if (not v) or v == ARGV[1] or v == ARGV[3] then
            redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1
        end
        return 0"""
    _RENEW = """
        if redis.call('GET', KEYS[1]) == ARGV[1] then
            redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) return 1
        end
        return 0"""
    _RELEASE = """
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0"""

    def acquire_lease(self, job_id: str, stage: str, owner: str, *, ttl: int, takeover: str = "") -> bool:
        """Take the lease of the job's ``stage`` if it is free, already ours, or handed over as ``takeover``."""
        key = self._lease_key(job_id, stage)
        return bool(self.redis.eval(self._ACQUIRE, 1, key, owner, ttl, takeover or owner))

    def renew_lease(self, job_id: str, stage: str, owner: str, *, ttl: int, value: str | None = None) -> bool:
        """Extend our lease (optionally storing ``value`` instead, e.g. a hand-over token)."""
        return bool(self.redis.eval(self._RENEW, 1, self._lease_key(job_id, stage), owner, value or owner, ttl))

    def release_lease(self, job_id: str, stage: str, owner: str) -> bool:
        return bool(self.redis.eval(self._RELEASE, 1, self._lease_key(job_id, stage), owner))

    def lease_holders(self, leases: list[tuple[str, str]]) -> list[str | None]:
        """Holders of the ``(job_id, stage)`` leases, None where free."""
        if not leases:
            return []
        keys = [self._lease_key(job_id, stage) for job_id, stage in leases]
        raws: list[bytes | None] = self.redis.mget(keys)  # type: ignore[assignment]
        return [None if raw is None else _text(raw) for raw in raws]

    def count_requeue(self, job_id: str) -> int:
        """Count one more re-enqueue of a lost job; returns the new count."""
        key = self._requeues_key(job_id)
        with self.redis.pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, self.ttl_seconds)
            count, _ = pipe.execute()
        return int(count)

    def try_lock(self, name: str, owner: str, *, ttl: float) -> bool:
        """A short lock (``SET NX PX``) so that one of several replicas acts; ours again if we hold it."""
        key = self._lock_key(name)
        if self.redis.set(key, owner, nx=True, px=int(ttl * 1000)):
            return True
        return self.renew_lock(name, owner, ttl=ttl)

    def renew_lock(self, name: str, owner: str, *, ttl: float) -> bool:
        key = self._lock_key(name)
        if _text(self.redis.get(key) or b"") == owner:
            return bool(self.redis.pexpire(key, int(ttl * 1000)))
        return False

    # Metrics --------------------------------------------------------------------------
    def add_metrics(self, increments: dict[str, float]) -> None:
        """Add to counters shared by every process (one round trip)."""
        key = self._metrics_key()
        with self.redis.pipeline(transaction=False) as pipe:
            for name, amount in increments.items():
                pipe.hincrbyfloat(key, name, amount)
            pipe.execute()

    def metric_values(self) -> dict[str, float]:
        raw: dict[bytes, bytes] = self.redis.hgetall(self._metrics_key())  # type: ignore[assignment]
        return {_text(k): float(v) for k, v in raw.items()}

    # Celery's Redis transport (kombu) -------------------------------------------------
    @staticmethod
    def _queue_keys(queue: str) -> list[str]:
        # kombu keeps one list per priority step; priority 0 (the default) is the bare name.
        return [queue] + [f"{queue}\x06\x16{p}" for p in (3, 6, 9)]

    def queue_depth(self, queue: str) -> int:
        """Messages waiting in ``queue`` (not yet delivered to a worker)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for key in self._queue_keys(queue):
                pipe.llen(key)
            return sum(int(n) for n in pipe.execute())

    def unacked_count(self) -> int:
        """Messages delivered to workers and not yet acknowledged."""
        return int(self.redis.hlen("unacked"))

    def broker_messages(self, queues: list[str]) -> tuple[list[bytes], list[tuple[bytes, float]]]:
        """Raw messages waiting in ``queues``, and raw unacknowledged ones with their delivery time."""
        waiting: list[bytes] = []
        for queue in queues:
            for key in self._queue_keys(queue):
                waiting.extend(self.redis.lrange(key, 0, -1))  # type: ignore[arg-type]
        index: list[tuple[bytes, float]] = self.redis.zrange("unacked_index", 0, -1, withscores=True)  # type: ignore[assignment]
        delivered_at = dict(index)
        unacked: dict[bytes, bytes] = self.redis.hgetall("unacked")  # type: ignore[assignment]
        now = time.time()
        return waiting, [(raw, delivered_at.get(tag, now)) for tag, raw in unacked.items()]

    # Listing ----------------------------------------------------------------------
    def list_jobs(
        self,
        tenant: str,
        *,
        limit: int,
        cursor: tuple[int, str] | None = None,
        statuses: frozenset[JobStatus] | None = None,
        scan_limit: int = 1000,
    ) -> tuple[list[Job], tuple[int, str] | None]:
        """The tenant's jobs, newest first, after ``cursor`` (creation millis, id).

        Returns the page and the cursor of the next one (None at the end). At most
        ``scan_limit`` index entries are examined per call, so a rare status filter
        returns a short (even empty) page with a cursor rather than scanning everything.
        """
        index = self._tenant_jobs_key(tenant)
        self.redis.zremrangebyscore(index, "-inf", _millis(time.time() - self.ttl_seconds))
        page: list[Job] = []
        vanished: list[str] = []
        last: tuple[int, str] | None = None
        max_score: int | str = "+inf" if cursor is None else cursor[0]
        offset = examined = 0
        more = False
        while examined < scan_limit:
            batch: list[tuple[bytes, float]] = self.redis.zrevrangebyscore(  # type: ignore[assignment]
                index, max_score, "-inf", start=offset, num=100, withscores=True
            )
            if not batch:
                break
            offset += len(batch)
            entries = [(int(score), _text(member)) for member, score in batch]
            if cursor is not None:  # equal scores come in descending id order: skip what was already returned
                entries = [e for e in entries if e[0] < cursor[0] or e[1] < cursor[1]]
            raws = self.redis.mget([self._job_key(job_id) for _, job_id in entries]) if entries else []
            for (score, job_id), raw in zip(entries, raws, strict=True):
                if len(page) == limit or examined >= scan_limit:
                    more = True
                    break
                examined += 1
                last = (score, job_id)
                if raw is None:
                    vanished.append(job_id)
                    continue
                job = Job.model_validate_json(raw)
                if statuses is None or job.status in statuses:
                    page.append(job)
            if more:
                break
            if len(page) == limit:
                more = bool(self.redis.zrevrangebyscore(index, max_score, "-inf", start=offset, num=1))
                break
        if vanished:
            self.redis.zrem(index, *vanished)
        if examined >= scan_limit and not more:
            more = True
        return page, (last if more and last is not None else None)

    # Concurrent-job quota (taken in :meth:`AsyncJobStore.admit`) ------------------------
    def release_active(self, key_id: str, job_id: str) -> None:
        self.redis.srem(self._active_key(key_id), job_id)

    def active_jobs(self, key_id: str) -> set[str]:
        return {_text(m) for m in self.redis.smembers(self._active_key(key_id))}

    # Idempotency keys -------------------------------------------------------------------
    def claim_idempotency(
        self, tenant: str, key: str, fingerprint: str, *, pending_ttl: int = CLAIM_SECONDS
    ) -> IdempotencyRecord | None:
        """Claim ``key`` for a new request: None when claimed; else what the key already holds.

        A claim is pending (no job id) until :meth:`complete_idempotency`; it lapses after
        ``pending_ttl`` seconds if the claiming request died.
        """
        redis_key = self._idempotency_key(tenant, key)
        pending = _pending_idempotency(fingerprint, claim=uuid.uuid4().hex)
        while True:
            if self.redis.set(redis_key, pending, nx=True, ex=pending_ttl):
                return None
            raw = self.redis.get(redis_key)
            if raw is not None:
                return IdempotencyRecord.from_json(raw)

    def complete_idempotency(self, tenant: str, key: str, fingerprint: str, job_id: str, *, ttl: int) -> None:
        value = json.dumps({"fingerprint": fingerprint, "job_id": job_id})
        self.redis.set(self._idempotency_key(tenant, key), value, ex=ttl)

    def release_idempotency(self, tenant: str, key: str) -> None:
        self.redis.delete(self._idempotency_key(tenant, key))

    # Webhook secrets ----------------------------------------------------------------------
    def webhook_secrets(self, key_id: str, *, initial: Callable[[], str]) -> list[tuple[str, float | None]]:
        """The key's valid secrets, newest first, with their expiry (None: current).

        The first read stores ``initial()`` (set-if-absent, so every process agrees).
        """
        key = self._secrets_key(key_id)
        raw = self.redis.get(key)
        if raw is None:
            self.redis.set(key, json.dumps([{"secret": initial(), "expires_at": None}]), nx=True)
            raw = self.redis.get(key)
        return _valid_secrets(json.loads(raw or "[]"))

    def rotate_webhook_secret(
        self, key_id: str, *, new_secret: str, grace_seconds: int, initial: Callable[[], str]
    ) -> list[tuple[str, float | None]]:
        """Make ``new_secret`` current; the previous one stays valid for ``grace_seconds``."""
        self.webhook_secrets(key_id, initial=initial)
        key = self._secrets_key(key_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    now = time.time()
                    valid = _valid_secrets(json.loads(pipe.get(key) or "[]"))
                    entries: list[dict[str, Any]] = [{"secret": new_secret, "expires_at": None}]
                    if grace_seconds > 0:
                        entries += [
                            {"secret": s, "expires_at": now + grace_seconds if exp is None else exp} for s, exp in valid
                        ]
                    pipe.multi()
                    pipe.set(key, json.dumps(entries))
                    pipe.execute()
                    return _valid_secrets(entries)
                except redis.WatchError:
                    continue

    # Webhook deliveries ---------------------------------------------------------------------
    def record_delivery(self, job_id: str, attempt: dict[str, Any], *, keep: int = 100) -> None:
        """Append one delivery attempt to the job's list (the newest ``keep`` are kept)."""
        key = self._deliveries_key(job_id)
        with self.redis.pipeline() as pipe:
            pipe.rpush(key, json.dumps(attempt, default=str))
            pipe.ltrim(key, -keep, -1)
            pipe.expire(key, self.ttl_seconds)
            pipe.execute()

    def deliveries(self, job_id: str) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.redis.lrange(self._deliveries_key(job_id), 0, -1)]

    def public_extras(self, job_id: str) -> tuple[bool, list[dict[str, Any]]]:
        """What a client sees beside the record, in one round trip: (cancel requested, webhook deliveries)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(self._cancel_key(job_id))
            pipe.lrange(self._deliveries_key(job_id), 0, -1)
            canceled, raws = pipe.execute()
        return bool(canceled), [json.loads(raw) for raw in raws]

    def delivery_attempts(self, msg_id: str) -> int:
        """Attempts already made of the message with this webhook-id."""
        raw = self.redis.get(self._delivery_key(msg_id))
        return int(raw) if raw is not None else 0

    _ADVANCE = """
    local done = tonumber(redis.call('GET', KEYS[1]) or '0')
    if done == tonumber(ARGV[1]) - 1 then
        redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
        return 1
    end
    return 0
    """

    def advance_delivery(self, msg_id: str, attempt: int) -> bool:
        """Record that attempt number ``attempt`` was made; False if someone recorded it first."""
        key = self._delivery_key(msg_id)
        return bool(self.redis.eval(self._ADVANCE, 1, key, attempt, self.ttl_seconds))

    # Throttles ---------------------------------------------------------------------------
    def throttle(self, job_id: str, name: str, seconds: float) -> bool:
        """True at most once per ``seconds`` for (job, name): the caller may act now."""
        if seconds <= 0:
            return True
        millis = max(1, int(seconds * 1000))
        return bool(self.redis.set(self._throttle_key(job_id, name), "1", nx=True, px=millis))


@dataclass(frozen=True)
class IdempotencyRecord:
    fingerprint: str
    job_id: str | None  # None while the first request is still creating the job
    raw: bytes = b""  # the record as stored (to release exactly this one)

    @classmethod
    def from_json(cls, raw: bytes | str) -> IdempotencyRecord:
        data = json.loads(raw)
        return cls(data["fingerprint"], data["job_id"], raw if isinstance(raw, bytes) else raw.encode())


def _pending_idempotency(fingerprint: str, *, claim: str) -> str:
    """The record of a key whose request is still in flight; ``claim`` tells its owner."""
    return json.dumps({"fingerprint": fingerprint, "job_id": None, "claim": claim})


_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Rate-limit windows, for both scripts below: INCR KEYS[first .. first+n-1] (a new window
# expires after ``expiry`` seconds); the new counts.
_COUNT_WINDOWS = """
local function count_windows(first, n, expiry)
    local counts = {}
    for i = 1, n do
        counts[i] = redis.call('INCR', KEYS[first + i - 1])
        if counts[i] == 1 then redis.call('EXPIRE', KEYS[first + i - 1], expiry) end
    end
    return counts
end
"""

# Rate limit of a request: every key of KEYS is a window (expiring after ARGV[1] seconds).
_COUNT = _COUNT_WINDOWS + "return count_windows(1, #KEYS, ARGV[1])"

# Admission of a new job: everything POST /animations writes, in one atomic script.
# KEYS: job, open set, tenant index, events, key's active set, render queue,
#       n rate-limit windows[, idempotency key]
# ARGV: job JSON, task message, and a JSON object of the rest (see AsyncJobStore.admit): few
#       arguments, as each costs the client its own encoding.
# Returns {outcome, what the idempotency key holds (or ''), the rate-window counts}.
_ADMIT = (
    _COUNT_WINDOWS
    + """
local p = cjson.decode(ARGV[3])
local nrates = #p.limits
local counts = {}
-- One string (outcome, record and counts on three lines): a flat reply costs the client less to read.
local function reply(outcome, raw) return outcome .. '\\n' .. raw .. '\\n' .. table.concat(counts, ',') end
-- The job exists only if this very call ran before (ids are new per request): a batch retried
-- after its connection broke, the first reply lost. It is admitted already; count nothing again.
if redis.call('EXISTS', KEYS[1]) == 1 then return reply('exists', '') end
counts = count_windows(7, nrates, p.window_expiry)
for i = 1, nrates do
    if counts[i] > p.limits[i] then return reply('rate_limited', '') end
end
local idem = KEYS[7 + nrates]
if p.fingerprint ~= '' then
    local raw = redis.call('GET', idem)
    if raw then
        local record = cjson.decode(raw)
        if record.fingerprint ~= p.fingerprint then return reply('reused', raw) end
        if record.job_id ~= cjson.null then return reply('replay', raw) end
        if record.claim ~= p.claim or p.claim == '' then return reply('in_flight', raw) end
    end
end
if redis.call('SISMEMBER', KEYS[5], p.id) == 0 then
    if redis.call('SCARD', KEYS[5]) >= p.max_active then return reply('quota', '') end
    redis.call('SADD', KEYS[5], p.id)
    redis.call('EXPIRE', KEYS[5], p.ttl)
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', p.ttl)
redis.call('ZADD', KEYS[2], 'NX', p.created, p.id)
redis.call('ZADD', KEYS[3], p.created_ms, p.id)
redis.call('EXPIRE', KEYS[3], p.ttl)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 10000, '*', 'data', p.event)
redis.call('EXPIRE', KEYS[4], p.ttl)
redis.call('LPUSH', KEYS[6], ARGV[2])
if p.fingerprint ~= '' then
    redis.call('SET', idem, cjson.encode({fingerprint = p.fingerprint, job_id = p.id}), 'EX', p.idempotency_ttl)
end
return reply('created', '')
"""
)

RATE_WINDOW_SECONDS = 60


def _rate_window(key_id: str, store: JobStore, buckets: Sequence[tuple[str, int]]) -> tuple[list[str], float]:
    """The keys of the current fixed window of each bucket, and the seconds until it ends."""
    now = time.time()
    number = int(now // RATE_WINDOW_SECONDS)
    keys = [store._rate_key(key_id, bucket, number) for bucket, _ in buckets]
    return keys, max(0.001, (number + 1) * RATE_WINDOW_SECONDS - now)


def _rate_waits(counts: Sequence[int], buckets: Sequence[tuple[str, int]], wait: float) -> list[float | None]:
    return [wait if int(count) > limit else None for count, (_, limit) in zip(counts, buckets, strict=True)]


@dataclass(frozen=True)
class IdempotencyRequest:
    """An ``Idempotency-Key`` as the admission needs it: whose, which, and the body's fingerprint."""

    tenant: str
    key: str
    fingerprint: str
    ttl: int
    claim: str = ""  # set when this request claimed the key before slow work (see AsyncJobStore.claim)


@dataclass(frozen=True)
class Admission:
    """What :meth:`AsyncJobStore.admit` did.

    ``created``: stored and queued. ``rate_limited``: a rate-limit window is full (``waits``
    says which, and for how long). ``replay``: the key already made ``record.job_id``.
    ``reused``: the key was used with another body. ``in_flight``: another request holds the
    key. ``quota``: the API key has its limit of unfinished jobs. Nothing but the rate
    counters is written unless ``created``.
    """

    outcome: Literal["created", "rate_limited", "replay", "reused", "in_flight", "quota"]
    record: IdempotencyRecord | None = None
    waits: list[float | None] = field(default_factory=list)


class AsyncJobStore:
    """The API's non-blocking side of the store: admission of new jobs, rate limits, and
    blocking reads of event streams (live events, ``Prefer: wait``). Key names come from
    the :class:`JobStore` it wraps."""

    def __init__(self, client: redis.asyncio.Redis, store: JobStore) -> None:
        self.client = client
        self.store = store
        self.keys = Keys(store.prefix)
        # Concurrent requests share round trips (group commit): see stepanim.group_commit.
        self._admit = ScriptBatch(client, _ADMIT)
        self._count = ScriptBatch(client, _COUNT)

    async def get(self, job_id: str) -> Job | None:
        raw = await self.client.get(self.store._job_key(job_id))
        return None if raw is None else Job.model_validate_json(raw)

    # Admission ----------------------------------------------------------------------
    async def admit(
        self,
        job: Job,
        *,
        message: str,
        queue: str,
        max_active: int,
        idempotency: IdempotencyRequest | None,
        rates: Sequence[tuple[str, int]] = (),
    ) -> Admission:
        """Count the request in the key's ``rates`` (bucket, limit) windows, then store ``job``
        and queue its task ``message`` on ``queue``, atomically, if no window is full, the API
        key is below ``max_active`` unfinished jobs and the Idempotency-Key (if any) is free.
        A job that is stored already was admitted by this same call before (its batch was
        retried): nothing is written or counted again, and the outcome is ``created``."""
        assert job.tenant is not None and job.key_id is not None
        s = self.store
        created = job.created_at.timestamp()
        event = json.dumps({"type": "status", "status": job.status.value})
        rate_keys, wait = _rate_window(job.key_id, s, rates)
        params = {
            "id": job.id,
            "created": repr(created),  # strings: Lua would print a number with 14 digits
            "created_ms": str(_millis(created)),
            "event": event,
            "ttl": s.ttl_seconds,
            "max_active": max_active,
            "fingerprint": idempotency.fingerprint if idempotency else "",
            "idempotency_ttl": idempotency.ttl if idempotency else 0,
            "claim": idempotency.claim if idempotency else "",
            "window_expiry": RATE_WINDOW_SECONDS + 5,
            "limits": [limit for _, limit in rates],
        }
        keys = [
            s._job_key(job.id),
            s._open_key(),
            s._tenant_jobs_key(job.tenant),
            s._events_key(job.id),
            s._active_key(job.key_id),
            queue,
            *rate_keys,
            *([s._idempotency_key(idempotency.tenant, idempotency.key)] if idempotency else []),
        ]
        reply = _text(await self._admit(keys, [job.model_dump_json(), message, json.dumps(params)]))
        name, rest = reply.split("\n", 1)
        raw, counts = rest.rsplit("\n", 1)
        if name == "exists":  # admitted by an earlier run of this same call (see the script)
            return Admission("created", None, [None] * len(rates))
        record = IdempotencyRecord.from_json(raw) if raw else None
        waits = _rate_waits([int(c) for c in counts.split(",")] if counts else [], rates, wait)
        return Admission(name, record, waits)  # type: ignore[arg-type]

    async def claim(self, idempotency: IdempotencyRequest) -> tuple[IdempotencyRequest, IdempotencyRecord | None]:
        """Claim the key before slow work: (the request, now holding the claim), None; or what
        the key already holds (as :meth:`JobStore.claim_idempotency`). A claim lapses after
        ``CLAIM_SECONDS`` if its request died."""
        claim = uuid.uuid4().hex
        key = self.store._idempotency_key(idempotency.tenant, idempotency.key)
        pending = _pending_idempotency(idempotency.fingerprint, claim=claim)
        while True:
            if await self.client.set(key, pending, nx=True, ex=CLAIM_SECONDS):
                return replace(idempotency, claim=claim), None
            raw = await self.client.get(key)
            if raw is not None:
                return idempotency, IdempotencyRecord.from_json(raw)

    async def release(self, idempotency: IdempotencyRequest, record: IdempotencyRecord) -> None:
        """Forget the key while it still holds ``record`` (a claim of ours, or a job that is gone)."""
        key = self.store._idempotency_key(idempotency.tenant, idempotency.key)
        await self.client.eval(_DELETE_IF_EQUAL, 1, key, record.raw)

    async def release_claim(self, idempotency: IdempotencyRequest) -> None:
        """Give up our claim of the key (the request failed before it made a job)."""
        pending = _pending_idempotency(idempotency.fingerprint, claim=idempotency.claim)
        await self.release(idempotency, IdempotencyRecord.from_json(pending))

    async def forget_finished_active(self, key_id: str) -> bool:
        """Drop the key's active jobs that finished without releasing their place (or expired);
        True if any place was freed."""
        key = self.store._active_key(key_id)
        members = [_text(m) for m in await self.client.smembers(key)]
        raws = await self.client.mget([self.store._job_key(m) for m in members]) if members else []
        stale = [m for m, raw in zip(members, raws, strict=True) if raw is None or _is_terminal(raw)]
        if stale:
            await self.client.srem(key, *stale)
        return bool(stale)

    # Rate limit -----------------------------------------------------------------------
    async def hit_rates(self, key_id: str, buckets: Sequence[tuple[str, int]]) -> list[float | None]:
        """Count one request in the current window of each (bucket, limit), in one round trip;
        for each, the seconds to wait when over its limit, else None."""
        keys, wait = _rate_window(key_id, self.store, buckets)
        counts = await self._count(keys, [RATE_WINDOW_SECONDS + 5])
        return _rate_waits(counts, buckets, wait)

    # Events ---------------------------------------------------------------------------
    async def read_events(
        self, job_id: str, after: str, *, block_ms: int, count: int = 100
    ) -> list[tuple[str, dict[str, Any]]]:
        """Events after ``after`` (a stream id; ``0-0`` for all), waiting up to ``block_ms`` for one."""
        key = self.store._events_key(job_id)
        reply: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = await self.client.xread(  # type: ignore[assignment]
            {key: after}, count=count, block=max(1, block_ms)
        )
        events: list[tuple[str, dict[str, Any]]] = []
        for _stream, entries in reply or []:
            for eid, fields in entries:
                events.append((_text(eid), json.loads(fields[b"data"])))
        return events


def _valid_secrets(entries: list[dict[str, Any]]) -> list[tuple[str, float | None]]:
    now = time.time()
    return [(e["secret"], e["expires_at"]) for e in entries if e["expires_at"] is None or e["expires_at"] > now]


def _is_terminal(raw: bytes | str) -> bool:
    return JobStatus(json.loads(raw)["status"]).is_terminal()


def _millis(seconds: float) -> int:
    return int(seconds * 1000)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""The job store in Redis. The only module that knows Redis key names.

Keys (``<p>`` is ``settings.key_prefix``):

- ``<p>:job:<id>``         the job record as JSON
- ``<p>:job:<id>:cancel``  set when a client asked to cancel
- ``<p>:job:<id>:events``  a stream of the job's events (status changes, progress)
- ``<p>:job:<id>:lease:<stage>`` who works on the job's render or encode now, kept by a heartbeat
- ``<p>:job:<id>:requeues`` how often the reconciler re-enqueued the job after its worker was lost
- ``<p>:jobs:open``        sorted set of the jobs not yet terminal (score: creation time)
- ``<p>:metrics``          hash of counters every process adds to (``stepanim.metrics``)
- ``<p>:reconcile:lock``   held by the one reconciler that acts in a period

Celery's Redis transport keeps its own keys in the same database: one list per queue
(named after the queue) and ``unacked`` / ``unacked_index`` for delivered messages not
yet acknowledged; :meth:`JobStore.broker_messages` reads them for the reconciler.

Every write of a record is an optimistic transaction (WATCH/MULTI), so a progress
update from the worker and a cancel from the API never overwrite each other.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis

from stepanim.jobs import Job


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

    # Records ----------------------------------------------------------------------
    def create(self, job: Job) -> None:
        """Store a new job; refuses to overwrite an existing id."""
        with self.redis.pipeline() as pipe:  # MULTI: the record and its place in the open set, or neither
            pipe.set(self._job_key(job.id), job.model_dump_json(), nx=True, ex=self.ttl_seconds)
            pipe.zadd(self._open_key(), {job.id: job.created_at.timestamp()}, nx=True)
            created, _ = pipe.execute()
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
        )
        self.redis.zrem(self._open_key(), job_id)

    def update(self, job_id: str, mutate: Callable[[Job], Job | None], *, event: dict[str, Any] | None = None) -> Job:
        """Apply ``mutate`` to the current record atomically.

        ``mutate`` returns the new record, or None to leave it unchanged. ``event``
        (or a callable result) is appended to the job's event stream in the same
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
                    updated = mutate(current.model_copy(deep=True))
                    if updated is None:
                        pipe.unwatch()
                        return current
                    pipe.multi()
                    pipe.set(key, updated.model_dump_json(), keepttl=True)
                    if event is not None:
                        self._append_event(pipe, job_id, event)
                    pipe.execute()
                    return updated
                except redis.WatchError:
                    continue

    # Cancel flag ------------------------------------------------------------------
    def request_cancel(self, job_id: str) -> None:
        self.redis.set(self._cancel_key(job_id), "1", ex=self.ttl_seconds)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(self._cancel_key(job_id)))

    # Events -----------------------------------------------------------------------
    def _append_event(self, pipe: Any, job_id: str, event: dict[str, Any]) -> None:
        key = self._events_key(job_id)
        pipe.xadd(key, {"data": json.dumps(event, default=str)}, maxlen=10_000, approximate=True)
        pipe.expire(key, self.ttl_seconds)

    def events(self, job_id: str, after: str = "0-0") -> list[tuple[str, dict[str, Any]]]:
        """Events of a job after the given stream id, oldest first."""
        start = f"({after}" if after != "0-0" else "-"
        entries: list[tuple[bytes, dict[bytes, bytes]]] = self.redis.xrange(self._events_key(job_id), min=start)  # type: ignore[assignment]
        return [(_text(eid), json.loads(fields[b"data"])) for eid, fields in entries]

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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

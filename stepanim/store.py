"""Job records and their events in Redis: the store every process uses.

One record per job (JSON, ``Keys.job``), its stream of events (``stepanim.events``), its cancel
flag, the set of open jobs (for the reconciler) and the tenant's listing. Key names come
from ``stepanim.keys``. New jobs are stored only by the admission script
(``stepanim.admission``), in production and tests alike.

Every write of a record is an optimistic transaction (WATCH/MULTI), so a progress update
from the worker and a cancel from the API never overwrite each other; the events a change
makes are appended in the same transaction.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis
import redis.asyncio

from stepanim.events import JobEvent, parse_event
from stepanim.jobs import Job, JobStatus
from stepanim.keys import Keys

EVENTS_KEPT = 10_000  # per job: far more than any render's steps


class JobNotFound(Exception):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}")
        self.job_id = job_id


class JobStore:
    def __init__(self, client: redis.Redis, *, prefix: str = "stepanim", ttl_seconds: int = 7 * 24 * 3600) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self.ttl_seconds = ttl_seconds

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> JobStore:
        client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)
        return cls(client, **kwargs)

    @property
    def prefix(self) -> str:
        return self.keys.prefix

    # Records ----------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        job = self.find(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def find(self, job_id: str) -> Job | None:
        """The record of ``job_id``, or None where it is gone (expired or deleted)."""
        raw = self.redis.get(self.keys.job(job_id))
        return None if raw is None else Job.model_validate_json(raw)

    def get_many(self, job_ids: list[str]) -> list[Job | None]:
        """The records of ``job_ids`` in order (None where a record is gone)."""
        jobs: list[Job | None] = []
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start : start + 500]
            raws: list[bytes | None] = self.redis.mget([self.keys.job(i) for i in chunk])  # type: ignore[assignment]
            jobs.extend(None if raw is None else Job.model_validate_json(raw) for raw in raws)
        return jobs

    def delete(self, job_id: str) -> None:
        self.redis.delete(*self.keys.job_keys(job_id))
        self.redis.zrem(self.keys.open_jobs(), job_id)

    def update(
        self,
        job_id: str,
        mutate: Callable[[Job], Job | None],
        *,
        event: JobEvent | Sequence[JobEvent] | None = None,
    ) -> Job:
        """Apply ``mutate`` to the current record atomically.

        ``mutate`` returns the new record, or None to leave it unchanged. ``event`` (one,
        or several in order) is appended to the job's event stream in the same
        transaction, only when the record changed. Returns the record as stored.
        """
        key = self.keys.job(job_id)
        events = [] if event is None else list(event) if isinstance(event, Sequence) else [event]
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
                    self._append(pipe, job_id, events)
                    pipe.execute()
                    return updated
                except redis.WatchError:
                    continue

    # Events -----------------------------------------------------------------------
    def _append(self, pipe: Any, job_id: str, events: Sequence[JobEvent]) -> None:
        if not events:
            return
        key = self.keys.events(job_id)
        for event in events:
            pipe.xadd(key, {"data": event.model_dump_json()}, maxlen=EVENTS_KEPT, approximate=True)
        pipe.expire(key, self.ttl_seconds)

    def append(self, job_id: str, event: JobEvent) -> None:
        """Append an event that changes no record (e.g. the render's stage)."""
        with self.redis.pipeline() as pipe:
            self._append(pipe, job_id, [event])
            pipe.execute()

    def events(self, job_id: str, after: str = "0-0") -> list[tuple[str, JobEvent]]:
        """Events of a job after the given stream id, oldest first."""
        start = f"({after}" if after != "0-0" else "-"
        entries: list[tuple[bytes, dict[bytes, bytes]]] = self.redis.xrange(self.keys.events(job_id), min=start)  # type: ignore[assignment]
        return [(_text(eid), parse_event(fields[b"data"])) for eid, fields in entries]

    def wait_events(self, job_id: str, after: str, *, block_ms: int, count: int = 500) -> list[tuple[str, JobEvent]]:
        """Events after ``after`` (a stream id; ``0-0`` for all), waiting up to ``block_ms`` for one."""
        reply: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = self.redis.xread(  # type: ignore[assignment]
            {self.keys.events(job_id): after}, count=count, block=max(1, block_ms)
        )
        return [
            (_text(eid), parse_event(fields[b"data"])) for _stream, entries in reply or [] for eid, fields in entries
        ]

    # Cancel flag ------------------------------------------------------------------
    def request_cancel(self, job_id: str) -> None:
        """Set the job's cancel flag and announce it on the channel of the same name."""
        with self.redis.pipeline() as pipe:
            pipe.set(self.keys.cancel(job_id), "1", ex=self.ttl_seconds)
            pipe.publish(self.keys.cancel(job_id), "1")
            pipe.execute()

    def clear_cancel(self, job_id: str) -> None:
        """Forget a cancel that has been acted on (a canceled render whose partial frames are encoded)."""
        self.redis.delete(self.keys.cancel(job_id))

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(self.keys.cancel(job_id)))

    @contextlib.contextmanager
    def cancel_subscription(self, job_id: str) -> Iterator[Any]:
        """A pub/sub subscription that receives a message when :meth:`request_cancel` runs."""
        sub = self.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            sub.subscribe(self.keys.cancel(job_id))
            yield sub
        finally:
            sub.close()

    def public_extras(self, job_id: str) -> tuple[bool, list[dict[str, Any]]]:
        """What a client sees beside the record, in one round trip: (cancel requested, webhook deliveries)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(self.keys.cancel(job_id))
            pipe.lrange(self.keys.deliveries(job_id), 0, -1)
            canceled, raws = pipe.execute()
        return bool(canceled), [json.loads(raw) for raw in raws]

    # Open jobs (the reconciler's) ---------------------------------------------------
    def open_job_ids(self) -> list[str]:
        """Ids of the jobs not yet terminal, oldest first."""
        ids: list[bytes] = self.redis.zrange(self.keys.open_jobs(), 0, -1)  # type: ignore[assignment]
        return [_text(v) for v in ids]

    def mark_closed(self, job_id: str) -> None:
        """The job is terminal: the reconciler need not look at it again."""
        self.redis.zrem(self.keys.open_jobs(), job_id)

    def count_requeue(self, job_id: str, *, in_flight_seconds: float) -> int:
        """Count one more re-enqueue of a lost job and note that its task is on its way for
        ``in_flight_seconds`` (:meth:`resent`); returns the new count."""
        key = self.keys.requeues(job_id)
        with self.redis.pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, self.ttl_seconds)
            pipe.set(self.keys.resent(job_id), 1, px=max(1, int(in_flight_seconds * 1000)))
            count, _, _ = pipe.execute()
        return int(count)

    def resent(self, job_ids: list[str]) -> list[bool]:
        """For each job, whether the reconciler re-enqueued it within its in-flight time: its task
        may be between the queue and a worker, where the broker shows it nowhere for a moment."""
        if not job_ids:
            return []
        return [bool(n) for n in self.redis.mget([self.keys.resent(job_id) for job_id in job_ids])]

    # Uploads ----------------------------------------------------------------------
    def set_upload_owner(self, upload_id: str, tenant: str) -> None:
        """Record who stored an init image; it can be used for ``ttl_seconds`` (as long as a job lives)."""
        self.redis.set(self.keys.upload(upload_id), tenant, ex=self.ttl_seconds)

    def upload_owner(self, upload_id: str) -> str | None:
        raw = self.redis.get(self.keys.upload(upload_id))
        return None if raw is None else _text(raw)

    def throttle(self, job_id: str, name: str, seconds: float) -> bool:
        """True at most once per ``seconds`` for (job, name): the caller may act now."""
        if seconds <= 0:
            return True
        millis = max(1, int(seconds * 1000))
        return bool(self.redis.set(self.keys.throttle(job_id, name), "1", nx=True, px=millis))

    def ping(self) -> None:
        self.redis.ping()

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
        index = self.keys.tenant_jobs(tenant)
        self.redis.zremrangebyscore(index, "-inf", millis(time.time() - self.ttl_seconds))
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
            raws = self.redis.mget([self.keys.job(job_id) for _, job_id in entries]) if entries else []
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


class AsyncJobStore:
    """The API's non-blocking reads: records, and blocking reads of event streams (live events,
    ``Prefer: wait``)."""

    def __init__(self, client: redis.asyncio.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def get(self, job_id: str) -> Job | None:
        raw = await self.client.get(self.keys.job(job_id))
        return None if raw is None else Job.model_validate_json(raw)

    async def read_events(
        self, job_id: str, after: str, *, block_ms: int, count: int = 100
    ) -> list[tuple[str, JobEvent]]:
        """Events after ``after`` (a stream id; ``0-0`` for all), waiting up to ``block_ms`` for one."""
        key = self.keys.events(job_id)
        reply: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = await self.client.xread(  # type: ignore[assignment]
            {key: after}, count=count, block=max(1, block_ms)
        )
        return [
            (_text(eid), parse_event(fields[b"data"])) for _stream, entries in reply or [] for eid, fields in entries
        ]


def millis(seconds: float) -> int:
    return int(seconds * 1000)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""The job store in Redis. The only module that knows Redis key names.

Keys (``<p>`` is ``settings.key_prefix``):

- ``<p>:job:<id>``         the job record as JSON
- ``<p>:job:<id>:cancel``  set when a client asked to cancel
- ``<p>:job:<id>:events``  a stream of the job's events (status changes, progress)
- ``<p>:capabilities:encoder``  what the encoder worker's ffmpeg supports (``stepanim.capabilities``)

Every write of a record is an optimistic transaction (WATCH/MULTI), so a progress
update from the worker and a cancel from the API never overwrite each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import redis

from stepanim.capabilities import Capabilities
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

    # Records ----------------------------------------------------------------------
    def create(self, job: Job) -> None:
        """Store a new job; refuses to overwrite an existing id."""
        if not self.redis.set(self._job_key(job.id), job.model_dump_json(), nx=True, ex=self.ttl_seconds):
            raise ValueError(f"job {job.id} already exists")

    def get(self, job_id: str) -> Job:
        raw = self.redis.get(self._job_key(job_id))
        if raw is None:
            raise JobNotFound(job_id)
        return Job.model_validate_json(raw)

    def delete(self, job_id: str) -> None:
        self.redis.delete(self._job_key(job_id), self._cancel_key(job_id), self._events_key(job_id))

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

    # Encoder capabilities -----------------------------------------------------------
    def _capabilities_key(self) -> str:
        return f"{self.prefix}:capabilities:encoder"

    def set_capabilities(self, caps: Capabilities) -> None:
        """Written by the encoder worker when it starts; no expiry (the next start overwrites it)."""
        self.redis.set(self._capabilities_key(), caps.model_dump_json())

    def get_capabilities(self) -> Capabilities | None:
        raw = self.redis.get(self._capabilities_key())
        return None if raw is None else Capabilities.model_validate_json(raw)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""Webhook state in Redis: each API key's signing secrets, and each message's delivery attempts.

What a webhook says and how it is signed and sent is ``stepanim.webhooks``; when to try again
is ``notify/tasks.py``. Key names come from ``stepanim.keys``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis

from stepanim.keys import Keys


class WebhookStore:
    def __init__(self, client: redis.Redis, keys: Keys, *, ttl_seconds: int) -> None:
        self.redis = client
        self.keys = keys
        self.ttl_seconds = ttl_seconds
        self._advance_script = client.register_script(_ADVANCE)

    # Webhook secrets ----------------------------------------------------------------------
    def secrets(self, key_id: str, *, initial: Callable[[], str]) -> list[tuple[str, float | None]]:
        """The key's valid secrets, newest first, with their expiry (None: current).

        The first read stores ``initial()`` (set-if-absent, so every process agrees).
        """
        key = self.keys.webhook_secrets(key_id)
        raw = self.redis.get(key)
        if raw is None:
            self.redis.set(key, json.dumps([{"secret": initial(), "expires_at": None}]), nx=True)
            raw = self.redis.get(key)
        return _valid_secrets(json.loads(raw or "[]"))

    def rotate_secret(
        self, key_id: str, *, new_secret: str, grace_seconds: int, initial: Callable[[], str]
    ) -> list[tuple[str, float | None]]:
        """Make ``new_secret`` current; the previous one stays valid for ``grace_seconds``."""
        self.secrets(key_id, initial=initial)
        key = self.keys.webhook_secrets(key_id)
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
    def record(self, job_id: str, attempt: dict[str, Any], *, keep: int = 100) -> None:
        """Append one delivery attempt to the job's list (the newest ``keep`` are kept)."""
        key = self.keys.deliveries(job_id)
        with self.redis.pipeline() as pipe:
            pipe.rpush(key, json.dumps(attempt, default=str))
            pipe.ltrim(key, -keep, -1)
            pipe.expire(key, self.ttl_seconds)
            pipe.execute()

    def deliveries(self, job_id: str) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.redis.lrange(self.keys.deliveries(job_id), 0, -1)]

    def attempts(self, msg_id: str) -> int:
        """Attempts already made of the message with this webhook-id."""
        raw = self.redis.get(self.keys.delivery(msg_id))
        return int(raw) if raw is not None else 0

    def advance(self, msg_id: str, attempt: int) -> bool:
        """Record that attempt number ``attempt`` was made; False if someone recorded it first."""
        key = self.keys.delivery(msg_id)
        return bool(self._advance_script(keys=[key], args=[attempt, self.ttl_seconds]))


_ADVANCE = """
local done = tonumber(redis.call('GET', KEYS[1]) or '0')
if done == tonumber(ARGV[1]) - 1 then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
    return 1
end
return 0
"""


def _valid_secrets(entries: list[dict[str, Any]]) -> list[tuple[str, float | None]]:
    now = time.time()
    return [(e["secret"], e["expires_at"]) for e in entries if e["expires_at"] is None or e["expires_at"] > now]

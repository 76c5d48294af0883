"""What waits in Celery's broker, read from Redis for the reconciler and /metrics.

Celery's Redis transport (kombu) keeps one list per queue, named after the queue (plus one per
priority step), and ``unacked`` / ``unacked_index`` for messages delivered to a worker and not
yet acknowledged. This module reads that layout and nothing else does. It reads the broker's
Redis (``settings.broker_url``); with a broker that is not Redis these reads find nothing, and
the reconciler then relies on leases and on a job's age alone (docs/scaling.md).
"""

from __future__ import annotations

import base64
import json
import time

import redis


class Broker:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

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


def message_job(raw: bytes | str) -> tuple[str, str] | None:
    """``(task name, job id)`` of a Celery message as kombu stores it in Redis, else None.

    Waiting messages are the message itself; unacknowledged ones are
    ``[message, exchange, routing_key]``. The body is ``[args, kwargs, embed]``, base64.
    """
    try:
        message = json.loads(raw)
        if isinstance(message, list):
            message = message[0]
        task = message["headers"]["task"]
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        if isinstance(task, str) and args and isinstance(args[0], str):
            return task, args[0]
    except (ValueError, KeyError, IndexError, TypeError):
        pass
    return None

"""What the workers publish for the API: the encoders' ffmpeg and the render workers' models.

The API never runs ffmpeg or loads a model; it learns what the workers can do from Redis.
Each value is published with an expiry a little longer than its refresh period by a
:class:`Publisher` thread in the worker's main process: once per period, and within a
second whenever the key is missing (Redis restarted without persistence, a flush, the
first connection). So nothing published is lost for good, and what a stopped worker
published ages out instead of being advertised for ever.

Every render worker publishes its own models under its own key (workers may hold different
models), and beside them, in the same transaction and with the same expiry, its adapters
(LoRAs and embeddings, ``stepanim.adapters``); :meth:`Published.models` and
:meth:`Published.adapters` are their unions. Encoders share one key: they run the same
image (docs/scaling.md), and the newest to publish wins.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence

import redis
import redis.asyncio

from stepanim.adapters import AdapterInfo
from stepanim.capabilities import Capabilities
from stepanim.keys import Keys
from stepanim.model_catalog import ModelInfo

log = logging.getLogger(__name__)


def expiry(period: float) -> int:
    """Seconds a published value lives: its refresh period plus a margin for a slow refresh."""
    return int(period * 1.5 + 5)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _merge(raws: Sequence[bytes | str | None]) -> list[ModelInfo]:
    """Every live worker's models, each name once (the first worker to list it wins), by name."""
    models: dict[str, ModelInfo] = {}
    for raw in raws:
        for data in json.loads(raw) if raw is not None else []:
            info = ModelInfo.model_validate(data)
            models.setdefault(info.name, info)
    return [models[name] for name in sorted(models)]


def _merge_adapters(raws: Sequence[bytes | str | None]) -> list[AdapterInfo]:
    """Every live worker's adapters, each (kind, name) once (the first worker to list it wins), LoRAs first."""
    adapters: dict[tuple[str, str], AdapterInfo] = {}
    for raw in raws:
        for data in json.loads(raw) if raw is not None else []:
            info = AdapterInfo.model_validate(data)
            adapters.setdefault((info.kind, info.name), info)
    return [adapters[key] for key in sorted(adapters, key=lambda k: (k[0] != "lora", k[1]))]


class Published:
    """Reading and writing the published values (the sync side: workers and the API's threads)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def set_encoder(self, caps: Capabilities, *, ttl: int) -> None:
        self.redis.set(self.keys.published_encoder(), caps.model_dump_json(), ex=ttl)

    def encoder(self) -> Capabilities | None:
        raw = self.redis.get(self.keys.published_encoder())
        return None if raw is None else Capabilities.model_validate_json(raw)

    def set_models(
        self, worker: str, models: list[ModelInfo], *, ttl: int, adapters: list[AdapterInfo] | None = None
    ) -> None:
        """Publish one render worker's models and its adapters (none when not given), together."""
        data = json.dumps([m.model_dump(mode="json") for m in models])
        adapter_data = json.dumps([a.model_dump(mode="json") for a in adapters or []])
        with self.redis.pipeline() as pipe:
            pipe.set(self.keys.published_models(worker), data, ex=ttl)
            pipe.set(self.keys.published_adapters(worker), adapter_data, ex=ttl)
            pipe.sadd(self.keys.published_workers(), worker)
            pipe.execute()

    def withdraw_models(self, worker: str) -> None:
        """A worker stops: its models and adapters are no longer offered."""
        with self.redis.pipeline() as pipe:
            pipe.delete(self.keys.published_models(worker), self.keys.published_adapters(worker))
            pipe.srem(self.keys.published_workers(), worker)
            pipe.execute()

    def has_models(self, worker: str) -> bool:
        return bool(self.redis.exists(self.keys.published_models(worker)))

    def has_encoder(self) -> bool:
        return bool(self.redis.exists(self.keys.published_encoder()))

    def models(self) -> list[ModelInfo]:
        """The models of every render worker that published lately (none until one has)."""
        workers = sorted(_text(w) for w in self.redis.smembers(self.keys.published_workers()))
        if not workers:
            return []
        raws: list[bytes | None] = self.redis.mget([self.keys.published_models(w) for w in workers])  # type: ignore[assignment]
        gone = [w for w, raw in zip(workers, raws, strict=True) if raw is None]
        if gone:
            self.redis.srem(self.keys.published_workers(), *gone)
        return _merge(raws)

    def adapters(self) -> list[AdapterInfo]:
        """The LoRAs and embeddings of every render worker that published lately."""
        workers = sorted(_text(w) for w in self.redis.smembers(self.keys.published_workers()))
        if not workers:
            return []
        raws: list[bytes | None] = self.redis.mget([self.keys.published_adapters(w) for w in workers])  # type: ignore[assignment]
        return _merge_adapters(raws)


async def encoder_async(client: redis.asyncio.Redis, keys: Keys) -> Capabilities | None:
    """:meth:`Published.encoder` on the API's event loop."""
    raw = await client.get(keys.published_encoder())
    return None if raw is None else Capabilities.model_validate_json(raw)


async def models_async(client: redis.asyncio.Redis, keys: Keys) -> list[ModelInfo]:
    """:meth:`Published.models` on the API's event loop (expired workers are left for the sync side)."""
    workers = sorted(_text(w) for w in await client.smembers(keys.published_workers()))
    if not workers:
        return []
    return _merge(await client.mget([keys.published_models(w) for w in workers]))


async def adapters_async(client: redis.asyncio.Redis, keys: Keys) -> list[AdapterInfo]:
    """:meth:`Published.adapters` on the API's event loop."""
    workers = sorted(_text(w) for w in await client.smembers(keys.published_workers()))
    if not workers:
        return []
    return _merge_adapters(await client.mget([keys.published_adapters(w) for w in workers]))


class Publisher:
    """A daemon thread that keeps one published value fresh: ``publish()`` every ``period``
    seconds, and within ``check`` seconds of ``present()`` turning false. Errors (Redis away)
    are logged and retried at the next check."""

    def __init__(
        self,
        what: str,
        publish: Callable[[], None],
        present: Callable[[], bool],
        *,
        period: float,
        check: float = 1.0,
    ) -> None:
        self.what = what
        self.publish = publish
        self.present = present
        self.period = period
        self.check = check
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"publish-{what}", daemon=True)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        published_at: float | None = None
        failing = False
        while not self._stop.is_set():
            try:
                due = published_at is None or time.monotonic() - published_at >= self.period
                if due or not self.present():
                    if not due:
                        log.warning("%s: no longer published (Redis restarted?); publishing again", self.what)
                    self.publish()
                    published_at = time.monotonic()
                if failing:
                    log.info("%s: Redis is back", self.what)
                failing = False
            except Exception as e:  # Redis away: keep trying, say so once
                if not failing:
                    log.warning("%s: could not publish: %s; retrying", self.what, e)
                failing = True
            self._stop.wait(self.check)

"""The handles every process needs, built once from settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import redis
from celery import Celery

from stepanim.broker import Broker
from stepanim.keys import Keys
from stepanim.leases import Leases
from stepanim.published import Published
from stepanim.queues import make_celery
from stepanim.settings import Settings
from stepanim.storage import Storage, make_storage
from stepanim.store import JobStore
from stepanim.webhook_store import WebhookStore


@dataclass
class Services:
    settings: Settings
    store: JobStore
    storage: Storage
    celery: Celery

    @property
    def keys(self) -> Keys:
        return self.store.keys

    @property
    def redis(self) -> redis.Redis:
        return self.store.redis

    @cached_property
    def leases(self) -> Leases:
        return Leases(self.redis, self.keys)

    @cached_property
    def webhooks(self) -> WebhookStore:
        return WebhookStore(self.redis, self.keys, ttl_seconds=self.settings.job_ttl_seconds)

    @cached_property
    def published(self) -> Published:
        """What the workers published (encoder capabilities, models)."""
        return Published(self.redis, self.keys)

    @cached_property
    def broker(self) -> Broker | None:
        """Celery's broker lists, when the broker is Redis (``stepanim.broker``)."""
        url = self.settings.celery_broker_url
        if not url.startswith(("redis://", "rediss://", "unix://")):
            return None
        return Broker(self.redis if url == self.settings.redis_url else redis.Redis.from_url(url))

    @classmethod
    def from_settings(cls, settings: Settings, *, celery: Celery | None = None) -> Services:
        return cls(
            settings=settings,
            store=JobStore.from_url(
                settings.redis_url, prefix=settings.key_prefix, ttl_seconds=settings.job_ttl_seconds
            ),
            storage=make_storage(settings),
            celery=celery or make_celery(settings),
        )

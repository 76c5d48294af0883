"""The handles every process needs, built once from settings."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

from stepanim.keys import Keys
from stepanim.published import Published
from stepanim.queues import make_celery
from stepanim.settings import Settings
from stepanim.storage import Storage, make_storage
from stepanim.store import JobStore


@dataclass
class Services:
    settings: Settings
    store: JobStore
    storage: Storage
    celery: Celery

    @property
    def published(self) -> Published:
        """What the workers published (encoder capabilities, models), through the store's connection."""
        return Published(self.store.redis, Keys(self.store.prefix))

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

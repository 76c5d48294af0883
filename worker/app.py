"""Celery app of the render worker: ``celery -A worker.app worker -Q render -c 1``."""

from stepanim import worker_hooks
from stepanim.queues import make_celery
from stepanim.settings import get_settings

app = make_celery(get_settings(), include=["worker.tasks"])
worker_hooks.install(get_settings(), service="worker")

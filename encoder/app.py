"""Celery app of the encoder worker: ``celery -A encoder.app worker -Q encode``."""

from stepanim import worker_hooks
from stepanim.queues import make_celery
from stepanim.settings import get_settings

app = make_celery(get_settings(), include=["encoder.tasks"])
worker_hooks.install(get_settings(), service="encoder")

"""Celery app of the encoder worker: ``celery -A encoder.app worker -Q encode``."""

from stepanim.queues import make_celery
from stepanim.settings import get_settings

app = make_celery(get_settings(), include=["encoder.tasks"])

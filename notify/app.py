"""Celery app of the webhook sender: ``celery -A notify.app worker -Q notify``."""

from stepanim import worker_hooks
from stepanim.queues import make_celery
from stepanim.settings import get_settings

app = make_celery(get_settings(), include=["notify.tasks"])
worker_hooks.install(get_settings(), service="notify")

"""What every worker process (render, encode, notify) installs into Celery, and only they.

Called by each ``*/app.py`` next to ``make_celery``: JSON logs with job ids, shared metrics,
job leases with a bounded warm shutdown, and pool processes that end with their worker
(``stepanim.processes``). The API process makes a Celery app only to send tasks and
installs none of this.
"""

from __future__ import annotations

from typing import Any

from stepanim import logs, metrics, reconcile
from stepanim.processes import die_with_parent
from stepanim.settings import Settings


def install(settings: Settings, *, service: str) -> None:
    from celery.signals import worker_process_init

    logs.install_celery_hooks(service=service, level=settings.log_level, fmt=settings.log_format)
    metrics.install_celery_hooks(settings)
    reconcile.install_celery_hooks(shutdown_timeout=settings.shutdown_timeout_seconds)

    def on_process_init(**_: Any) -> None:
        # A pool process whose worker was SIGKILLed must not go on (holding a job's lease, a GPU).
        die_with_parent()

    worker_process_init.connect(on_process_init, weak=False, dispatch_uid="stepanim.worker_hooks.process_init")

"""What every worker process (render, encode, notify) installs into Celery, and only they.

Called by each ``*/app.py`` next to ``make_celery``: JSON logs with job ids, shared metrics,
job leases (``stepanim.leases``), a bounded warm shutdown, and pool processes that end with
their worker (``stepanim.processes``). The API process makes a Celery app only to send
tasks and installs none of this.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from stepanim import leases, logs, metrics
from stepanim.processes import die_with_parent
from stepanim.settings import Settings

log = logging.getLogger(__name__)


def install(settings: Settings, *, service: str) -> None:
    from celery.signals import worker_process_init, worker_shutting_down

    logs.install_celery_hooks(service=service, level=settings.log_level, fmt=settings.log_format)
    metrics.install_celery_hooks(settings)
    leases.install_celery_hooks()

    def on_process_init(**_: Any) -> None:
        # A pool process whose worker was SIGKILLed must not go on (holding a job's lease, a GPU).
        die_with_parent()

    def on_shutting_down(*, how: str | None = None, **_: Any) -> None:
        bound_warm_shutdown(how, settings.shutdown_timeout_seconds)

    worker_process_init.connect(on_process_init, weak=False, dispatch_uid="stepanim.worker_hooks.process_init")
    worker_shutting_down.connect(on_shutting_down, weak=False, dispatch_uid="stepanim.worker_hooks.shutdown")


def bound_warm_shutdown(how: str | None, timeout: float) -> None:
    """SIGTERM makes a Celery worker stop taking tasks and wait for the running ones (warm
    shutdown). If they still run ``timeout`` seconds later, turn it into a cold shutdown
    (SIGQUIT to itself): the running task is terminated and its message requeued; the job's
    lease runs out and the reconciler hands it to another worker."""
    if how != "Warm" or timeout <= 0:
        return
    log.warning("warm shutdown: running tasks get %.0fs to finish, then go back to the queue", timeout)
    timer = threading.Timer(timeout, _hand_back)
    timer.daemon = True
    timer.start()


def _hand_back() -> None:
    log.warning("shutdown timeout: handing the running tasks back (cold shutdown)")
    os.kill(os.getpid(), signal.SIGQUIT)

"""Logging for every process: one JSON object per line, carrying the job's id.

:func:`setup_logging` is called once per process: by ``api.app.create_app``, by each
Celery worker (through Celery's ``setup_logging`` signal, hooked in by ``stepanim.worker_hooks``)
and by the reconciler. Lines look like::

    {"ts": "2025-01-01T12:00:00.123Z", "level": "info", "service": "worker",
     "logger": "stepanim.logs", "message": "task done", "job_id": "4f0c...", "task": "render", ...}

``job_id`` comes from the record's ``extra`` or from :data:`job_id_var`, which the API
sets per request and the Celery hooks set around each task, so a search for one id
shows the request, the render, the encode and the webhook.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

job_id_var: ContextVar[str | None] = ContextVar("stepanim_job_id", default=None)

# Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

# Loggers that configure their own handlers; their lines go through the root handler instead.
_ADOPTED = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task", "celery.redirected")

_HANDLER_NAME = "stepanim"


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None) or job_id_var.get()
        if job_id:
            data["job_id"] = job_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in data and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class _JobIdFilter(logging.Filter):
    """For the text format: show the job id too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            record.job_id = job_id_var.get() or "-"
        return True


def setup_logging(*, service: str, level: str = "INFO", fmt: Literal["json", "text"] = "json") -> None:
    """Send every logger's records to one stderr handler in ``fmt``. Safe to call again."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.addFilter(_JobIdFilter())
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s [%(job_id)s] %(message)s")
        )
    root.addHandler(handler)
    root.setLevel(level)
    for name in _ADOPTED:
        adopted = logging.getLogger(name)
        adopted.handlers.clear()
        adopted.propagate = True


# Celery hooks -------------------------------------------------------------------------
_task_started: dict[str, float] = {}


def install_celery_hooks(*, service: str, level: str, fmt: Literal["json", "text"]) -> None:
    """Configure the worker's logging ourselves, and tag each task's lines with its job id.

    Every task of this service takes the job id as its first argument.
    """
    from celery.signals import setup_logging as celery_setup_logging
    from celery.signals import task_postrun, task_prerun

    def on_setup(**_: Any) -> None:
        setup_logging(service=service, level=level, fmt=fmt)

    def on_prerun(*, task_id: str | None = None, task: Any = None, args: Any = None, **_: Any) -> None:
        job_id = args[0] if args and isinstance(args[0], str) else None
        job_id_var.set(job_id)
        _task_started[task_id or ""] = time.monotonic()
        logging.getLogger(__name__).info("task started", extra={"task": getattr(task, "name", None)})

    def on_postrun(*, task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
        started = _task_started.pop(task_id or "", None)
        seconds = round(time.monotonic() - started, 3) if started is not None else None
        logging.getLogger(__name__).info(
            "task ended", extra={"task": getattr(task, "name", None), "state": state, "seconds": seconds}
        )
        job_id_var.set(None)

    celery_setup_logging.connect(on_setup, weak=False, dispatch_uid="stepanim.logs.setup")
    task_prerun.connect(on_prerun, weak=False, dispatch_uid="stepanim.logs.prerun")
    task_postrun.connect(on_postrun, weak=False, dispatch_uid="stepanim.logs.postrun")

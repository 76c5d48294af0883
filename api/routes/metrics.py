"""/metrics (Prometheus) and the API's part of the JSON logs: one access line per request,
carrying the job id of the request (from the path, or from the `Location` of a new job)."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import ServicesDep
from stepanim import metrics
from stepanim.logs import job_id_var

router = APIRouter(tags=["operations"])
access_log = logging.getLogger("stepanim.access")

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
_JOB_IN_PATH = re.compile(r"/animations/([0-9a-f]{32})(?:/|$)")


@router.get("/metrics", response_class=Response, responses={200: {"content": {PROMETHEUS_TEXT: {}}}})
def get_metrics(*, svc: ServicesDep) -> Response:
    """Service metrics in the Prometheus text format, for every process together: jobs by
    status, queue depths, render seconds per step, encode seconds, task retries, storage
    errors, webhook failures, reconciler re-enqueues."""
    return Response(metrics.exposition(svc.store, svc.broker), media_type=PROMETHEUS_TEXT)


class AccessLog:
    """Pure ASGI middleware (no per-request task or body copy): sets ``job_id_var`` for the
    request's own log lines and writes one access line when the response starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        found = _JOB_IN_PATH.search(path)
        token = job_id_var.set(found.group(1) if found else None)
        started = time.perf_counter()

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start" and access_log.isEnabledFor(logging.INFO):
                extra: dict[str, Any] = {
                    "method": scope["method"],
                    "path": path,
                    "status": message["status"],
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                }
                if not found:
                    for name, value in message.get("headers", ()):
                        if name == b"location" and (created := _JOB_IN_PATH.search(value.decode("latin-1"))):
                            extra["job_id"] = created.group(1)
                if path not in ("/healthz", "/metrics"):
                    access_log.info("%s %s %d", scope["method"], path, message["status"], extra=extra)
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            job_id_var.reset(token)


def install(app: FastAPI) -> None:
    """Add /metrics and the access log to the app."""
    app.include_router(router)
    app.add_middleware(AccessLog)

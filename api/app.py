"""The FastAPI application factory. Imports neither torch nor diffusers."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

import redis.asyncio
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from api import docs, errors, openapi, web
from api.dispatch import TaskSender
from api.limits import BodySizeLimit
from api.routes import animations, capabilities, events, files, frames, grids, health, renditions, uploads, webhooks
from api.routes import metrics as metrics_routes
from stepanim.admission import Admission
from stepanim.logs import setup_logging
from stepanim.queues import enqueue_renders
from stepanim.services import Services
from stepanim.settings import Settings, get_settings
from stepanim.store import AsyncJobStore

DESCRIPTION = """\
Turns the denoising steps of a diffusion run into a short video.

Post a job to `/animations` with an API key (`Authorization: Bearer ...`); follow it
with `GET /animations/{id}`, its server-sent events (`/animations/{id}/events`) or a
signed webhook; download the video from its signed URL. Jobs belong to the key's
tenant. Errors share one shape: `{"error": {"code", "message", "details"}}`; 429
answers carry `Retry-After`.
"""


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Blocking reads (live events, Prefer: wait) wait up to 15 s: the socket timeout is above that.
        client = redis.asyncio.Redis.from_url(
            settings.redis_url, socket_connect_timeout=5, socket_timeout=60, health_check_interval=30
        )
        keys = app.state.services.keys
        app.state.async_store = AsyncJobStore(client, keys)
        app.state.admission = Admission(client, keys, ttl=settings.job_ttl_seconds)
        # What exists now (modules, the app, settings) lives as long as the process: keep it out
        # of the collector's full passes, which would otherwise walk all of it, every time, in
        # the middle of a request (tens of milliseconds on a small machine).
        gc.freeze()
        celery = app.state.services.celery
        app.state.task_sender = sender = TaskSender(lambda job_ids: enqueue_renders(celery, job_ids))
        try:
            yield
        finally:
            await run_in_threadpool(sender.close)
            await client.aclose()

    app = FastAPI(
        title="Steps Animation Service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served offline by api.docs
        redoc_url=None,
    )
    app.state.services = services or Services.from_settings(settings)
    errors.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes, max_upload_bytes=settings.max_upload_bytes)
    app.include_router(animations.router)
    app.include_router(events.router)
    app.include_router(frames.router)
    app.include_router(webhooks.router)
    app.include_router(health.router)
    app.include_router(files.router)
    app.include_router(uploads.router)
    app.include_router(renditions.router)
    app.include_router(grids.router)
    app.include_router(capabilities.router)
    metrics_routes.install(app)  # /metrics and the JSON access log
    webhooks.document_webhooks(app)
    openapi.install(app)
    web.install(app)  # the page at / (not in the OpenAPI document)
    docs.install(app)  # /docs, offline
    setup_logging(service="api", level=settings.log_level, fmt=settings.log_format)
    return app

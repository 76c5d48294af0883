"""The FastAPI application factory. Imports neither torch nor diffusers."""

from __future__ import annotations

from fastapi import FastAPI

from api import errors
from api.routes import animations, files, health, uploads
from api.routes import metrics as metrics_routes
from stepanim.logs import setup_logging
from stepanim.services import Services
from stepanim.settings import Settings, get_settings

DESCRIPTION = """\
Turns the denoising steps of a diffusion run into a short video.

Post a job to `/animations`; poll `/animations/{id}` until it is `succeeded`, then
download the video from its signed URL. Errors share one shape:
`{"error": {"code", "message", "details"}}`.
"""


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="Steps Animation Service", version="0.1.0", description=DESCRIPTION)
    app.state.services = services or Services.from_settings(settings)
    errors.install(app)
    app.include_router(animations.router)
    app.include_router(health.router)
    app.include_router(files.router)
    app.include_router(uploads.router)
    metrics_routes.install(app)  # /metrics and the JSON access log
    setup_logging(service="api", level=settings.log_level, fmt=settings.log_format)
    return app

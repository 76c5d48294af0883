"""The FastAPI application factory. Imports neither torch nor diffusers."""

from __future__ import annotations

import logging

from fastapi import Depends, FastAPI

from api import errors
from api.routes import animations, capabilities, files, health, renditions
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
    app.include_router(animations.router, dependencies=[Depends(capabilities.check_create_body)])
    app.include_router(health.router)
    app.include_router(files.router)
    app.include_router(renditions.router)
    app.include_router(capabilities.router)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return app

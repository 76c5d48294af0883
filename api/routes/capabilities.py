"""/capabilities: what this server can make; and refusing what its encoder cannot.

The encoder worker publishes what its ffmpeg supports when it starts (see
``stepanim.capabilities``); this process only reads it from Redis.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError

from api.deps import ServicesDep
from api.errors import ApiError, ErrorResponse
from stepanim.capabilities import Capabilities, unsupported
from stepanim.jobs import SCHEDULERS, Codec, Interpolation, VideoOptions
from stepanim.model_catalog import ModelInfo
from stepanim.services import Services

router = APIRouter(tags=["capabilities"])


class CapabilitiesPublic(BaseModel):
    codecs: list[Codec] = Field(description="Codecs the encoder's ffmpeg can make.")
    interpolations: list[Interpolation] = Field(description="Interpolation modes the encoder's ffmpeg supports.")
    schedulers: list[str] = Field(
        description="Sampler names accepted by POST /animations.", examples=[["euler_a", "ddim", "dpmpp_2m"]]
    )
    default_model: str = Field(
        description="The model a job renders with when its request names none (`model` omitted).",
        examples=["tiny-sd"],
    )
    models: list[ModelInfo] = Field(
        description="The render workers' local models, each with the request defaults that suit it (empty until a "
        "render worker has started; hub ids and paths may be used as well)."
    )
    missing: dict[str, str] = Field(
        description="What is unavailable here, and what ffmpeg lacks for it.",
        examples=[{"av1": "encoder libaom-av1"}],
    )
    ffmpeg_version: str = Field(description="The encoder's ffmpeg, as it reports itself.", examples=["5.1.9"])
    probed_at: str = Field(
        description="When the encoder worker probed its ffmpeg (once, at start-up).",
        examples=["2026-01-02T03:04:05Z"],
    )


CACHE_SECONDS = 5.0  # encoders publish only when they start: a few seconds of staleness are harmless


def current(request: Request, svc: Services) -> Capabilities | None:
    """The encoder's capabilities, read from Redis at most every ``CACHE_SECONDS`` per API process
    (every time while no encoder has reported yet)."""
    cached: tuple[float, Capabilities] | None = getattr(request.app.state, "capabilities", None)
    now = time.monotonic()
    if cached is not None and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    caps = svc.store.get_capabilities()
    if caps is not None:
        request.app.state.capabilities = (now, caps)
    return caps


def require(caps: Capabilities | None, options: VideoOptions, field: str) -> None:
    """Refuse (422) what the encoder cannot make; accept when no encoder has reported yet."""
    if caps is None:
        return
    message = unsupported(options, caps, field=field)
    if message is not None:
        raise ApiError(422, "unsupported", message)


@router.get(
    "/capabilities",
    response_model=CapabilitiesPublic,
    responses={503: {"model": ErrorResponse, "description": "No encoder worker has reported yet."}},
)
def get_capabilities(*, request: Request, svc: ServicesDep) -> CapabilitiesPublic:
    """Codecs and interpolation modes the installed ffmpeg really supports, the scheduler names,
    the model a job gets when it names none, and the render workers' local models.

    The encoder worker probes its own ffmpeg once when it starts and publishes the
    result; requests for anything missing are refused with 422.
    """
    caps = current(request, svc)
    if caps is None:
        raise ApiError(
            503,
            "encoder_unavailable",
            "no encoder worker has reported its capabilities yet; try again",
            headers={"Retry-After": "5"},
        )
    return CapabilitiesPublic(
        codecs=caps.codecs,
        interpolations=caps.interpolations,
        schedulers=list(SCHEDULERS),
        default_model=svc.settings.default_model,
        models=svc.store.get_model_catalog(),
        missing=caps.missing,
        ffmpeg_version=caps.ffmpeg_version,
        probed_at=caps.probed_at.isoformat(),
    )


def _video_options(raw: Any) -> VideoOptions | None:
    if not isinstance(raw, dict):
        return None
    fields = {k: raw[k] for k in ("codec", "interpolation") if k in raw}
    try:
        return VideoOptions.model_validate(fields)
    except ValidationError:
        return None  # the request's own validation names the bad value


async def check_create_body(request: Request, svc: ServicesDep) -> None:
    """Dependency of POST /animations: a codec or interpolation the encoder lacks is a 422, not a failed job.

    It reads the JSON body before the route validates it and looks only at
    ``animation`` and ``renditions``; anything malformed is left to validation.
    """
    if request.method != "POST":
        return
    caps = current(request, svc)
    if caps is None:
        return
    try:
        body = json.loads(await request.body())
    except ValueError:
        return
    if not isinstance(body, dict):
        return
    checks = [("animation", body.get("animation", {}))]
    renditions = body.get("renditions")
    if isinstance(renditions, list):
        checks += [(f"renditions.{i}", r) for i, r in enumerate(renditions)]
    for field, raw in checks:
        options = _video_options(raw)
        if options is not None:
            require(caps, options, field)

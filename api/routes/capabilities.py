"""/capabilities: what this server can make; and refusing what its encoder cannot.

The encoder worker publishes what its ffmpeg supports when it starts (see
``stepanim.capabilities``); this process only reads it from Redis.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from api.deps import ServicesDep
from api.errors import ApiError, ErrorResponse
from stepanim import published
from stepanim.adapters import AdapterInfo
from stepanim.capabilities import Capabilities, unsupported
from stepanim.model_catalog import ModelInfo
from stepanim.request import AnimationCreate, Codec, Interpolation, VideoOptions
from stepanim.samplers import SAMPLER_IDS
from stepanim.services import Services
from stepanim.store import AsyncJobStore

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
    adapters: list[AdapterInfo] = Field(
        default_factory=list,
        description="The render workers' LoRAs and textual-inversion embeddings (`loras` and `embeddings` of POST "
        "/animations), each with the models and families it fits.",
    )
    missing: dict[str, str] = Field(
        description="What is unavailable here, and what ffmpeg lacks for it.",
        examples=[{"av1": "encoder libaom-av1"}],
    )
    ffmpeg_version: str = Field(description="The encoder's ffmpeg, as it reports itself.", examples=["5.1.9"])
    probed_at: str = Field(
        description="When the encoder worker probed its ffmpeg (once, at its start; it re-publishes the result "
        "periodically).",
        examples=["2026-01-02T03:04:05Z"],
    )


CACHE_SECONDS = 5.0  # encoders re-publish every publish_interval_seconds: a few seconds of staleness are harmless


def _cached(request: Request) -> Capabilities | None:
    """What this API process read less than ``CACHE_SECONDS`` ago, if anything."""
    cached: tuple[float, Capabilities] | None = getattr(request.app.state, "capabilities", None)
    if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    return None


def _remember(request: Request, caps: Capabilities | None) -> Capabilities | None:
    if caps is not None:  # while no encoder has reported, read every time
        request.app.state.capabilities = (time.monotonic(), caps)
    return caps


def current(request: Request, svc: Services) -> Capabilities | None:
    """The encoder's capabilities, read from Redis at most every ``CACHE_SECONDS`` per API process."""
    return _cached(request) or _remember(request, svc.published.encoder())


async def current_async(request: Request, store: AsyncJobStore) -> Capabilities | None:
    """:func:`current`, for the event loop."""
    return _cached(request) or _remember(request, await published.encoder_async(store.client, store.keys))


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
    the model a job gets when it names none, the render workers' local models, and their LoRAs
    and embeddings with the models each fits.

    The encoder worker probes its own ffmpeg when it starts and keeps the result
    published (also across a Redis restart); requests for anything missing are refused
    with 422.
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
        schedulers=list(SAMPLER_IDS),
        default_model=svc.settings.default_model,
        models=svc.published.models(),
        adapters=svc.published.adapters(),
        missing=caps.missing,
        ffmpeg_version=caps.ffmpeg_version,
        probed_at=caps.probed_at.isoformat(),
    )


def check_create_body(caps: Capabilities | None, body: AnimationCreate) -> None:
    """POST /animations: a codec or interpolation the encoder lacks is a 422, not a failed job."""
    require(caps, body.animation, "animation")
    for i, rendition in enumerate(body.renditions):
        require(caps, rendition, f"renditions.{i}")

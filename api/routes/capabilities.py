"""/capabilities: what this server can make; and refusing what its encoder cannot.

The encoder workers publish what their ffmpeg supports and the render workers their models
(``stepanim.published``); this process only reads them from Redis, at most every few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from api.deps import ServicesDep
from api.errors import ApiError, ErrorResponse
from stepanim import published
from stepanim.adapters import AdapterInfo
from stepanim.capabilities import Capabilities, unsupported
from stepanim.model_catalog import ModelInfo
from stepanim.request import MAX_FRAME_SIDE, MAX_SIDE, MAX_UPSCALE, MIN_SIDE, AnimationCreate
from stepanim.samplers import REGISTRY, SAMPLER_IDS, SCHEDULE_LABELS
from stepanim.services import Services
from stepanim.settings import Settings
from stepanim.store import AsyncJobStore
from stepanim.video_options import MAX_FPS, MAX_HOLD_LAST, MAX_RENDITIONS, Codec, Interpolation, VideoOptions

router = APIRouter(tags=["capabilities"])


class Limits(BaseModel):
    """This server's limits on a request: the web page's form and the CLI check against them."""

    max_steps: int = Field(description="Most denoising steps (one frame each).", examples=[200])
    min_side: int = Field(description="Smallest width or height in pixels.", examples=[MIN_SIDE])
    max_side: int = Field(description="Largest width or height in pixels.", examples=[MAX_SIDE])
    max_pixels: int = Field(description="Largest width x height.", examples=[1048576])
    max_prompt_chars: int = Field(description="Longest prompt, in characters.", examples=[2000])
    max_duration_seconds: float = Field(description="Longest animation.duration.", examples=[120])
    max_fps: int = Field(description="Highest animation.fps.", examples=[60])
    max_hold_last_seconds: float = Field(description="Longest animation.hold_last.", examples=[30])
    max_batch_size: int = Field(description="Most images per job.", examples=[8])
    max_loras: int = Field(description="Most LoRAs per job.", examples=[4])
    max_grid_cells: int = Field(description="Most cells in one grid (POST /grids).", examples=[64])
    max_renditions: int = Field(description="Most renditions per job.", examples=[MAX_RENDITIONS])
    max_upscale: int = Field(description="Largest capture.upscale.", examples=[MAX_UPSCALE])
    max_frame_side: int = Field(description="Largest side of an (upscaled) frame.", examples=[MAX_FRAME_SIDE])
    max_upload_bytes: int = Field(description="Largest init image file.", examples=[10485760])
    max_wait_seconds: int = Field(description="Longest `Prefer: wait=N` honoured.", examples=[60])


class SamplerPublic(BaseModel):
    id: str = Field(description="The value of `scheduler` in POST /animations.", examples=["dpmpp_2m"])
    label: str = Field(description="The name web UIs give it.", examples=["DPM++ 2M"])
    max_steps: int | None = Field(description="Most steps it takes (few-step samplers), else null.", examples=[None])


class SchedulePublic(BaseModel):
    id: str = Field(description="The value of `schedule` in POST /animations.", examples=["karras"])
    label: str = Field(description="The name web UIs give it.", examples=["Karras"])


class CapabilitiesPublic(BaseModel):
    codecs: list[Codec] = Field(description="Codecs the encoder's ffmpeg can make.")
    interpolations: list[Interpolation] = Field(description="Interpolation modes the encoder's ffmpeg supports.")
    schedulers: list[str] = Field(
        description="Sampler ids accepted by POST /animations (which fit a model: `models[].samplers`).",
        examples=[["euler_a", "ddim", "dpmpp_2m"]],
    )
    samplers: list[SamplerPublic] = Field(description="Every sampler, with the name web UIs give it.")
    schedules: list[SchedulePublic] = Field(description="Every schedule type, with the name web UIs give it.")
    limits: Limits = Field(description="This server's limits on a request.")
    default_model: str = Field(
        description="The model a job renders with when its request names none (`model` omitted).",
        examples=["tiny-sd"],
    )
    models: list[ModelInfo] = Field(
        description="The render workers' local models: each one's family, the samplers and schedule types that fit "
        "it, and the request defaults the server applies to it (empty until a render worker has started; hub ids "
        "may be used as well)."
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


CACHE_SECONDS = 5.0  # workers re-publish every publish_interval_seconds: a few seconds of staleness are harmless
T = TypeVar("T")


def _fresh(request: Request, name: str) -> tuple[float, Any] | None:
    cached: tuple[float, Any] | None = getattr(request.app.state, name, None)
    return cached if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS else None


def _cached(request: Request, name: str, read: Callable[[], T]) -> T:
    """``read()``, at most every ``CACHE_SECONDS`` per API process (None is read again each time:
    until an encoder has published, the first one to do so is seen at once)."""
    if (cached := _fresh(request, name)) is not None:
        return cast(T, cached[1])
    value = read()
    if value is not None:
        setattr(request.app.state, name, (time.monotonic(), value))
    return value


async def _cached_async(request: Request, name: str, read: Callable[[], Awaitable[T]]) -> T:
    if (cached := _fresh(request, name)) is not None:
        return cast(T, cached[1])
    value = await read()
    if value is not None:
        setattr(request.app.state, name, (time.monotonic(), value))
    return value


def current(request: Request, svc: Services) -> Capabilities | None:
    """The encoder's capabilities (None until an encoder has published them)."""
    return _cached(request, "encoder_capabilities", svc.published.encoder)


async def current_async(request: Request, store: AsyncJobStore) -> Capabilities | None:
    """:func:`current`, for the event loop."""
    return await _cached_async(
        request, "encoder_capabilities", lambda: published.encoder_async(store.client, store.keys)
    )


def models(request: Request, svc: Services) -> list[ModelInfo]:
    """The render workers' models (empty until one has published them)."""
    return _cached(request, "models", svc.published.models)


async def models_async(request: Request, store: AsyncJobStore) -> list[ModelInfo]:
    return await _cached_async(request, "models", lambda: published.models_async(store.client, store.keys))


def adapters(request: Request, svc: Services) -> list[AdapterInfo]:
    """The render workers' LoRAs and embeddings (empty until one has published them)."""
    return _cached(request, "adapters", svc.published.adapters)


async def adapters_async(request: Request, store: AsyncJobStore) -> list[AdapterInfo]:
    return await _cached_async(request, "adapters", lambda: published.adapters_async(store.client, store.keys))


def limits(settings: Settings) -> Limits:
    return Limits(
        max_steps=settings.max_steps,
        min_side=MIN_SIDE,
        max_side=MAX_SIDE,
        max_pixels=settings.max_pixels,
        max_prompt_chars=settings.max_prompt_chars,
        max_duration_seconds=settings.max_duration_seconds,
        max_fps=MAX_FPS,
        max_hold_last_seconds=MAX_HOLD_LAST,
        max_batch_size=settings.max_batch_size,
        max_loras=settings.max_loras,
        max_grid_cells=settings.max_grid_cells,
        max_renditions=MAX_RENDITIONS,
        max_upscale=MAX_UPSCALE,
        max_frame_side=MAX_FRAME_SIDE,
        max_upload_bytes=settings.max_upload_bytes,
        max_wait_seconds=settings.max_wait_seconds,
    )


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
    """Codecs and interpolation modes the installed ffmpeg really supports, the samplers and
    schedule types, this server's limits, the model a job gets when it names none, the render
    workers' local models with what fits each (and the defaults the server applies), and their
    LoRAs and embeddings with the models each fits.

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
        samplers=[SamplerPublic(id=s.id, label=s.label, max_steps=s.max_steps) for s in REGISTRY],
        schedules=[SchedulePublic(id=k, label=v) for k, v in SCHEDULE_LABELS.items()],
        limits=limits(svc.settings),
        default_model=svc.settings.default_model,
        models=models(request, svc),
        adapters=adapters(request, svc),
        missing=caps.missing,
        ffmpeg_version=caps.ffmpeg_version,
        probed_at=caps.probed_at.isoformat(),
    )


def check_create_body(caps: Capabilities | None, body: AnimationCreate) -> None:
    """POST /animations: a codec or interpolation the encoder lacks is a 422, not a failed job."""
    require(caps, body.animation, "animation")
    for i, rendition in enumerate(body.renditions):
        require(caps, rendition, f"renditions.{i}")

"""/animations/{id}/renditions: more videos of a finished job's stored frames, without the GPU."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response, status
from starlette.concurrency import run_in_threadpool

from api.deps import AdmissionDep, JobDep, PrincipalDep, ServicesDep
from api.errors import AUTH_RESPONSES, ApiError, ErrorResponse
from api.idempotency import created_headers, fingerprint, key_header, run_once
from api.routes.capabilities import require
from stepanim import lifecycle
from stepanim.admission import Admission, IdempotencyRequest
from stepanim.auth import Principal
from stepanim.jobs import Job, Rendition, utcnow
from stepanim.naming import new_rendition_id
from stepanim.public import RenditionPublic, rendition_public
from stepanim.queues import enqueue_rendition
from stepanim.services import Services
from stepanim.video_options import VideoOptions

log = logging.getLogger(__name__)
router = APIRouter(prefix="/animations/{animation_id}/renditions", tags=["renditions"])

REFUSED_STATUS = {"not_ready": 409, "frames_deleted": 409, "no_frames": 409, "limit_exceeded": 422}


RenditionId = Annotated[str, Path(description="The rendition's id.", examples=["3f2a9c0d1e4b5a6c"])]
RENDITION_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    400: {"model": ErrorResponse, "description": "The body could not be read as UTF-8 JSON."},
    404: {"model": ErrorResponse},
    409: {
        "model": ErrorResponse,
        "description": "Not finished yet, its frames were deleted, or a request with this Idempotency-Key is "
        "still being processed.",
    },
    422: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}
RENDITION_EXAMPLE = {
    "requestBody": {
        "content": {
            "application/json": {"example": {"codec": "vp9", "duration": 10, "interpolation": "mci", "fps": 24}}
        }
    }
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RenditionPublic,
    openapi_extra=RENDITION_EXAMPLE,
    responses=RENDITION_RESPONSES,
)
async def create_rendition(*, job: JobDep, ask: RenditionAskDep) -> RenditionPublic:
    """Re-encode a succeeded animation from its stored frames (other codec, duration, fps, interpolation).

    The encoder worker makes it; the response (202) is the queued rendition, and the
    animation lists it with its status and, once done, a signed URL. A job whose frames
    were deleted (`keep_frames: false`) cannot be re-encoded: 409. With an
    `Idempotency-Key` a repeat returns the same rendition (header `Idempotent-Replayed: true`).
    """
    return await make_rendition(job, ask, noun="animations")


@dataclass(frozen=True)
class RenditionAsk:
    """What a POST .../renditions brings, for an animation or a grid: the video options, the caller
    and its Idempotency-Key."""

    body: VideoOptions
    svc: Services
    admission: Admission
    principal: Principal
    response: Response
    idempotency_key: str | None


async def rendition_ask(
    body: VideoOptions,
    svc: ServicesDep,
    admission: AdmissionDep,
    principal: PrincipalDep,
    response: Response,
    idempotency_key: Annotated[str | None, key_header("rendition")] = None,
) -> RenditionAsk:
    return RenditionAsk(body, svc, admission, principal, response, idempotency_key)


RenditionAskDep = Annotated[RenditionAsk, Depends(rendition_ask)]


async def make_rendition(job: Job, ask: RenditionAsk, *, noun: str) -> RenditionPublic:
    """Add a rendition of ``job`` (an animation, or a grid: ``noun`` names its path), once per Idempotency-Key."""
    body, svc, idempotency_key = ask.body, ask.svc, ask.idempotency_key
    made: list[Rendition] = []

    async def make() -> str:
        made.append(await run_in_threadpool(add, job, body, svc))
        return made[0].id

    async def exists(rendition_id: str) -> bool:
        return any(r.id == rendition_id for r in (await run_in_threadpool(svc.store.get, job.id)).renditions)

    request = None
    if idempotency_key is not None:  # scoped to this animation: not a job's key
        key = f"rendition:{job.id}:{idempotency_key}"
        request = IdempotencyRequest(ask.principal.tenant, key, fingerprint(body), svc.settings.idempotency_ttl_seconds)
    rendition_id, replayed = await run_once(ask.admission, request, make=make, exists=exists)
    rendition = made[0] if made else next(r for r in svc.store.get(job.id).renditions if r.id == rendition_id)
    location = f"{svc.settings.public_base_url.rstrip('/')}/{noun}/{job.id}/renditions/{rendition.id}"
    ask.response.headers.update(created_headers(location, replayed=replayed))
    return rendition_public(rendition, svc.storage)


def add(job: Job, body: VideoOptions, svc: Services) -> Rendition:
    """Record a new rendition of ``job`` and queue it for the encoder; refusals are ApiErrors."""
    require(svc.published.encoder(), body, "body")  # rarely called: read fresh
    frames = min((len(image.frames) for image in job.images), default=0)  # every image has as many
    if frames and body.skip_steps >= frames:
        raise ApiError(
            422,
            "invalid_request",
            f"skip_steps: {body.skip_steps} leaves no frame of the {frames} this animation has",
        )
    rendition = Rendition(id=new_rendition_id(), options=body, created_at=utcnow())
    try:
        lifecycle.add_rendition(svc, job.id, rendition)
    except lifecycle.RenditionRefused as e:
        raise ApiError(REFUSED_STATUS.get(e.code, 409), e.code, e.message) from e
    try:
        enqueue_rendition(svc.celery, job.id, rendition.id)
    except Exception as e:  # the broker refused: take the rendition back
        log.error("could not enqueue rendition %s of %s: %s", rendition.id, job.id, e)
        lifecycle.remove_rendition(svc, job.id, rendition.id)
        raise ApiError(
            503, "queue_unavailable", "the job queue is unavailable; try again", headers={"Retry-After": "5"}
        ) from e
    return rendition


@router.get(
    "/{rendition_id}", response_model=RenditionPublic, responses={**AUTH_RESPONSES, 404: {"model": ErrorResponse}}
)
def get_rendition(
    *,
    job: JobDep,
    rendition_id: RenditionId,
    svc: ServicesDep,
) -> RenditionPublic:
    """One rendition: status, options and, once it succeeded, a signed video URL."""
    return rendition_of(job, rendition_id, svc)


def rendition_of(job: Job, rendition_id: str, svc: Services) -> RenditionPublic:
    for rendition in job.renditions:
        if rendition.id == rendition_id:
            return rendition_public(rendition, svc.storage)
    noun = "grid" if job.kind == "grid" else "animation"
    raise ApiError(404, "not_found", f"{noun} {job.id} has no rendition {rendition_id!r}")

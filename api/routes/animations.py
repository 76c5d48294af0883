"""/animations: create a job and read it back."""

from __future__ import annotations

import logging
import secrets
import uuid

from fastapi import APIRouter, Response, status

from api.deps import JobDep, ServicesDep
from api.errors import ApiError, ErrorResponse
from api.routes.uploads import prepare_init_image
from stepanim.jobs import MAX_SEED, AnimationCreate, Job, Progress, utcnow
from stepanim.public import AnimationPublic, to_public
from stepanim.queues import enqueue_render
from stepanim.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/animations", tags=["animations"])


def check_limits(body: AnimationCreate, settings: Settings) -> None:
    """Limits that depend on this server's settings (the schema holds the fixed ones)."""
    if body.steps > settings.max_steps:
        raise ApiError(
            422, "limit_exceeded", f"steps: {body.steps} is above this server's limit of {settings.max_steps}"
        )
    if body.width * body.height > settings.max_pixels:
        raise ApiError(
            422,
            "limit_exceeded",
            f"width x height: {body.width}x{body.height} is above this server's limit of {settings.max_pixels} pixels",
        )
    if len(body.prompt) > settings.max_prompt_chars:
        raise ApiError(
            422, "limit_exceeded", f"prompt: longer than this server's limit of {settings.max_prompt_chars} characters"
        )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AnimationPublic,
    responses={422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
def create_animation(*, body: AnimationCreate, svc: ServicesDep, response: Response) -> AnimationPublic:
    """Accept a render job.

    The job is stored and queued for a render worker; the response (202) carries the
    job and a `Location` header to poll. Every invalid body is refused with 422 and
    nothing is stored.
    """
    check_limits(body, svc.settings)
    body = prepare_init_image(body, svc)
    now = utcnow()
    job = Job(
        id=uuid.uuid4().hex,
        request=body,
        model=body.model or svc.settings.default_model,
        seed=body.seed if body.seed is not None else secrets.randbelow(MAX_SEED + 1),
        created_at=now,
        updated_at=now,
        progress=Progress(step=0, total=body.steps),
    )
    svc.store.create(job)
    try:
        enqueue_render(svc.celery, job.id)
    except Exception as e:  # the broker refused: take the record back, the client may retry
        log.error("could not enqueue job %s: %s", job.id, e)
        svc.store.delete(job.id)
        raise ApiError(
            503, "queue_unavailable", "the job queue is unavailable; try again", headers={"Retry-After": "5"}
        ) from e
    public = to_public(job, svc)
    response.headers["Location"] = public.urls.get
    return public


@router.get("/{animation_id}", response_model=AnimationPublic, responses={404: {"model": ErrorResponse}})
def get_animation(*, job: JobDep, svc: ServicesDep) -> AnimationPublic:
    """The job's status, progress, timestamps, error and, once it succeeded, a signed video URL."""
    return to_public(job, svc)

"""/animations: create (idempotent, optionally waiting), list, read back, cancel."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api import idempotency
from api.deps import (
    AdmissionDep,
    AsyncStoreDep,
    CreatorDep,
    JobDep,
    PrincipalDep,
    ServicesDep,
    rate_limit,
    rate_limits,
    refuse_if_limited,
)
from api.errors import AUTH_RESPONSES, CREATE_RESPONSES, ApiError, ErrorResponse
from api.idempotency import created_headers, fingerprint, key_header, replayed_id
from api.routes.capabilities import adapters_async, check_create_body, current_async, models_async
from api.routes.uploads import prepare_init_image
from stepanim import lifecycle, ssrf
from stepanim.adapters import AdapterInfo, check_adapters
from stepanim.admission import Admission, IdempotencyRecord, IdempotencyRequest
from stepanim.auth import Principal
from stepanim.jobs import Job, JobStatus, Progress, utcnow
from stepanim.model_catalog import ModelInfo, misfits, vocabulary_warnings, with_defaults
from stepanim.public import NEW_JOB_EXTRAS, AnimationList, AnimationPublic, to_public
from stepanim.request import MAX_SEED, AnimationCreate
from stepanim.services import Services
from stepanim.settings import Settings
from stepanim.store import AsyncJobStore, JobNotFound

log = logging.getLogger(__name__)
router = APIRouter(prefix="/animations", tags=["animations"])


def refused(code: str, problems: list[tuple[str, str]]) -> ApiError:
    """A 422 that names every field at fault (``field: why``, joined with ``; ``)."""
    return ApiError(
        422,
        code,
        "; ".join(f"{field}: {message}" for field, message in problems),
        details=[{"field": field, "message": message} for field, message in problems],
    )


def limit_problems(body: AnimationCreate, settings: Settings) -> list[tuple[str, str]]:
    """Limits that depend on this server's settings (the schema holds the fixed ones)."""
    problems = []
    if body.steps > settings.max_steps:
        problems.append(("steps", f"{body.steps} is above this server's limit of {settings.max_steps}"))
    if body.width * body.height > settings.max_pixels:
        problems.append(
            (
                "width x height",
                f"{body.width}x{body.height} is above this server's limit of {settings.max_pixels} pixels",
            )
        )
    if len(body.prompt) > settings.max_prompt_chars:
        problems.append(("prompt", f"longer than this server's limit of {settings.max_prompt_chars} characters"))
    if body.animation.duration > settings.max_duration_seconds:
        problems.append(
            (
                "animation.duration",
                f"{body.animation.duration}s is above this server's limit of {settings.max_duration_seconds:g}s",
            )
        )
    if body.batch_size > settings.max_batch_size:
        problems.append(("batch_size", f"{body.batch_size} is above this server's limit of {settings.max_batch_size}"))
    if len(body.loras) > settings.max_loras:
        problems.append(("loras", f"{len(body.loras)} is above this server's limit of {settings.max_loras}"))
    return problems


def resolve_model(body: AnimationCreate, models: list[ModelInfo], settings: Settings) -> ModelInfo | None:
    """What the render workers published of the model this request names (or the default one).
    A local model name they do not have is refused (422 naming the ones they have); a hub id
    (``org/name``) is taken as it is, and so is anything while no render worker has published."""
    name = body.model or settings.default_model
    for info in models:
        if info.name == name:
            return info
    if models and "/" not in name:
        have = ", ".join(info.name for info in models)
        raise refused("invalid_request", [("model", f"no model {name!r} on this server's render workers ({have})")])
    return None


def checked(
    body: AnimationCreate, models: list[ModelInfo], adapters: list[AdapterInfo], settings: Settings
) -> tuple[AnimationCreate, list[str]]:
    """The request as it will render: the model's defaults filled in where the client left a field
    out, checked against this server's limits and against what fits the model, its LoRAs and
    embeddings included (422 otherwise, naming every field at fault); and the warnings the job gets."""
    info = resolve_model(body, models, settings)
    try:
        body = with_defaults(body, info)
    except ValidationError as e:  # the client's fields and the model's defaults do not fit together
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in e.errors()]) from e
    problems = limit_problems(body, settings)
    if problems:
        raise refused("limit_exceeded", problems)
    problems = (misfits(info, body) if info is not None else []) + check_adapters(body, info, adapters)
    if problems:
        raise refused("invalid_request", problems)
    return body, vocabulary_warnings(info, body.prompt)


def check_webhook(body: AnimationCreate, settings: Settings) -> None:
    """The webhook must be a URL the SSRF guard lets the notify worker call (checked again at send time)."""
    if body.webhook is None:
        return
    try:
        ssrf.check_url(str(body.webhook), allow=settings.outbound_allow)
    except ssrf.UnsafeURL as e:
        raise ApiError(
            422,
            "invalid_request",
            f"webhook: refused: {e}",
            details=[{"field": "webhook", "message": f"refused: {e}"}],
        ) from e


def parse_wait(prefer: str | None, *, limit: int) -> int | None:
    """The ``wait=N`` preference of a ``Prefer`` header (RFC 7240), capped at ``limit``; None if absent.

    Preferences that are not understood are ignored, as RFC 7240 asks.
    """
    if not prefer:
        return None
    for preference in prefer.split(","):
        name, _, value = preference.split(";", 1)[0].strip().partition("=")
        value = value.strip().strip('"')
        if name.strip().lower() == "wait" and value.isdigit():
            return min(int(value), limit)
    return None


async def accept(
    request: Request,
    svc: Services,
    admission: Admission,
    store: AsyncJobStore,
    body: AnimationCreate,
    principal: Principal,
    key: str | None,
) -> tuple[Job, bool]:
    """Store a job and send its render task (or find the job this Idempotency-Key made).
    Returns (job, replayed).

    Every check comes before anything is written; then the admission script counts the
    request against the key's rate limits, takes its place in the key's quota, records the
    Idempotency-Key and stores the job, all or nothing (``stepanim.admission``); then the
    render task is sent. Only a job with an init image does slow work first (a fetch, an
    upload): it is counted and claims its key before, so that a repeat meanwhile gets 409.
    """
    settings = svc.settings
    # The key's fingerprint is the body's as sent: the model's defaults may change between two tries.
    print_ = fingerprint(body) if key is not None else ""
    models, adapters = await models_async(request, store), await adapters_async(request, store)
    body, warnings = checked(body, models, adapters, settings)
    check_create_body(await current_async(request, store), body)
    if body.webhook is not None:
        await run_in_threadpool(check_webhook, body, settings)  # resolves the host name
    idem = (
        IdempotencyRequest(principal.tenant, key, print_, settings.idempotency_ttl_seconds) if key is not None else None
    )
    counted = False
    if body.init_image is not None:
        await rate_limit(admission, settings, principal, creates=True)
        counted = True
        if idem is not None:

            async def exists(job_id: str) -> bool:
                return await store.get(job_id) is not None

            idem, made = await idempotency.claim(admission, idem, exists=exists)
            if made is not None and (existing := await store.get(made)) is not None:
                return existing, True
        try:
            body = await run_in_threadpool(prepare_init_image, body, svc, tenant=principal.tenant)
        except BaseException:
            if idem is not None:
                await admission.release_claim(idem)
            raise
    try:
        job = new_job(body, principal, settings, warnings=warnings)
        job, replayed = await admit(svc, admission, store, job, idem, counted=counted)
    except BaseException:
        if idem is not None and idem.claim:
            await admission.release_claim(idem)
        raise
    if not replayed:
        request.app.state.task_sender.send(job.id)  # api/dispatch.py: off the request path
    return job, replayed


async def admit(
    svc: Services,
    admission: Admission,
    store: AsyncJobStore,
    job: Job,
    idem: IdempotencyRequest | None,
    *,
    counted: bool,
    listed: bool = True,
) -> tuple[Job, bool]:
    """Admit ``job`` (the one Redis script), or answer with what its key made; 429 when over a limit.
    ``listed``: in GET /animations (a grid is not)."""
    settings = svc.settings
    assert job.key_id is not None
    limits = rate_limits(settings, creates=True)
    counting = [] if counted else limits
    for _ in range(3):
        admitted = await admission.admit(
            job, max_active=settings.max_active_jobs, idempotency=idem, limits=counting, listed=listed
        )
        if admitted.outcome == "created":
            return job, False
        if admitted.outcome == "rate_limited":
            refuse_if_limited(counting, admitted.waits)
        counting = []  # counted once, however often the admission is tried
        if admitted.outcome == "quota":
            if await admission.forget_finished_active(job.key_id):
                continue  # places were held by jobs that ended without freeing them: try again
            raise ApiError(
                429,
                "quota_exceeded",
                f"this API key already has {settings.max_active_jobs} unfinished animations; "
                "wait for one to finish or cancel one",
                headers={"Retry-After": "10"},
            )
        assert idem is not None and admitted.record is not None  # the key is taken
        if (existing := await made_before(admission, store, idem, admitted.record)) is not None:
            return existing, True
    raise ApiError(
        409,
        "idempotency_conflict",
        "Idempotency-Key: the key changed hands meanwhile; retry",
        headers={"Retry-After": "1"},
    )


async def made_before(
    admission: Admission, store: AsyncJobStore, idem: IdempotencyRequest, record: IdempotencyRecord
) -> Job | None:
    """The job a taken Idempotency-Key made for this body (else 422 or 409, see
    ``replayed_id``); None when that job has expired, and the key is then released."""
    job = await store.get(replayed_id(record, idem.fingerprint))
    if job is None:
        await admission.release(idem, record)
    return job


def new_job(body: AnimationCreate, principal: Principal, settings: Settings, *, warnings: list[str]) -> Job:
    now = utcnow()
    return Job(
        id=uuid.uuid4().hex,
        request=body,
        model=body.model or settings.default_model,
        seed=body.seed if body.seed is not None else secrets.randbelow(MAX_SEED + 1),
        created_at=now,
        updated_at=now,
        progress=Progress(step=0, total=body.steps),
        tenant=principal.tenant,
        key_id=principal.key_id,
        warnings=warnings,
    )


async def wait_until_finished(store: AsyncJobStore, job_id: str, seconds: float) -> Job:
    """The job once it is finished, or as it is after ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    after = "0-0"
    while True:
        job = await store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        remaining = deadline - loop.time()
        if job.status.is_terminal() or remaining <= 0:
            return job
        events = await store.read_events(job_id, after, block_ms=int(min(remaining, 5.0) * 1000))
        if events:
            after = events[-1][0]


CREATE_EXAMPLE = {
    "prompt": "a lighthouse on a cliff at dawn",
    "steps": 30,
    "scheduler": "euler_a",
    "seed": 1234,
    "animation": {"duration": 3, "codec": "h264"},
    "webhook": "https://example.com/hooks/stepanim",
    "webhook_events": ["animation.started", "animation.succeeded", "animation.failed", "animation.canceled"],
}


PREFER_DESCRIPTION = (
    "`wait=N`: hold the response up to N seconds (at most the server's `max_wait_seconds`) "
    "and return the finished job (200) if it is done by then."
)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AnimationPublic,
    summary="Create an animation",
    responses={
        200: {"model": AnimationPublic, "description": "With `Prefer: wait=N`: the job finished in time."},
        202: {
            "description": "Accepted: the job is stored and queued (or, for a repeated Idempotency-Key, the job "
            "it made).",
            "headers": {"Location": {"description": "URL of the job.", "schema": {"type": "string"}}},
        },
        **CREATE_RESPONSES,
        422: {
            "model": ErrorResponse,
            "description": "Invalid body, a server limit exceeded (named in the message), a refused webhook URL, "
            "or an Idempotency-Key reused with another body.",
        },
        **AUTH_RESPONSES,
    },
)
async def create_animation(
    *,
    request: Request,
    body: Annotated[AnimationCreate, Body(openapi_examples={"a lighthouse": {"value": CREATE_EXAMPLE}})],
    principal: CreatorDep,
    svc: ServicesDep,
    admission: AdmissionDep,
    store: AsyncStoreDep,
    idempotency_key: Annotated[str | None, key_header("job")] = None,
    prefer: Annotated[str | None, Header(description=PREFER_DESCRIPTION, examples=["wait=30"])] = None,
) -> Response:
    """Accept a render job.

    The job is stored and queued for a render worker; the response (202) carries the
    job and a `Location` header to poll (or follow `urls.stream`). Every invalid body
    is refused with 422 and nothing is stored. The job belongs to the caller's tenant.

    With an `Idempotency-Key` the request can be retried safely: a repeat returns the
    same job (header `Idempotent-Replayed: true`) and starts no second render.
    """
    job, replayed = await accept(request, svc, admission, store, body, principal, idempotency_key)
    headers: dict[str, str] = {}
    status_code = status.HTTP_202_ACCEPTED
    wait = parse_wait(prefer, limit=svc.settings.max_wait_seconds)
    if wait is not None:
        headers["Preference-Applied"] = f"wait={wait}"
        job = await wait_until_finished(store, job.id, wait)
        if job.status.is_terminal():
            status_code = status.HTTP_200_OK
    if wait is None and not replayed:
        public = to_public(job, svc, extras=NEW_JOB_EXTRAS)  # nothing to read back for a job just made
    else:
        public = await run_in_threadpool(to_public, job, svc)
    headers.update(created_headers(public.urls.get, replayed=replayed))
    return Response(public.model_dump_json(), status_code=status_code, headers=headers, media_type="application/json")


CURSOR_PATTERN = r"^[0-9]{1,15}_[0-9a-f]{32}$"


def encode_cursor(cursor: tuple[int, str]) -> str:
    """A keyset cursor: ``<creation millis>_<id>`` of the last job on the page (any such value is a position)."""
    return f"{cursor[0]}_{cursor[1]}"


def decode_cursor(text: str) -> tuple[int, str]:
    if re.fullmatch(CURSOR_PATTERN, text) is None:
        raise ApiError(
            422,
            "invalid_request",
            "cursor: not a cursor this server returned",
            details=[{"field": "cursor", "message": "not a cursor this server returned"}],
        )
    millis, job_id = text.split("_", 1)
    return int(millis), job_id


@router.get(
    "",
    response_model=AnimationList,
    summary="List animations",
    responses={422: {"model": ErrorResponse, "description": "A bad cursor or status."}, **AUTH_RESPONSES},
)
def list_animations(
    *,
    svc: ServicesDep,
    principal: PrincipalDep,
    status_: Annotated[
        list[JobStatus] | None,
        Query(alias="status", description="Only jobs in these statuses (repeat the parameter for several)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.", examples=[20])] = 20,
    cursor: Annotated[
        str | None,
        Query(
            pattern=CURSOR_PATTERN,
            description="`next_cursor` of the previous page; omit for the first.",
            examples=["1767323445678_4f0c1a2b3c4d4e5f8a9b0c1d2e3f4a5b"],
        ),
    ] = None,
) -> AnimationList:
    """The caller's tenant's animations, newest first, a page at a time (cursor pagination)."""
    after = decode_cursor(cursor) if cursor else None
    jobs, next_cursor = svc.store.list_jobs(
        principal.tenant, limit=limit, cursor=after, statuses=frozenset(status_) if status_ else None
    )
    return AnimationList(
        data=[to_public(job, svc) for job in jobs],
        next_cursor=encode_cursor(next_cursor) if next_cursor else None,
    )


@router.get(
    "/{animation_id}",
    response_model=AnimationPublic,
    summary="Get an animation",
    responses={404: {"model": ErrorResponse, "description": "No such animation for this tenant."}, **AUTH_RESPONSES},
)
def get_animation(*, job: JobDep, svc: ServicesDep) -> AnimationPublic:
    """The job's status, progress, timestamps, error, webhook deliveries and, once it succeeded, a signed video URL."""
    return to_public(job, svc)


@router.post(
    "/{animation_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AnimationPublic,
    summary="Cancel an animation",
    responses={
        200: {"model": AnimationPublic, "description": "The job is canceled (now or before)."},
        202: {"description": "Cancel requested: the rendering job stops within one step."},
        404: {"model": ErrorResponse, "description": "No such animation for this tenant."},
        409: {
            "model": ErrorResponse,
            "description": "The job already finished (`succeeded` or `failed`); `details` holds its status.",
        },
        **AUTH_RESPONSES,
    },
)
def cancel_animation(*, job: JobDep, svc: ServicesDep, response: Response) -> AnimationPublic:
    """Cancel a job; safe to repeat.

    A queued job never starts and an encoding job stops at once (200, `canceled`); a
    rendering job stops within one step (202, `cancel_requested: true`, then
    `canceled`). Cancelling a canceled job returns it (200); a job that already
    succeeded or failed cannot be canceled (409 with its status).
    """
    if job.status == JobStatus.canceled:
        response.status_code = status.HTTP_200_OK
        return to_public(job, svc)
    if job.status.is_terminal():
        raise finished(job)
    job = lifecycle.request_cancel(svc, job.id)
    if job.status == JobStatus.rendering:
        return to_public(job, svc)  # 202: the worker sees the flag
    if job.status != JobStatus.canceled:
        raise finished(job)  # it finished in the meantime
    response.status_code = status.HTTP_200_OK
    return to_public(job, svc)


def finished(job: Job) -> ApiError:
    details: list[dict[str, Any]] = [{"field": "status", "message": job.status.value, "status": job.status.value}]
    return ApiError(
        409, "already_finished", f"the animation already {job.status.value}; it cannot be canceled", details=details
    )

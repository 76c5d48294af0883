"""/grids: one request, a synced grid animation of how samplers, seeds or step counts denoise.

A grid is admitted like an animation (every cell checked as ``POST /animations`` would check
it, one 422 naming every cell and field at fault, nothing stored; rate limits, one place in
the key's quota, Idempotency-Key); then the grid task fans it out to its cells, ordinary
animation jobs the render workers share (``stepanim.grid_flow``).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import AdmissionDep, AsyncStoreDep, CreatorDep, PrincipalDep, ServicesDep, owned_record
from api.errors import AUTH_RESPONSES, CREATE_RESPONSES, ApiError, ErrorResponse, field_path
from api.idempotency import created_headers, fingerprint, key_header
from api.routes.animations import admit, check_webhook, checked, new_job, refused
from api.routes.capabilities import adapters_async, check_create_body, current_async, models_async
from api.routes.events import EVENT_SCHEMA, LAST_EVENT_ID, event_response
from api.routes.renditions import (
    RENDITION_EXAMPLE,
    RENDITION_RESPONSES,
    RenditionAskDep,
    RenditionId,
    make_rendition,
    rendition_of,
)
from api.routes.uploads import prepare_init_image
from stepanim import grid_flow, lifecycle
from stepanim.admission import IdempotencyRequest
from stepanim.grid_public import GridPublic, grid_public
from stepanim.grids import Cell, GridCreate, GridPlan, cell_requests, grid_problems
from stepanim.jobs import Job, JobStatus
from stepanim.public import RenditionPublic
from stepanim.queues import enqueue_grid
from stepanim.services import Services

log = logging.getLogger(__name__)
router = APIRouter(prefix="/grids", tags=["grids"])

GRID_EXAMPLE = {
    "base": {"prompt": "a lighthouse on a cliff at dawn", "steps": 20, "seed": 7, "animation": {"duration": 3}},
    "x": {"field": "scheduler", "values": ["euler_a", "dpmpp_2m", "ddim"]},
    "y": {"field": "seed", "values": [1, 2]},
}


def get_grid(
    svc: ServicesDep,
    principal: PrincipalDep,
    grid_id: Annotated[str, Path(description="The grid's id.", examples=["9b1d2c3e4f5a6b7c8d9e0f1a2b3c4d5e"])],
) -> Job:
    """The grid in the path, if it belongs to the caller's tenant (another tenant's is 404)."""
    grid = owned_record(svc, principal, grid_id, kind="grid")
    if grid is None:
        raise ApiError(404, "not_found", f"no grid with id {grid_id!r}")
    return grid


GridDep = Annotated[Job, Depends(get_grid)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such grid for this tenant."}
}


def error_problems(error: Exception, where: str) -> list[tuple[str, str]]:
    """The fields and messages of a refusal of one cell's request, each under ``where``."""
    if isinstance(error, RequestValidationError):
        return [
            (f"{where}.{field_path(e.get('loc', ()))}", str(e.get("msg", "")).removeprefix("Value error, "))
            for e in error.errors()
        ]
    assert isinstance(error, ApiError)
    if error.details:
        return [(f"{where}.{d['field']}", str(d["message"])) for d in error.details if "field" in d]
    field, _, message = error.message.partition(": ")
    return [(f"{where}.{field}", message)]


async def checked_plan(request: Request, svc: Services, body: GridCreate) -> tuple[GridPlan, list[str]]:
    """Every cell as it will render (the model's defaults filled in), or one 422 naming every
    cell and field at fault; and the warnings (each cell's, once)."""
    settings = svc.settings
    count = len(body.x.values) * (len(body.y.values) if body.y is not None else 1)
    if count > settings.max_grid_cells:
        raise refused(
            "limit_exceeded", [("x.values", f"{count} cells is above this server's limit of {settings.max_grid_cells}")]
        )
    problems = grid_problems(body)
    cells, cell_faults = cell_requests(body)
    problems += cell_faults
    store = request.app.state.async_store
    models, adapters = await models_async(request, store), await adapters_async(request, store)
    caps = await current_async(request, store)
    ready: list[Cell] = []
    warnings: list[str] = []
    for cell in cells:
        where = f"cells[{cell.x},{cell.y}]"
        try:
            cell_request, cell_warnings = checked(cell.request, models, adapters, settings)
            check_create_body(caps, cell_request)
        except (ApiError, RequestValidationError) as e:
            problems += error_problems(e, where)
            continue
        warnings += [w for w in cell_warnings if w not in warnings]
        ready.append(cell.model_copy(update={"request": cell_request}))
    try:
        if body.base.webhook is not None:
            await run_in_threadpool(check_webhook, body.base, settings)
    except ApiError as e:
        problems += error_problems(e, "base")
    if problems:
        raise refused("invalid_request", problems)
    return GridPlan(x=body.x, y=body.y, allow_partial=body.allow_partial, cells=ready), warnings


def with_init_image(plan: GridPlan, body: GridCreate, svc: Services, tenant: str) -> tuple[GridPlan, GridCreate]:
    """An init image given by URL or data is fetched and stored once, as an upload all cells share."""
    if body.base.init_image is None:
        return plan, body
    base = prepare_init_image(body.base, svc, tenant=tenant)
    cells = [
        cell.model_copy(update={"request": cell.request.model_copy(update={"init_image": base.init_image})})
        for cell in plan.cells
    ]
    return plan.model_copy(update={"cells": cells}), body.model_copy(update={"base": base})


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=GridPublic,
    summary="Create a grid",
    responses={
        202: {
            "description": "Accepted: the grid is stored and queued (or, for a repeated Idempotency-Key, the grid "
            "it made).",
            "headers": {"Location": {"description": "URL of the grid.", "schema": {"type": "string"}}},
        },
        **CREATE_RESPONSES,
        422: {
            "model": ErrorResponse,
            "description": "Invalid body or cell (each named as `cells[x,y].field`), too many cells, or an "
            "Idempotency-Key reused with another body.",
        },
        **AUTH_RESPONSES,
    },
)
async def create_grid(
    *,
    request: Request,
    body: Annotated[GridCreate, Body(openapi_examples={"samplers by seeds": {"value": GRID_EXAMPLE}})],
    principal: CreatorDep,
    svc: ServicesDep,
    admission: AdmissionDep,
    store: AsyncStoreDep,
    idempotency_key: Annotated[str | None, key_header("grid")] = None,
) -> Response:
    """Accept a grid: a base request (everything `POST /animations` takes) and up to two axes.

    Every combination of the X and Y values is a cell: an ordinary animation job (its own
    video and frames, `cells[i].id`) rendered by the render workers alongside each other.
    Once every cell is done, the encoder composes one video: the cells side by side under
    their captions, aligned on progress through the denoising (a 10-step and a 30-step cell
    start at noise and end together), made with the base request's video options.

    Every cell is checked as `POST /animations` would check it; one invalid cell refuses the
    whole grid (422, naming it `cells[x,y].field`) and nothing is stored. The grid takes one
    place in the key's quota; with an `Idempotency-Key` a repeat returns the same grid.
    """
    settings = svc.settings
    print_ = fingerprint(body) if idempotency_key is not None else ""
    plan, warnings = await checked_plan(request, svc, body)
    plan, body = await run_in_threadpool(with_init_image, plan, body, svc, principal.tenant)
    idem = (
        IdempotencyRequest(principal.tenant, f"grid:{idempotency_key}", print_, settings.idempotency_ttl_seconds)
        if idempotency_key is not None
        else None
    )
    grid = new_job(body.base, principal, settings, warnings=warnings).model_copy(update={"kind": "grid", "grid": plan})
    grid, replayed = await admit(svc, admission, store, grid, idem, counted=False, listed=False)
    if not replayed:
        try:
            await run_in_threadpool(enqueue_grid, svc.celery, grid.id)
        except Exception as e:
            log.warning("grid %s stored but its task not sent (%s); the reconciler will send it", grid.id, e)
    public = await run_in_threadpool(grid_public, grid, svc)
    headers = created_headers(public.urls.get, replayed=replayed)
    return Response(public.model_dump_json(), status_code=202, headers=headers, media_type="application/json")


@router.get("/{grid_id}", response_model=GridPublic, summary="Get a grid", responses={**NOT_FOUND, **AUTH_RESPONSES})
def read_grid(*, grid: GridDep, svc: ServicesDep) -> GridPublic:
    """The grid's status, progress (cells and steps done), every cell with its own job and video,
    and, once it succeeded, a signed URL of the grid video."""
    return grid_public(grid, svc)


@router.post(
    "/{grid_id}/cancel",
    response_model=GridPublic,
    summary="Cancel a grid",
    responses={
        **NOT_FOUND,
        409: {"model": ErrorResponse, "description": "The grid already succeeded or failed."},
        **AUTH_RESPONSES,
    },
)
def cancel_grid(*, grid: GridDep, svc: ServicesDep) -> GridPublic:
    """Cancel a grid and every unfinished cell (a rendering cell stops within one step); safe to repeat."""
    if grid.status != JobStatus.canceled:
        try:
            grid = grid_flow.cancel_grid(svc, grid)
        except lifecycle.TransitionError as e:
            details: list[dict[str, Any]] = [{"field": "status", "message": e.current.value}]
            raise ApiError(
                409, "already_finished", f"the grid already {e.current.value}; it cannot be canceled", details=details
            ) from e
    return grid_public(grid, svc)


@router.get(
    "/{grid_id}/events",
    summary="Follow a grid's events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "A `text/event-stream`: `status` events (data: `status` and the grid as `grid`), `cell` "
            "events (data: `cell`, `id`, `status`, `grid`) as each cell moves on, and `rendition` updates; it ends "
            "after the final status.",
            "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
        },
        **NOT_FOUND,
        **AUTH_RESPONSES,
    },
)
async def grid_events(
    *, request: Request, grid: GridDep, svc: ServicesDep, last_event_id: LAST_EVENT_ID = None
) -> StreamingResponse:
    """Server-sent events of one grid, from its start (or after `Last-Event-ID`) to its end."""
    return event_response(request, svc, grid, last_event_id)


@router.post(
    "/{grid_id}/renditions",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RenditionPublic,
    openapi_extra=RENDITION_EXAMPLE,
    summary="Re-encode a grid",
    responses={**RENDITION_RESPONSES, **NOT_FOUND},
)
async def create_grid_rendition(*, grid: GridDep, ask: RenditionAskDep) -> RenditionPublic:
    """Another video of a succeeded grid (codec, duration, fps, interpolation), composed again from
    its cells' stored frames by the encoder; listed under the grid's `renditions`."""
    return await make_rendition(grid, ask, noun="grids")


@router.get(
    "/{grid_id}/renditions/{rendition_id}",
    response_model=RenditionPublic,
    summary="Get a grid's rendition",
    responses={**AUTH_RESPONSES, **NOT_FOUND},
)
def get_grid_rendition(
    *,
    grid: GridDep,
    rendition_id: RenditionId,
    svc: ServicesDep,
) -> RenditionPublic:
    """One rendition of a grid: status, options and, once it succeeded, a signed video URL."""
    return rendition_of(grid, rendition_id, svc)

"""/animations/{id}/events: the job's events as server-sent events.

The job's Redis stream is the source: every event keeps its stream id as the SSE
``id``, so a client that reconnects with ``Last-Event-ID`` gets exactly what it missed.
The stream ends after the terminal status event, or, when renditions are still being
made then, once the last of them has finished.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.deps import JobDep, ServicesDep
from api.errors import AUTH_RESPONSES, ErrorResponse
from stepanim.events import (
    CellData,
    CellEvent,
    JobEvent,
    ProgressData,
    ProgressEvent,
    RenditionData,
    StageData,
    StageEvent,
    StatusData,
    StatusEvent,
    is_final,
)
from stepanim.grid_public import grid_public
from stepanim.jobs import Job
from stepanim.public import to_public
from stepanim.services import Services
from stepanim.store import AsyncJobStore

log = logging.getLogger(__name__)
router = APIRouter(tags=["animations"])

KEEPALIVE_SECONDS = 15.0
EXAMPLE = (
    "retry: 2000\n\n"
    "id: 1767323445678-0\nevent: status\n"
    'data: {"status": "queued", "animation": {"id": "4f0c...", "status": "queued", "...": "..."}}\n\n'
    "id: 1767323446001-0\nevent: progress\n"
    'data: {"step": 1, "total": 30, "latest_frame_url": "https://...", "latest_frame_urls": ["https://..."]}\n\n'
    "id: 1767323452310-0\nevent: status\n"
    'data: {"status": "succeeded", "animation": {"...": "..."}}\n\n'
)


# The schema of one event of the stream (what an EventSource hands its listeners).
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One server-sent event.",
    "required": ["data"],
    "properties": {
        "id": {"type": "string", "description": "Stream id: send it back as Last-Event-ID to resume."},
        "event": {
            "type": "string",
            "description": "`status` (data: `status` and the job as `animation`), `stage` (data: `stage`: "
            "`loading_model` or `sampling`, before the first step), `progress` (data: `step`, `total`, "
            "`latest_frame_url` (the first image's) and `latest_frame_urls` (this step's frame of each image of the "
            "batch)), `rendition` (data: `id`, `status`); a newer server may add kinds (ignore what you do not "
            "know). The models are `stepanim.events` (the Python client parses them).",
        },
        "data": {"type": "string", "contentMediaType": "application/json", "description": "The event as JSON."},
        "retry": {"type": "integer", "description": "Reconnection delay in milliseconds."},
    },
}


def sse(event_id: str | None, name: str, data: dict[str, Any]) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


def render_event(svc: Services, job_id: str, event: JobEvent) -> tuple[str, dict[str, Any]]:
    """The SSE name and data of a stream event (``stepanim.events``): status changes carry the
    job, progress the signed URLs of its frames."""
    data: BaseModel
    if isinstance(event, StatusEvent | CellEvent):
        job = svc.store.find(job_id)
        if job is not None and job.kind == "grid":
            grid = grid_public(job, svc).model_dump(mode="json")
            if isinstance(event, CellEvent):
                data = CellData(cell=event.cell, id=event.id, status=event.status, grid=grid)
            else:
                data = StatusData(status=event.status, animation=None, grid=grid)
        elif isinstance(event, StatusEvent):
            data = StatusData(
                status=event.status, animation=to_public(job, svc).model_dump(mode="json") if job else None
            )
        else:
            data = CellData(cell=event.cell, id=event.id, status=event.status, grid=None)
    elif isinstance(event, ProgressEvent):
        urls = [svc.storage.signed_url(key) for key in event.frames]
        data = ProgressData(
            step=event.step, total=event.total, latest_frame_url=urls[0] if urls else None, latest_frame_urls=urls
        )
    elif isinstance(event, StageEvent):
        data = StageData(stage=event.stage)
    else:
        data = RenditionData(id=event.id, status=event.status)
    return event.type, data.model_dump(mode="json")


def settled(job: Job) -> bool:
    """Nothing more will happen to ``job``: it is finished and no rendition of it is being made."""
    return job.status.is_terminal() and all(r.status.is_terminal() for r in job.renditions)


async def stream(request: Request, svc: Services, job: Job, after: str) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    try:
        async for chunk in _events(request, svc, job, after):
            yield chunk
    except redis.RedisError as e:  # the client reconnects with Last-Event-ID and loses nothing
        log.warning("event stream of job %s ended early: %s", job.id, e)


async def _events(request: Request, svc: Services, job: Job, after: str) -> AsyncIterator[str]:
    store: AsyncJobStore = request.app.state.async_store
    if settled(job) and not await run_in_threadpool(svc.store.events, job.id, after):
        return  # nothing was missed and nothing more will come
    loop = asyncio.get_running_loop()
    closes_at = loop.time() + svc.settings.events_max_seconds
    while True:
        remaining = closes_at - loop.time()
        if remaining <= 0:
            return  # a bounded connection: the client reconnects with Last-Event-ID
        events = await store.read_events(job.id, after, block_ms=int(min(KEEPALIVE_SECONDS, remaining) * 1000))
        if not events:
            yield ": keep-alive\n\n"
            current = await run_in_threadpool(svc.store.get, job.id)
            if settled(current) and not await run_in_threadpool(svc.store.events, job.id, after):
                return  # the stream expired or was trimmed: do not wait forever
            continue
        ending = False
        for event_id, event in events:
            after = event_id
            name, data = await run_in_threadpool(render_event, svc, job.id, event)
            yield sse(event_id, name, data)
            if (is_final(event) or name == "rendition") and settled(await run_in_threadpool(svc.store.get, job.id)):
                ending = True  # after the final status, renditions still being made are followed to their end
        if ending:
            # Settled: what the stream holds now is all there will be; send it and close.
            for event_id, event in await run_in_threadpool(svc.store.events, job.id, after):
                name, data = await run_in_threadpool(render_event, svc, job.id, event)
                yield sse(event_id, name, data)
            return


LAST_EVENT_ID = Annotated[
    str | None,
    Header(
        pattern=r"^\d{1,20}(-\d{1,20})?$",
        description="Resume after this event id (browsers send it when they reconnect).",
        examples=["1767323446001-0"],
    ),
]


def event_response(request: Request, svc: Services, job: Job, last_event_id: str | None) -> StreamingResponse:
    """The job's (or grid's) event stream as an SSE response."""
    return StreamingResponse(
        stream(request, svc, job, last_event_id or "0-0"),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/animations/{animation_id}/events",
    summary="Follow an animation's events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "A `text/event-stream`: `status` events (with the job), `progress` events (with the "
            "newest frame's URL) and `rendition` updates (`id`, `status`), each with its `id`; it ends after the "
            "final status, or after the last rendition still being made then.",
            "content": {"text/event-stream": {"schema": EVENT_SCHEMA, "example": EXAMPLE}},
        },
        404: {"model": ErrorResponse, "description": "No such animation for this tenant."},
        422: {"model": ErrorResponse, "description": "A malformed Last-Event-ID."},
        **AUTH_RESPONSES,
    },
)
async def animation_events(
    *, request: Request, job: JobDep, svc: ServicesDep, last_event_id: LAST_EVENT_ID = None
) -> StreamingResponse:
    """Server-sent events of one job, from its start (or after `Last-Event-ID`) to its end.

    Every past event is replayed first, so nothing is lost between a POST and the
    first GET, or across a reconnect with `Last-Event-ID`. A connection lasts at most
    `events_max_seconds` (10 minutes by default); an EventSource reconnects by itself.
    """
    return event_response(request, svc, job, last_event_id)

"""What clients see of a grid: the API response and the webhook payload (``stepanim.public`` for jobs).

A grid's progress and cells are read from its cells' own records at read time: the grid
record changes only when the grid does (fanned out, composing, finished).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from stepanim.grid_flow import cell_jobs, plan_of
from stepanim.grids import GridAxis, cell_id
from stepanim.jobs import ErrorInfo, Job, JobStatus
from stepanim.public import RenditionPublic, VideoPublic, WebhookDeliveryPublic, rendition_public, video_public
from stepanim.request import AnimationCreate
from stepanim.services import Services

_ID = "9b1d2c3e4f5a6b7c8d9e0f1a2b3c4d5e"
_BASE = "https://api.example.com"
_WHEN = "2026-01-02T03:04:05.678901Z"


class GridProgress(BaseModel):
    cells_done: int = Field(description="Cells finished (succeeded, failed or canceled).", examples=[4])
    cells_total: int = Field(description="Cells in the grid.", examples=[6])
    steps_done: int = Field(description="Steps captured, all cells together.", examples=[96])
    steps_total: int = Field(description="Steps to capture, all cells together.", examples=[120])


class GridCellPublic(BaseModel):
    """One cell of the grid: where it stands, and its own animation job."""

    index: int = Field(description="Row by row: y x columns + x.", examples=[0])
    x: int = Field(description="Column.", examples=[0])
    y: int = Field(description="Row.", examples=[0])
    x_label: str = Field(description="Its column's value, as captioned.", examples=["euler_a"])
    y_label: str | None = Field(description="Its row's value, as captioned (none without a Y axis).", examples=["1"])
    id: str = Field(
        description="Its animation job (GET /animations/{id}): its own video and frames.",
        examples=["251b6afb90146d3cd0c347c7141b85cd"],
    )
    status: JobStatus | None = Field(description="The job's status; null before the grid was fanned out.")
    step: int = Field(description="Steps captured.", examples=[12])
    total: int = Field(description="Steps it runs.", examples=[20])
    video: VideoPublic | None = Field(description="The cell's own video, once it succeeded.")
    error: ErrorInfo | None = Field(description="Why it failed; null otherwise.")


class GridUrls(BaseModel):
    get: str = Field(description="This grid (GET).", examples=[f"{_BASE}/grids/{_ID}"])
    cancel: str = Field(description="Cancel it and its cells (POST).", examples=[f"{_BASE}/grids/{_ID}/cancel"])
    stream: str = Field(
        description="Its live events (GET, server-sent events).", examples=[f"{_BASE}/grids/{_ID}/events"]
    )


class GridPublic(BaseModel):
    """A grid as the API returns it."""

    id: str = Field(description="The grid's id.", examples=[_ID])
    status: JobStatus = Field(
        description="queued → rendering (its cells render) → encoding (the grid video is composed) → succeeded, "
        "or failed / canceled.",
        examples=["rendering"],
    )
    created_at: datetime = Field(description="When the grid was accepted.", examples=[_WHEN])
    updated_at: datetime = Field(description="Last change of the grid's status.", examples=[_WHEN])
    started_at: datetime | None = Field(description="When its cells were sent to the render workers.", examples=[_WHEN])
    finished_at: datetime | None = Field(description="When the grid reached its final status.", examples=[None])
    seed: int = Field(description="The seed of every cell that has none of its own.", examples=[1234])
    x: GridAxis = Field(description="The columns.")
    y: GridAxis | None = Field(description="The rows.")
    allow_partial: bool = Field(
        description="Whether failed cells become placeholders instead of failing the grid.", examples=[False]
    )
    progress: GridProgress = Field(description="Cells and steps done.")
    cells: list[GridCellPublic] = Field(description="Every cell, row by row.")
    video: VideoPublic | None = Field(description="The grid video; null until the grid succeeded.")
    error: ErrorInfo | None = Field(description="Why the grid failed (the failed cells' errors); null otherwise.")
    warnings: list[str] = Field(
        default_factory=list,
        description="What the grid was accepted with but may not do as hoped (each cell's warnings, once).",
        examples=[["model 'digits' does not know the words 'cat': ..."]],
    )
    urls: GridUrls = Field(description="Where to get, cancel and follow this grid.")
    webhook_deliveries: list[WebhookDeliveryPublic] = Field(
        default_factory=list, description="Attempts to deliver this grid's webhooks, oldest first."
    )
    base: AnimationCreate = Field(description="What every cell renders, as accepted.")
    renditions: list[RenditionPublic] = Field(
        default_factory=list, description="Other videos of the same grid (`POST /grids/{id}/renditions`)."
    )


def grid_public(
    grid: Job, svc: Services, *, cells: list[Job | None] | None = None, deliveries: list[dict[str, Any]] | None = None
) -> GridPublic:
    """The grid as clients see it; its cells are read from the store unless given."""
    plan = plan_of(grid)
    storage = svc.storage
    jobs = cells if cells is not None else cell_jobs(svc, grid)
    if deliveries is None:
        deliveries = svc.store.public_extras(grid.id)[1]
    public_cells = []
    for cell, job in zip(plan.cells, jobs, strict=True):
        total = cell.request.denoising_steps()
        public_cells.append(
            GridCellPublic(
                index=cell.index,
                x=cell.x,
                y=cell.y,
                x_label=cell.x_label,
                y_label=cell.y_label,
                id=job.id if job is not None else cell_id(grid.id, cell.index),
                status=job.status if job is not None else None,
                step=total
                if job is not None and job.status == JobStatus.succeeded
                else (job.progress.step if job else 0),
                total=total,
                video=video_public(job.video, storage) if job is not None and job.video is not None else None,
                error=job.error if job is not None else None,
            )
        )
    base = f"{svc.settings.public_base_url.rstrip('/')}/grids/{grid.id}"
    return GridPublic(
        id=grid.id,
        status=grid.status,
        created_at=grid.created_at,
        updated_at=grid.updated_at,
        started_at=grid.started_at,
        finished_at=grid.finished_at,
        seed=grid.seed,
        x=plan.x,
        y=plan.y,
        allow_partial=plan.allow_partial,
        progress=GridProgress(
            cells_done=sum(1 for c in public_cells if c.status is not None and c.status.is_terminal()),
            cells_total=len(public_cells),
            steps_done=sum(min(c.step, c.total) for c in public_cells),
            steps_total=sum(c.total for c in public_cells),
        ),
        cells=public_cells,
        video=video_public(grid.video, storage) if grid.video is not None else None,
        error=grid.error,
        warnings=grid.warnings,
        urls=GridUrls(get=base, cancel=f"{base}/cancel", stream=f"{base}/events"),
        webhook_deliveries=[WebhookDeliveryPublic.model_validate(r) for r in deliveries],
        base=grid.request,
        renditions=[rendition_public(r, storage) for r in grid.renditions],
    )

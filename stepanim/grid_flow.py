"""A grid's way through the service: fanned out to its cells, waiting for them, composed.

The API stores the grid (a job of kind ``grid``, admitted like any job: one place in its
key's quota, its Idempotency-Key) and sends the grid task (``encoder.tasks``). That task
calls :func:`advance` every time it runs; it is sent again whenever one of the grid's cells
finishes (``stepanim.lifecycle``), and by the reconciler when a grid waits for nothing, so
every step below is idempotent:

1. **fan out**: every cell becomes an ordinary animation job (id ``cell_id(grid, i)``, the
   same on every try; not listed, no quota place, no webhook) whose render task goes to the
   render queue, so the render workers share the cells like any other jobs; the grid becomes
   ``rendering``.
2. **wait** while any cell is unfinished.
3. **compose** once every cell has succeeded (or, with ``allow_partial``, some have): the grid
   becomes ``encoding`` and the encoder composes its video (``encoder.grid``); or **fail** with
   the cells' errors.

Canceling a grid cancels its cells (:func:`cancel_grid`).
"""

from __future__ import annotations

import logging

from stepanim import lifecycle
from stepanim.admission import admit_now
from stepanim.grids import Cell, CellOutcome, GridPlan, cell_id, next_step
from stepanim.jobs import Job, JobImage, JobStatus, Progress, utcnow
from stepanim.queues import enqueue_render
from stepanim.services import Services

log = logging.getLogger(__name__)


def plan_of(grid: Job) -> GridPlan:
    if grid.grid is None:
        raise ValueError(f"job {grid.id} is not a grid")
    return grid.grid


def cell_job(grid: Job, cell: Cell) -> Job:
    """The animation job of one cell: the cell's request, the grid's seed unless the cell has its own."""
    now = utcnow()
    return Job(
        id=cell_id(grid.id, cell.index),
        request=cell.request,
        model=cell.request.model or grid.model,
        seed=cell.request.seed if cell.request.seed is not None else grid.seed,
        created_at=now,
        updated_at=now,
        progress=Progress(step=0, total=cell.request.steps),
        tenant=grid.tenant,
        parent=grid.id,
        cell=cell.index,
        warnings=[],
    )


def cell_jobs(svc: Services, grid: Job) -> list[Job | None]:
    """Each cell's job, in cell order (None where it does not exist yet)."""
    return svc.store.get_many([cell_id(grid.id, cell.index) for cell in plan_of(grid).cells])


def outcome(job: Job | None) -> CellOutcome | None:
    if job is None:
        return None
    if not job.status.is_terminal():
        return "open"
    return "succeeded" if job.status == JobStatus.succeeded else "failed"


def advance(svc: Services, grid: Job) -> Job | None:
    """Move the grid on (see the module docstring). Returns the grid, now ``encoding``, when its
    video is to be composed; None when there is nothing (more) to do now."""
    plan = plan_of(grid)
    for _ in range(2):  # a fan-out that finds every cell already finished decides again
        cells = cell_jobs(svc, grid)
        step = next_step(grid.status.value, [outcome(job) for job in cells], allow_partial=plan.allow_partial)
        if step == "fan_out":
            if not fan_out(svc, grid, cells):
                return None
            grid = svc.store.get(grid.id)
            continue
        if step == "fail":
            lifecycle.fail(svc, grid.id, "cells_failed", failure_message(plan, cells))
            return None
        if step == "compose":
            try:
                return lifecycle.start_encoding(svc, grid.id, [JobImage(batch_index=0, seed=grid.seed, frames=[])])
            except lifecycle.TransitionError:
                return None  # canceled meanwhile
        return None
    return None


def fan_out(svc: Services, grid: Job, cells: list[Job | None]) -> bool:
    """Store the cells that do not exist yet, send their render tasks, mark the grid ``rendering``.
    False when the grid was canceled meanwhile (its cells are then canceled too)."""
    made = []
    for cell, job in zip(plan_of(grid).cells, cells, strict=True):
        if job is None:
            new = cell_job(grid, cell)
            admit_now(svc.store, new, listed=False)
            made.append(new.id)
    for job_id in made:
        enqueue_render(svc.celery, job_id)
    if made:
        log.info("grid %s: %d cells sent to the render workers", grid.id, len(made), extra={"job_id": grid.id})
    try:
        lifecycle.start_rendering(svc, grid.id)
    except lifecycle.TransitionError:
        cancel_cells(svc, grid)
        return False
    return True


def cancel_cells(svc: Services, grid: Job) -> None:
    for job in cell_jobs(svc, grid):
        if job is not None and not job.status.is_terminal():
            lifecycle.request_cancel(svc, job.id)


def cancel_grid(svc: Services, grid: Job) -> Job:
    """A client's cancel of a grid: the grid ends ``canceled`` now and each unfinished cell is
    canceled as a job would be (a rendering one within a step). Raises TransitionError when the
    grid had already finished."""
    svc.store.request_cancel(grid.id)  # a composing encoder stops
    grid = lifecycle.cancel(svc, grid.id)
    cancel_cells(svc, grid)
    return grid


def failure_message(plan: GridPlan, cells: list[Job | None]) -> str:
    """Which cells did not succeed, and why."""
    parts = []
    for cell, job in zip(plan.cells, cells, strict=True):
        if job is None or job.status == JobStatus.succeeded:
            continue
        where = ", ".join(
            f"{axis.field} {value}" for axis, value in ((plan.x, cell.x_label), (plan.y, cell.y_label)) if axis
        )
        why = f"{job.error.code}: {job.error.message}" if job.error else job.status.value
        parts.append(f"cell {cell.index} ({where}): {why}")
    return "; ".join(parts) or "no cell succeeded"

"""Nothing accepted is lost: the reconciler re-enqueues jobs nobody works on.

Celery's Redis transport hands an unacknowledged task back only after
``visibility_timeout`` (hours, since it must exceed the longest job), and a whole worker
killed with ``kill -9`` is not covered by ``task_reject_on_worker_lost``. So each job
says by itself whether someone works on it: a working task holds the job's lease
(``stepanim.leases``).

A loop (``python -m stepanim.reconcile``; several replicas are safe, a Redis lock lets one
act per period) walks the open jobs every ``reconcile_interval_seconds`` and re-enqueues
the stage task of each job that nobody works on and that nothing in the broker will start:
no lease, no message waiting in its queue, no message delivered in the last
``lease_seconds`` (:func:`decide`, pure). That covers a killed worker, a message lost with
a Redis that kept no data, and a job stored by the API that died before sending its task
(``stepanim.admission``). After ``reconcile_max_requeues`` re-enqueues a job fails with code
``lost``, so a job that kills its worker every time cannot loop forever.

Idempotent tasks make the rare duplicate harmless: storage keys are deterministic, each
task re-reads the job and returns when its stage is done, and a repeated status
transition is a no-op (one webhook, one video).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from stepanim import lifecycle, metrics
from stepanim.broker import message_job
from stepanim.grids import cell_id
from stepanim.jobs import Job, JobStatus, utcnow
from stepanim.queues import (
    ENCODE_QUEUE,
    ENCODE_TASK,
    GRID_TASK,
    RENDER_QUEUE,
    RENDER_TASK,
    enqueue_encode,
    enqueue_grid,
    enqueue_render,
)
from stepanim.services import Services
from stepanim.settings import Settings, get_settings

log = logging.getLogger(__name__)


# The decision: pure -------------------------------------------------------------------
class Action(StrEnum):
    keep = "keep"  # someone works on it, or a message will start it
    forget = "forget"  # terminal (or gone): drop it from the open set
    requeue_render = "requeue_render"
    requeue_encode = "requeue_encode"
    requeue_grid = "requeue_grid"


@dataclass(frozen=True)
class Observation:
    """What the reconciler sees of one open job."""

    status: JobStatus | None  # None: the record is gone (expired or deleted)
    updated_at: float  # last change of the record (epoch seconds)
    leased: bool  # a live task holds the job's lease
    waiting: bool  # a message for the job's current stage waits in its queue
    delivered_at: float | None = None  # newest unacknowledged delivery of that message
    grid: bool = False  # a grid: its own task (stepanim.grid_flow) moves it on at every status
    resent: bool = False  # the reconciler sent its task less than a lease ago (still on its way)


def stage_of(job: Job) -> str:
    """The stage (and lease) that moves a job on from its status: "render", "encode" or "grid"."""
    if job.kind == "grid":
        return "grid"
    return "encode" if job.status == JobStatus.encoding else "render"


STAGE_TASK = {"render": RENDER_TASK, "encode": ENCODE_TASK, "grid": GRID_TASK}


def decide(obs: Observation, *, now: float, grace: float) -> Action:
    """Whether a job is lost. ``grace`` (the lease length) covers the short moments in which a
    job is legitimately in no list: between store and enqueue, between delivery and lease, and
    after the reconciler sent its task again (a message popped from its queue is in no list
    until the worker has filed it as unacknowledged)."""
    if obs.status is None or obs.status.is_terminal():
        return Action.forget
    if obs.leased or obs.waiting or obs.resent:
        return Action.keep
    if obs.delivered_at is not None and now - obs.delivered_at < grace:
        return Action.keep
    if now - obs.updated_at < grace:
        return Action.keep
    if obs.grid:
        return Action.requeue_grid
    return Action.requeue_encode if obs.status == JobStatus.encoding else Action.requeue_render


# One pass ---------------------------------------------------------------------------
@dataclass
class Report:
    open: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    failed_lost: list[str] = field(default_factory=list)


def observe(svc: Services, job_ids: list[str]) -> list[Observation]:
    """Read records and leases first, then the broker: a message that moves from its queue
    to a worker between the reads is then seen in one place or the other."""
    jobs = svc.store.get_many(job_ids)
    stages = [stage_of(job) if job is not None else "render" for job in jobs]
    holders = svc.leases.holders(list(zip(job_ids, stages, strict=True)))
    resent = svc.store.resent(job_ids)
    # A rendering grid is worked on while any of its cells is (the cells are reconciled themselves).
    busy_grids = {
        job.id for job in jobs if job is not None and job.status == JobStatus.rendering and cells_open(svc, job)
    }
    waiting_raw, unacked_raw = (
        svc.broker.broker_messages([RENDER_QUEUE, ENCODE_QUEUE]) if svc.broker is not None else ([], [])
    )
    waiting = {found for raw in waiting_raw if (found := message_job(raw)) is not None}
    delivered: dict[tuple[str, str], float] = {}
    for raw, at in unacked_raw:
        found = message_job(raw)
        if found is not None:
            delivered[found] = max(at, delivered.get(found, 0.0))
    observations = []
    for job_id, job, stage, holder, again in zip(job_ids, jobs, stages, holders, resent, strict=True):
        if job is None:
            observations.append(Observation(status=None, updated_at=0.0, leased=False, waiting=False))
            continue
        key = (STAGE_TASK[stage], job_id)
        observations.append(
            Observation(
                status=job.status,
                updated_at=job.updated_at.timestamp(),
                leased=holder is not None or job_id in busy_grids,
                waiting=key in waiting,
                delivered_at=delivered.get(key),
                grid=job.kind == "grid",
                resent=again,
            )
        )
    return observations


def cells_open(svc: Services, grid: Job) -> bool:
    if grid.grid is None:
        return False
    cells = svc.store.get_many([cell_id(grid.id, cell.index) for cell in grid.grid.cells])
    return any(job is not None and not job.status.is_terminal() for job in cells)


def reconcile_once(svc: Services) -> Report:
    """Look at every open job once; re-enqueue the lost ones. Returns what it did."""
    settings = svc.settings
    store = svc.store
    job_ids = store.open_job_ids()
    report = Report(open=len(job_ids))
    now = utcnow().timestamp()
    for job_id, obs in zip(job_ids, observe(svc, job_ids), strict=True):
        action = decide(obs, now=now, grace=settings.lease_seconds)
        if action == Action.requeue_render and svc.leases.holders([(job_id, "render")])[0] is not None:
            action = Action.keep  # a worker took it while we looked
        if action == Action.requeue_encode and svc.leases.holders([(job_id, "encode")])[0] is not None:
            action = Action.keep
        if action == Action.requeue_grid and svc.leases.holders([(job_id, "grid")])[0] is not None:
            action = Action.keep
        report.actions[action.value] += 1
        if action == Action.forget:
            store.mark_closed(job_id)
        elif action != Action.keep:
            _requeue(svc, job_id, action, report)
    if any(report.actions.get(a) for a in (Action.requeue_render, Action.requeue_encode, Action.requeue_grid)):
        log.info("reconciler: %d open jobs, %s", report.open, dict(report.actions))
    return report


def _requeue(svc: Services, job_id: str, action: Action, report: Report) -> None:
    stage = {Action.requeue_encode: "encode", Action.requeue_grid: "grid"}.get(action, "render")
    count = svc.store.count_requeue(job_id, in_flight_seconds=svc.settings.lease_seconds)
    if count > svc.settings.reconcile_max_requeues:
        message = f"the job lost its worker {count} times (last in {stage}); giving up"
        log.error("reconciler: job %s: %s", job_id, message, extra={"job_id": job_id})
        try:
            lifecycle.fail(svc, job_id, "lost", message)
        except lifecycle.TransitionError:
            return  # it finished after all
        report.failed_lost.append(job_id)
        return
    log.warning("reconciler: job %s lost its %s task; re-enqueued (%d)", job_id, stage, count, extra={"job_id": job_id})
    if stage == "encode":
        enqueue_encode(svc.celery, job_id)
    elif stage == "grid":
        enqueue_grid(svc.celery, job_id)
    else:
        enqueue_render(svc.celery, job_id)
    metrics.count(svc.store, "stepanim_reconciler_requeues", stage=stage)


# The loop ---------------------------------------------------------------------------
def run(settings: Settings, *, stop: threading.Event, heartbeat: Path | None = None) -> None:
    """Reconcile every ``reconcile_interval_seconds`` until ``stop`` is set; touch ``heartbeat``
    (when given) after every pass, so a container health check can tell a stuck loop."""
    svc = Services.from_settings(settings)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    interval = settings.reconcile_interval_seconds
    log.info("reconciler: every %.1fs, lease %ds", interval, settings.lease_seconds)
    while not stop.is_set():
        try:
            if svc.leases.try_lock("reconcile", owner, ttl=max(3 * interval, 5)):
                reconcile_once(svc)
                metrics.count(svc.store, "stepanim_reconciler_runs")
        except Exception:  # Redis restarting, say: keep going
            log.exception("reconciler: pass failed")
        else:
            if heartbeat is not None:
                heartbeat.touch()
        stop.wait(interval)


def alive(heartbeat: Path, *, within: float) -> bool:
    """Whether the loop writing ``heartbeat`` finished a pass in the last ``within`` seconds."""
    try:
        return time.time() - heartbeat.stat().st_mtime <= within
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    from stepanim.logs import setup_logging

    parser = argparse.ArgumentParser(description="Re-enqueue jobs whose worker was lost (see the module docstring).")
    parser.add_argument("--heartbeat", type=Path, help="touch this file after every pass")
    parser.add_argument(
        "--check", type=Path, metavar="HEARTBEAT", help="health check: exit 0 if that file was touched lately, else 1"
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.check is not None:  # three missed passes, or a pass stuck for a minute, is unhealthy
        return 0 if alive(args.check, within=max(3 * settings.reconcile_interval_seconds, 60.0)) else 1
    setup_logging(service="reconciler", level=settings.log_level, fmt=settings.log_format)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(settings, stop=stop, heartbeat=args.heartbeat)
    log.info("reconciler: stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Nothing accepted is lost: job leases kept by working tasks, and the reconciler.

Celery's Redis transport hands an unacknowledged task back only after
``visibility_timeout`` (hours, since it must exceed the longest job), and a whole worker
killed with ``kill -9`` is not covered by ``task_reject_on_worker_lost``. So each job
says by itself whether someone works on it:

* **Lease.** A render or encode task takes the job's lease before it works
  (:func:`acquire_lease`); a heartbeat thread renews it every ``lease_seconds / 3``.
  When the task ends, Celery's ``task_postrun`` signal releases it, or hands it to the
  task's own retry (so the reconciler does not start a second copy while the retry
  waits). A task that finds the lease held by someone else returns at once: another
  live process works on that job (a duplicate delivery).
* **Reconciler.** A loop (``python -m stepanim.reconcile``; several replicas are safe,
  a Redis lock lets one act per period) walks the open jobs every
  ``reconcile_interval_seconds`` and re-enqueues the stage task of each job that nobody
  works on and that nothing in the broker will start: no lease, no message waiting in
  its queue, no message delivered in the last ``lease_seconds`` (:func:`decide`). After
  ``reconcile_max_requeues`` re-enqueues a job fails with code ``lost``, so a job that
  kills its worker every time cannot loop forever.
* **Idempotent tasks** make the rare duplicate harmless: storage keys are deterministic,
  each task re-reads the job and returns when its stage is done, and a repeated
  status transition is a no-op (one webhook, one video).
"""

from __future__ import annotations

import argparse
import base64
import json
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
from typing import Any

from stepanim import lifecycle
from stepanim.jobs import JobStatus, utcnow
from stepanim.queues import ENCODE_QUEUE, ENCODE_TASK, RENDER_QUEUE, RENDER_TASK, enqueue_encode, enqueue_render
from stepanim.services import Services
from stepanim.settings import Settings, get_settings
from stepanim.store import JobStore

log = logging.getLogger(__name__)

# A retry waits at most this long before it runs again (stepanim.retries caps its
# countdown here); the lease handed to a retry lives this much longer than a lease.
MAX_RETRY_COUNTDOWN = 60


# The decision: pure -------------------------------------------------------------------
class Action(StrEnum):
    keep = "keep"  # someone works on it, or a message will start it
    forget = "forget"  # terminal (or gone): drop it from the open set
    requeue_render = "requeue_render"
    requeue_encode = "requeue_encode"


@dataclass(frozen=True)
class Observation:
    """What the reconciler sees of one open job."""

    status: JobStatus | None  # None: the record is gone (expired or deleted)
    updated_at: float  # last change of the record (epoch seconds)
    leased: bool  # a live task holds the job's lease
    waiting: bool  # a message for the job's current stage waits in its queue
    delivered_at: float | None = None  # newest unacknowledged delivery of that message


def stage_of(status: JobStatus) -> str:
    """The stage (and lease) that moves a job on from ``status``: "render" or "encode"."""
    return "encode" if status == JobStatus.encoding else "render"


STAGE_TASK = {"render": RENDER_TASK, "encode": ENCODE_TASK}


def decide(obs: Observation, *, now: float, grace: float) -> Action:
    """Whether a job is lost. ``grace`` (the lease length) covers the short moments in which a
    job is legitimately in no list: between store and enqueue, between delivery and lease."""
    if obs.status is None or obs.status.is_terminal():
        return Action.forget
    if obs.leased or obs.waiting:
        return Action.keep
    if obs.delivered_at is not None and now - obs.delivered_at < grace:
        return Action.keep
    if now - obs.updated_at < grace:
        return Action.keep
    return Action.requeue_encode if obs.status == JobStatus.encoding else Action.requeue_render


def message_job(raw: bytes | str) -> tuple[str, str] | None:
    """``(task name, job id)`` of a Celery message as kombu stores it in Redis, else None.

    Waiting messages are the message itself; unacknowledged ones are
    ``[message, exchange, routing_key]``. The body is ``[args, kwargs, embed]``, base64.
    """
    try:
        message = json.loads(raw)
        if isinstance(message, list):
            message = message[0]
        task = message["headers"]["task"]
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        if isinstance(task, str) and args and isinstance(args[0], str):
            return task, args[0]
    except (ValueError, KeyError, IndexError, TypeError):
        pass
    return None


# One pass ---------------------------------------------------------------------------
@dataclass
class Report:
    open: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    failed_lost: list[str] = field(default_factory=list)


def observe(store: JobStore, job_ids: list[str]) -> list[Observation]:
    """Read records and leases first, then the broker: a message that moves from its queue
    to a worker between the reads is then seen in one place or the other."""
    jobs = store.get_many(job_ids)
    stages = [stage_of(job.status) if job is not None else "render" for job in jobs]
    holders = store.lease_holders(list(zip(job_ids, stages, strict=True)))
    waiting_raw, unacked_raw = store.broker_messages([RENDER_QUEUE, ENCODE_QUEUE])
    waiting = {found for raw in waiting_raw if (found := message_job(raw)) is not None}
    delivered: dict[tuple[str, str], float] = {}
    for raw, at in unacked_raw:
        found = message_job(raw)
        if found is not None:
            delivered[found] = max(at, delivered.get(found, 0.0))
    observations = []
    for job_id, job, stage, holder in zip(job_ids, jobs, stages, holders, strict=True):
        if job is None:
            observations.append(Observation(status=None, updated_at=0.0, leased=False, waiting=False))
            continue
        key = (STAGE_TASK[stage], job_id)
        observations.append(
            Observation(
                status=job.status,
                updated_at=job.updated_at.timestamp(),
                leased=holder is not None,
                waiting=key in waiting,
                delivered_at=delivered.get(key),
            )
        )
    return observations


def reconcile_once(svc: Services) -> Report:
    """Look at every open job once; re-enqueue the lost ones. Returns what it did."""
    settings = svc.settings
    store = svc.store
    job_ids = store.open_job_ids()
    report = Report(open=len(job_ids))
    now = utcnow().timestamp()
    for job_id, obs in zip(job_ids, observe(store, job_ids), strict=True):
        action = decide(obs, now=now, grace=settings.lease_seconds)
        if action == Action.requeue_render and store.lease_holders([(job_id, "render")])[0] is not None:
            action = Action.keep  # a worker took it while we looked
        if action == Action.requeue_encode and store.lease_holders([(job_id, "encode")])[0] is not None:
            action = Action.keep
        report.actions[action.value] += 1
        if action == Action.forget:
            store.mark_closed(job_id)
        elif action != Action.keep:
            _requeue(svc, job_id, action, report)
    if report.actions.get(Action.requeue_render) or report.actions.get(Action.requeue_encode):
        log.info("reconciler: %d open jobs, %s", report.open, dict(report.actions))
    return report


def _requeue(svc: Services, job_id: str, action: Action, report: Report) -> None:
    from stepanim import metrics

    stage = "encode" if action == Action.requeue_encode else "render"
    count = svc.store.count_requeue(job_id)
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
    else:
        enqueue_render(svc.celery, job_id)
    metrics.count(svc.store, "stepanim_reconciler_requeues", stage=stage)


# Leases held by this process -------------------------------------------------------------
class Lease:
    """A job's lease held by this process, renewed by a daemon thread until released."""

    def __init__(self, store: JobStore, job_id: str, stage: str, owner: str, *, ttl: int) -> None:
        self.store = store
        self.job_id = job_id
        self.stage = stage
        self.owner = owner
        self.ttl = ttl
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{job_id[:8]}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(max(self.ttl / 3, 0.2)):
            try:
                if not self.store.renew_lease(self.job_id, self.stage, self.owner, ttl=self.ttl):
                    log.warning("job %s: lease taken over by someone else", self.job_id, extra={"job_id": self.job_id})
                    return
            except Exception as e:  # Redis away for a moment: try again next beat
                log.warning("job %s: lease renewal failed: %s", self.job_id, e, extra={"job_id": self.job_id})

    def _stop_beating(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def release(self) -> None:
        self._stop_beating()
        self.store.release_lease(self.job_id, self.stage, self.owner)

    def hand_over(self, token: str, *, ttl: int) -> None:
        """Keep the lease for ``ttl`` seconds under ``token``, which only the named successor may take."""
        self._stop_beating()
        self.store.renew_lease(self.job_id, self.stage, self.owner, ttl=ttl, value=token)


_held: dict[str, Lease] = {}  # by Celery task id


def _handover_token(stage: str, task_id: str, retries: int) -> str:
    return f"handover:{stage}:{task_id}:{retries}"


def acquire_lease(svc: Services, job_id: str, *, stage: str, task: Any) -> bool:
    """Take ``job_id``'s lease for the running Celery ``task``; False when another live task holds it.

    The lease is released (or handed to the task's retry) by the ``task_postrun`` hook.
    """
    request = task.request
    owner = f"{stage}:{request.id}:{request.retries}:{socket.gethostname()}:{os.getpid()}"
    takeover = _handover_token(stage, request.id, request.retries)
    ttl = svc.settings.lease_seconds
    if not svc.store.acquire_lease(job_id, stage, owner, ttl=ttl, takeover=takeover):
        log.info("%s: job %s is held by another live task; skipping this delivery", stage, job_id)
        return False
    _held[request.id] = Lease(svc.store, job_id, stage, owner, ttl=ttl)
    return True


def _on_task_postrun(*, task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    lease = _held.pop(task_id or "", None)
    if lease is None:
        return
    try:
        if state == "RETRY":
            token = _handover_token(lease.stage, task_id or "", task.request.retries + 1)
            lease.hand_over(token, ttl=lease.ttl + MAX_RETRY_COUNTDOWN)
        else:
            lease.release()
    except Exception as e:  # the lease then simply expires
        log.warning("job %s: could not release lease: %s", lease.job_id, e)


def install_celery_hooks(*, shutdown_timeout: float) -> None:
    """Release (or hand over) a task's lease when it ends, and bound a warm shutdown.

    SIGTERM makes a Celery worker stop taking tasks and wait for the running ones (warm
    shutdown). If they still run ``shutdown_timeout`` seconds later, the worker turns it
    into a cold shutdown (SIGQUIT to itself): the running task is terminated and its
    message requeued; the job's lease runs out and the reconciler hands it to another
    worker. Installed by ``stepanim.worker_hooks``.
    """
    from celery.signals import task_postrun, worker_shutting_down

    task_postrun.connect(_on_task_postrun, weak=False, dispatch_uid="stepanim.reconcile.postrun")

    def on_shutting_down(*, how: str | None = None, **_: Any) -> None:
        if how != "Warm" or shutdown_timeout <= 0:
            return
        log.warning("warm shutdown: running tasks get %.0fs to finish, then go back to the queue", shutdown_timeout)
        timer = threading.Timer(shutdown_timeout, _hand_back)
        timer.daemon = True
        timer.start()

    worker_shutting_down.connect(on_shutting_down, weak=False, dispatch_uid="stepanim.reconcile.shutdown")


def _hand_back() -> None:
    log.warning("shutdown timeout: handing the running tasks back (cold shutdown)")
    os.kill(os.getpid(), signal.SIGQUIT)


# The loop ---------------------------------------------------------------------------
def run(settings: Settings, *, stop: threading.Event, heartbeat: Path | None = None) -> None:
    """Reconcile every ``reconcile_interval_seconds`` until ``stop`` is set; touch ``heartbeat``
    (when given) after every pass, so a container health check can tell a stuck loop."""
    from stepanim import metrics

    svc = Services.from_settings(settings)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    interval = settings.reconcile_interval_seconds
    log.info("reconciler: every %.1fs, lease %ds", interval, settings.lease_seconds)
    while not stop.is_set():
        try:
            if svc.store.try_lock("reconcile", owner, ttl=max(3 * interval, 5)):
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

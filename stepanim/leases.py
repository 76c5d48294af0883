"""Job leases: "a live process works on this job", kept by the task that works on it.

A render or encode task takes its job's lease before it works (:func:`acquire_lease`); a
heartbeat thread renews it every ``lease_seconds / 3``. When the task ends, Celery's
``task_postrun`` signal releases it, or hands it to the task's own retry (so the reconciler
does not start a second copy while the retry waits). A task that finds the lease held by
someone else returns at once: another live process works on that job (a duplicate
delivery). If the process dies, the lease expires and the reconciler
(``stepanim.reconcile``) hands the job to another worker.

Compare-and-set scripts keep a slow holder from renewing or deleting a lease someone else
took over. The same module keeps the short lock that lets one of several reconcilers act.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

import redis

from stepanim.keys import Keys

log = logging.getLogger(__name__)

# A retry waits at most this long before it runs again (stepanim.retries caps its countdown
# here); the lease handed to a retry lives this much longer than a lease.
MAX_RETRY_COUNTDOWN = 60

_ACQUIRE = """
local v = redis.call('GET', KEYS[1])
if (not v) or v == ARGV[1] or v == ARGV[3] then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1
end
return 0"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) return 1
end
return 0"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0"""


class Leases:
    """The lease keys in Redis (and the reconciler's lock)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self, job_id: str, stage: str, owner: str, *, ttl: int, takeover: str = "") -> bool:
        """Take the lease of the job's ``stage`` if it is free, already ours, or handed over as ``takeover``."""
        return bool(self._acquire(keys=[self.keys.lease(job_id, stage)], args=[owner, ttl, takeover or owner]))

    def renew(self, job_id: str, stage: str, owner: str, *, ttl: int, value: str | None = None) -> bool:
        """Extend our lease (optionally storing ``value`` instead, e.g. a hand-over token)."""
        return bool(self._renew(keys=[self.keys.lease(job_id, stage)], args=[owner, value or owner, ttl]))

    def release(self, job_id: str, stage: str, owner: str) -> bool:
        return bool(self._release(keys=[self.keys.lease(job_id, stage)], args=[owner]))

    def holders(self, leases: list[tuple[str, str]]) -> list[str | None]:
        """Holders of the ``(job_id, stage)`` leases, None where free."""
        if not leases:
            return []
        raws: list[bytes | None] = self.redis.mget([self.keys.lease(job_id, stage) for job_id, stage in leases])  # type: ignore[assignment]
        return [None if raw is None else raw.decode() for raw in raws]

    def try_lock(self, name: str, owner: str, *, ttl: float) -> bool:
        """A short lock (``SET NX PX``) so that one of several replicas acts; ours again if we hold it."""
        key = self.keys.lock(name)
        if self.redis.set(key, owner, nx=True, px=int(ttl * 1000)):
            return True
        held = self.redis.get(key)
        if held is not None and held.decode() == owner:  # type: ignore[union-attr]
            return bool(self.redis.pexpire(key, int(ttl * 1000)))
        return False


class Lease:
    """A job's lease held by this process, renewed by a daemon thread until released."""

    def __init__(self, leases: Leases, job_id: str, stage: str, owner: str, *, ttl: int) -> None:
        self.leases = leases
        self.job_id = job_id
        self.stage = stage
        self.owner = owner
        self.ttl = ttl
        self.lost = threading.Event()  # set when someone else took the lease over
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{job_id[:8]}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(max(self.ttl / 3, 0.2)):
            try:
                if not self.leases.renew(self.job_id, self.stage, self.owner, ttl=self.ttl):
                    log.warning("job %s: lease taken over by someone else", self.job_id, extra={"job_id": self.job_id})
                    self.lost.set()
                    return
            except Exception as e:  # Redis away for a moment: try again next beat
                log.warning("job %s: lease renewal failed: %s", self.job_id, e, extra={"job_id": self.job_id})

    def _stop_beating(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def release(self) -> None:
        self._stop_beating()
        self.leases.release(self.job_id, self.stage, self.owner)

    def hand_over(self, token: str, *, ttl: int) -> None:
        """Keep the lease for ``ttl`` seconds under ``token``, which only the named successor may take."""
        self._stop_beating()
        self.leases.renew(self.job_id, self.stage, self.owner, ttl=ttl, value=token)


held: dict[str, Lease] = {}  # the leases of this process's running tasks, by Celery task id


def _handover_token(stage: str, task_id: str, retries: int) -> str:
    return f"handover:{stage}:{task_id}:{retries}"


def acquire_lease(leases: Leases, job_id: str, *, stage: str, task: Any, ttl: int) -> Lease | None:
    """Take ``job_id``'s lease for the running Celery ``task``; None when another live task holds it.

    The lease is released (or handed to the task's retry) by the ``task_postrun`` hook.
    """
    request = task.request
    owner = f"{stage}:{request.id}:{request.retries}:{socket.gethostname()}:{os.getpid()}"
    takeover = _handover_token(stage, request.id, request.retries)
    if not leases.acquire(job_id, stage, owner, ttl=ttl, takeover=takeover):
        log.info("%s: job %s is held by another live task; skipping this delivery", stage, job_id)
        return None
    lease = held[request.id] = Lease(leases, job_id, stage, owner, ttl=ttl)
    return lease


def release_lease(task: Any) -> None:
    """Release the running ``task``'s lease now, before it ends (a successor it hands the job to
    must find the lease free); the ``task_postrun`` hook then has nothing left to do."""
    lease = held.pop(task.request.id, None)
    if lease is not None:
        lease.release()


def on_task_postrun(*, task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    """Release the ending task's lease, or hand it to the task's retry."""
    lease = held.pop(task_id or "", None)
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


def install_celery_hooks() -> None:
    """Release (or hand over) a task's lease when it ends (``stepanim.worker_hooks``)."""
    from celery.signals import task_postrun

    task_postrun.connect(on_task_postrun, weak=False, dispatch_uid="stepanim.leases.postrun")

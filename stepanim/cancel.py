"""Watching a job's cancel flag: the one cancellation signal of the render and encode workers.

A client's cancel sets the job's flag and publishes on the channel of the same name
(``JobStore.request_cancel``). The sampling loop must learn of it within one step, and an
encode within a moment, but a Redis round trip per step costs more than a tiny model's
step on a CPU. So a :class:`CancelWatch` thread subscribes to the channel and re-reads the
flag every ``recheck_seconds``, in case a message was missed (a cancel sent before the
subscription, a Redis restart); the worker only reads an Event.

A render canceled with ``run_on_incomplete`` clears the flag when it hands its partial
frames to the encoder (``worker.tasks``): the encoder then stops only for a new cancel.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import redis

from stepanim.store import JobStore

log = logging.getLogger(__name__)


class CancelWatch:
    def __init__(self, store: JobStore, job_id: str, *, recheck_seconds: float = 1.0) -> None:
        self.store = store
        self.job_id = job_id
        self.recheck_seconds = recheck_seconds
        self._canceled = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cancel-{job_id[:8]}", daemon=True)

    def __enter__(self) -> CancelWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        # Not joined: the thread may be waiting up to recheck_seconds for a message, and the
        # render must not wait for it; it sees the stop and ends (closing its subscription) by itself.
        self._stop.set()

    def is_set(self) -> bool:
        """Whether a cancel was seen; costs no I/O."""
        return self._canceled.is_set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.store.cancel_subscription(self.job_id) as sub:
                    while not self._stop.is_set():
                        # Subscribed first, then read: a cancel between the two is in the flag or the channel.
                        if self.store.cancel_requested(self.job_id):
                            self._canceled.set()
                            return
                        if sub.get_message(timeout=self.recheck_seconds) is not None:
                            self._canceled.set()
                            return
            except (redis.RedisError, OSError, ValueError) as e:
                if self._stop.is_set():
                    return  # the render is over (its client may be closed already): nothing to watch
                # Redis away for a moment: try again, the flag outlives it.
                log.warning("cancel watch for job %s: %s; retrying", self.job_id, e)
                self._stop.wait(0.5)

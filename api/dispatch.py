"""Render tasks sent by one thread per API process, off the request path.

``POST /animations`` stores its job with one admission script (``stepanim.admission``) and
hands the job's id to the :class:`TaskSender`, which sends the render task with Celery's
public API on a thread of its own, every id waiting at that moment through one producer
(``stepanim.queues.enqueue_renders``). The request never waits for the broker: one thread
sending in order costs far less than a thread hand-off per request (``python -m bench.api``,
docs/performance.md), and a slow broker delays tasks, not answers.

The window this leaves (the job is stored, its task not yet sent) is the one the reconciler
already covers: it sends the render task of a queued job that has none (``stepanim.reconcile``),
as when the API dies between the two (``tests/faults``). On a normal shutdown the sender sends
everything it holds before the process exits.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

_STOP = object()


class TaskSender:
    """``send(job_id)`` from the event loop (never blocks); ``send_many(job_ids)`` runs on the thread.
    ``flush()`` waits until what was handed in before it has been sent (tests)."""

    def __init__(self, send_many: Callable[[list[str]], None]) -> None:
        self._send_many = send_many
        self._waiting: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="render-task-sender", daemon=True)
        self._thread.start()

    def send(self, job_id: str) -> None:
        self._waiting.put(job_id)

    def flush(self, timeout: float = 30) -> bool:
        """Wait until every id handed in before this call has been sent (or its batch failed);
        False if that took longer than ``timeout``."""
        done = threading.Event()
        self._waiting.put(done)
        return done.wait(timeout)

    def close(self, timeout: float = 30) -> None:
        """Send what is waiting, then stop the thread."""
        self._waiting.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._waiting.get()]
            while True:  # everything that is waiting now goes in one batch
                try:
                    batch.append(self._waiting.get_nowait())
                except queue.Empty:
                    break
            stopping = _STOP in batch
            job_ids = [item for item in batch if isinstance(item, str)]
            if job_ids:
                try:
                    self._send_many(job_ids)
                except Exception as e:  # the jobs are stored: the reconciler sends their tasks
                    log.warning(
                        "render tasks of %d stored jobs not sent (%s); the reconciler will send them", len(job_ids), e
                    )
            for item in batch:
                if isinstance(item, threading.Event):  # a flush() waiting for this batch
                    item.set()

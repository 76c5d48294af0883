"""Child processes that end with their parent, however the parent ends.

A worker killed with SIGKILL runs no clean-up: its ffmpeg processes would go on as
orphans, using the CPU for a video nobody will publish, and a Celery pool process whose
main process is gone would go on holding its job's lease. On Linux a process can ask to
be sent a signal when its parent dies (``prctl(PR_SET_PDEATHSIG)``); :func:`die_with_parent`
asks for SIGKILL. It is the ``preexec_fn`` of every ffmpeg the encoder starts, and each
worker's pool processes call it when they start (``stepanim.worker_hooks``).

Linux sends the signal when the *thread* that started the child ends, not only the whole
process: ffmpeg is always started by the thread that then waits for it. Elsewhere (macOS)
it does nothing; a worker's own shutdown still stops its ffmpeg processes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1

# Looked up once, in the parent: a child between fork and exec should only call, not load.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """Ask to be SIGKILLed when the parent dies; if it died already, exit now."""
    if _prctl is None:
        return
    parent = os.getppid()
    if _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not allowed here (a sandbox): nothing more to do
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)

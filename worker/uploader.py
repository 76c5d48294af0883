"""Frame uploads from a helper process, for object storage.

An S3 ``put_object`` through boto3 costs 1.3-1.9 ms of Python per call (signing,
serialising, parsing), and the frame thread that makes it shares the interpreter lock
with the sampler: on the tiny model a captured render with every frame put from that
thread took 1.9x a plain one, against 1.1x with local files (docs/performance.md,
"Fourth pass"). So with object storage the render worker hands each batch of encoded
frames to a helper process instead: one message per batch over a pipe, one reply once
every frame of it is stored. The frame thread waits for the reply without the lock,
and the uploads' Python runs in the helper.

The helper is ``python -m worker.uploader``, started on first use, one per render
worker process, with that process's settings. It ends when its pipe closes (the
worker exited or was killed), not on SIGTERM: a warm shutdown lets the worker finish its
render, frames included. If it dies, the batch fails with a :class:`StorageError`
(the render task retries) and the next batch starts a new helper.

Protocol (stdin/stdout of the helper): each message is a 4-byte big-endian length, a
JSON header of that length, then the bodies its header counts. The first message
carries the settings; each later one ``{"items": [[key, content_type, size], ...]}``.
Every message gets one reply of the same framing with no bodies: ``{"ok": true}`` or
``{"error": "..."}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from stepanim.logs import setup_logging
from stepanim.settings import Settings
from stepanim.storage import Storage, StorageError, make_storage

log = logging.getLogger(__name__)

Item = tuple[str, bytes, str]  # key, body, content type
_LENGTH = struct.Struct(">I")
PARALLEL_PUTS = 8  # puts of one batch in flight at once (a batch is at most 8 images: worker.frames)


def frame_uploader(settings: Settings) -> Uploader | None:
    """The uploader a render worker with these settings uses (its helper starts at the first
    batch), or None for frames stored by the frame thread: ``frame_uploader``, where
    ``auto`` means a helper for object storage (a local file write is cheap enough there)."""
    choice = settings.frame_uploader
    if choice == "process" or (choice == "auto" and settings.storage_backend == "s3"):
        return Uploader(settings)
    return None


class Uploader:
    """Stores batches of objects through a helper process (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def put_many(self, items: list[Item]) -> None:
        """Store every item, or raise :class:`StorageError` (some may be stored: puts are idempotent)."""
        if not items:
            return
        header = {"items": [[key, content_type, len(body)] for key, body, content_type in items]}
        with self._lock:
            reply = self._exchange(header, [body for _, body, _ in items])
        if "error" in reply:
            raise StorageError(str(reply["error"]))

    def close(self) -> None:
        """Stop the helper (it also stops by itself when this process ends)."""
        with self._lock:
            self._stop()

    def _exchange(self, header: dict[str, Any], bodies: list[bytes]) -> dict[str, Any]:
        proc = self._started()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            _write(proc.stdin, header, bodies)
            return _read(proc.stdout)
        except (OSError, ValueError, EOFError) as e:
            code = proc.poll()
            self._stop()
            why = f"exited with status {code}" if code is not None else f"failed: {e}"
            raise StorageError(f"frame uploader process {why}") from e

    def _started(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop()
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.uploader"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,  # the protocol; the helper's logs go to the shared stderr
            close_fds=True,
        )
        self._proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            _write(proc.stdin, {"settings": self.settings.model_dump(mode="json")}, [])
            reply = _read(proc.stdout)
        except (OSError, ValueError, EOFError) as e:
            self._stop()
            raise StorageError(f"frame uploader process did not start: {e}") from e
        if "error" in reply:
            self._stop()
            raise StorageError(f"frame uploader process did not start: {reply['error']}")
        log.info("frame uploader process %d started", proc.pid)
        return proc

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            proc.wait(timeout=5)  # its pipe is closed: it ends by itself
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _write(out: IO[bytes], header: dict[str, Any], bodies: list[bytes]) -> None:
    data = json.dumps(header).encode()
    out.write(_LENGTH.pack(len(data)) + data)
    for body in bodies:
        out.write(body)
    out.flush()


def _read(source: IO[bytes]) -> dict[str, Any]:
    head = _read_exactly(source, _LENGTH.size)
    reply: dict[str, Any] = json.loads(_read_exactly(source, _LENGTH.unpack(head)[0]))
    return reply


def _read_exactly(source: IO[bytes], size: int) -> bytes:
    data = source.read(size)
    if data is None or len(data) < size:
        raise EOFError("the pipe closed")
    return data


def serve(source: IO[bytes], replies: IO[bytes]) -> None:
    """The helper's loop: settings first, then one batch per message, until the pipe closes."""
    try:
        first = _read(source)
    except EOFError:
        return
    try:
        settings = Settings(_env_file=None, **first["settings"])
        setup_logging(service="uploader", level=settings.log_level, fmt=settings.log_format)
        storage = make_storage(settings)
    except Exception as e:  # a bad setting: the worker's first batch fails with this message
        _write(replies, {"error": f"{type(e).__name__}: {e}"}, [])
        return
    _write(replies, {"ok": True}, [])
    with ThreadPoolExecutor(max_workers=PARALLEL_PUTS, thread_name_prefix="put") as pool:
        _serve_batches(source, replies, storage, pool)


def _serve_batches(source: IO[bytes], replies: IO[bytes], storage: Storage, pool: ThreadPoolExecutor) -> None:
    while True:
        try:
            header = _read(source)
        except EOFError:
            return  # the render worker closed the pipe or exited
        bodies = [_read_exactly(source, size) for _, _, size in header["items"]]
        # Concurrently: an object store answers a small put in milliseconds (tens on S3), and
        # one at a time would hold the sampler back through the frame queue's backpressure.
        puts = [
            pool.submit(storage.put_bytes, key, body, content_type)
            for (key, content_type, _), body in zip(header["items"], bodies, strict=True)
        ]
        errors = [e for e in (put.exception() for put in puts) if e is not None]  # all of them done
        if not errors:
            _write(replies, {"ok": True}, [])
        elif isinstance(errors[0], StorageError):
            _write(replies, {"error": str(errors[0])}, [])
        else:
            log.error("frame uploader: unexpected error", exc_info=errors[0])
            _write(replies, {"error": f"{type(errors[0]).__name__}: {errors[0]}"}, [])


def main() -> None:
    # A worker's warm shutdown (SIGTERM to its process group) lets its render finish: the
    # helper keeps storing that render's frames and ends when the worker closes the pipe.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The protocol owns stdout: anything else that prints lands on stderr instead.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with replies, os.fdopen(sys.stdin.fileno(), "rb", closefd=False) as source:
        serve(source, replies)


if __name__ == "__main__":
    main()

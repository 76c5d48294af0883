"""Decoding captured latents and writing them as frames, off the sampling thread.

The sampling loop hands each completed step's latents to :class:`FrameWriter`
through a bounded queue (backpressure: sampling waits rather than memory growing).
One background thread decodes the waiting steps in one batch, encodes PNGs, uploads
them, and reports the steps written: every step, but at most one report (one Redis
transaction with an event per step) each ``progress_interval`` seconds, so a fast
sampler does not pay a progress write per step. The thread wakes when a batch is full,
when a report is due, at the end, and once as a batch starts (to time its report), not
at every step: each wake-up takes the interpreter lock from the sampler
(docs/performance.md, "Third pass"). NumPy's BLAS runs one thread in a process that
writes frames (:func:`one_blas_thread`).
"""

from __future__ import annotations

import functools
import queue
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from stepanim.naming import frame_key, frame_name
from stepanim.storage import Storage
from worker.uploader import Uploader

MAX_DECODE_BATCH = 8  # images per decode call (steps x batch size), at least one step

Decoder = Callable[[torch.Tensor], list[np.ndarray]]
OnFrames = Callable[[list[tuple[int, list[str]]]], None]  # (step, the key of each image) of each step written


def encode_png(image: np.ndarray) -> bytes:
    """An HxWx3 uint8 image as PNG (8-bit RGB, no filter, zlib level 1).

    Written by hand: a frame per step is encoded on a thread that shares the interpreter
    with the sampler, and Pillow's encoder spends 4-6x this time in Python on a small
    frame; zlib, the only real work, runs without the interpreter lock.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"encode_png takes HxWx3 uint8 images, not {image.dtype} {image.shape}")
    height, width, _ = image.shape
    rows = np.empty((height, 1 + width * 3), np.uint8)
    rows[:, 0] = 0  # filter type None for every row
    rows[:, 1:] = image.reshape(height, width * 3)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, deflate, no interlace
    return b"".join(
        (_PNG_SIGNATURE, _chunk(b"IHDR", header), _chunk(b"IDAT", zlib.compress(rows.data, 1)), _chunk(b"IEND", b""))
    )


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


@functools.cache
def one_blas_thread() -> None:
    """Limit NumPy's BLAS (OpenBLAS) to one thread in this process, once.

    The only NumPy matrix products in a render worker are the frame thread's (the approx
    decoder's resize), and OpenBLAS would spread each over every core: beside a sampler
    that needs a core, a 128-pixel preview batch took twice the CPU for a slower result
    (docs/performance.md, "Fifth pass"). Torch keeps its own thread pool; this leaves it alone.
    """
    threadpool_limits(1, user_api="blas")


@dataclass
class FrameWriter:
    """Writes frames ``<batch-count><batch-index><step>-<seed>-<prompt>.png`` for one run."""

    storage: Storage
    decode: Decoder
    job_id: str
    prompt: str
    seeds: list[int]
    on_frames: OnFrames
    queue_size: int = 8
    progress_interval: float = 0.25  # seconds between progress reports; a report never waits longer
    uploader: Uploader | None = None  # stores each batch in a helper process; None: storage.put_bytes here
    keys: list[list[str]] = field(default_factory=list)  # keys[batch_index] = frame keys in step order
    _queue: queue.Queue[tuple[int, torch.Tensor] | None] = field(init=False)
    _thread: threading.Thread = field(init=False)
    _error: BaseException | None = field(default=None, init=False)
    _unreported: list[tuple[int, list[str]]] = field(default_factory=list, init=False)
    _reported_at: float = field(default=0.0, init=False)
    _wake: threading.Event = field(default_factory=threading.Event, init=False)
    _batch_steps: int = field(default=1, init=False)  # steps per decode batch (the queue holds at least that)
    _closing: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        one_blas_thread()
        self.keys = [[] for _ in self.seeds]
        self._queue = queue.Queue(maxsize=self.queue_size)
        self._batch_steps = max(1, min(self.queue_size, MAX_DECODE_BATCH // len(self.seeds)))
        self._thread = threading.Thread(target=self._run, name=f"frames-{self.job_id[:8]}", daemon=True)
        self._thread.start()

    def submit(self, step: int, latents: torch.Tensor) -> None:
        """Queue one step's latents (batch dimension first); blocks while the queue is full."""
        while True:
            self._raise_if_failed()
            try:
                self._queue.put((step, latents), timeout=0.5)
                break
            except queue.Full:
                self._wake.set()
        queued = self._queue.qsize()
        # Wake the writer for a full batch, a report due, or a first step (so that it waits
        # for the report with a timeout).
        if queued == 1 or queued >= self._batch_steps or self._report_due_in(waiting=True) == 0:
            self._wake.set()

    def close(self) -> None:
        """Wait for every queued frame to be written; re-raise the writer's error, if any."""
        self._closing = True
        if self._thread.is_alive():
            self._put_sentinel()
            self._thread.join()
        self._raise_if_failed()

    def _put_sentinel(self) -> None:
        while self._thread.is_alive():
            self._wake.set()
            try:
                self._queue.put(None, timeout=0.5)
                self._wake.set()
                return
            except queue.Full:
                continue

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            done = False
            while not done:
                self._wake.clear()
                due = self._report_due_in(waiting=not self._queue.empty())
                if not self._closing and self._queue.qsize() < self._batch_steps and due != 0:
                    self._wake.wait(due)  # None: nothing to write or report until a step arrives
                    continue
                batch: list[tuple[int, torch.Tensor]] = []
                while len(batch) < self._batch_steps:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        done = True
                        break
                    batch.append(item)
                if batch:
                    self._write(batch)
                if done or self._report_due_in() == 0:
                    self._report()
        except BaseException as e:  # handed to the sampling thread by submit()/close()
            self._error = e
            while True:  # unblock a producer waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break

    def _write(self, batch: list[tuple[int, torch.Tensor]]) -> None:
        images = self.decode(torch.cat([latents for _, latents in batch]))
        per_step = len(self.seeds)
        frames: list[tuple[int, str, bytes]] = []  # (batch index, key, PNG)
        for n, (step, _) in enumerate(batch):
            for index, seed in enumerate(self.seeds):
                name = frame_name(batch_count=0, batch_index=index, step=step, seed=seed, prompt=self.prompt)
                frames.append((index, frame_key(self.job_id, name), encode_png(images[n * per_step + index])))
        if self.uploader is not None:
            self.uploader.put_many([(key, png, "image/png") for _, key, png in frames])
        else:
            for _, key, png in frames:
                self.storage.put_bytes(key, png, "image/png")
        for index, key, _ in frames:
            self.keys[index].append(key)
        # Every step is reported, also after a backlog: clients following the job's events
        # see each step, with the newest frame of every image of the batch.
        keys = [key for _, key, _ in frames]
        self._unreported.extend((step, keys[n * per_step : (n + 1) * per_step]) for n, (step, _) in enumerate(batch))

    def _report_due_in(self, *, waiting: bool = False) -> float | None:
        """Seconds until the steps written (or, with ``waiting``, queued) must be reported;
        None when there are none."""
        if not self._unreported and not waiting:
            return None
        return max(0.0, self._reported_at + self.progress_interval - time.monotonic())

    def _report(self) -> None:
        if self._unreported:
            steps, self._unreported = self._unreported, []
            self.on_frames(steps)
            self._reported_at = time.monotonic()

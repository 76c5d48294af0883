"""Decoding captured latents and writing them as frames, off the sampling thread.

The sampling loop hands each completed step's latents to :class:`FrameWriter`
through a bounded queue (backpressure: sampling waits rather than memory growing).
One background thread decodes the waiting steps in one batch, encodes PNGs (Pillow),
stores them (several puts at once) and reports the steps written: every step, but at most
one report (one Redis transaction with an event per step) each ``progress_interval``
seconds, so a fast sampler does not pay a progress write per step. The thread wakes when a
batch is full, when a report is due, at the end, and once as a batch starts (to time its
report), not at every step: each wake-up takes the interpreter lock from the sampler
(docs/performance.md, "Third pass"). On a real model the frame work runs while the GPU
computes the next step (docs/performance.md, "Library code at a real model's step").
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from stepanim.naming import frame_key, frame_name
from stepanim.storage import Storage

MAX_DECODE_BATCH = 8  # images per decode call (steps x batch size), at least one step

Decoder = Callable[[torch.Tensor], list[np.ndarray]]
OnFrames = Callable[[list[tuple[int, list[str]]]], None]  # (step, the key of each image) of each step written


def encode_png(image: np.ndarray) -> bytes:
    """An HxWx3 uint8 image as PNG, by Pillow, with fast compression (frames are many and big;
    the encoder reads them once)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"encode_png takes HxWx3 uint8 images, not {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


PARALLEL_PUTS = 8  # puts of one batch in flight at once: an object store answers each in milliseconds


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
    keys: list[list[str]] = field(default_factory=list)  # keys[batch_index] = frame keys in step order
    _queue: queue.Queue[tuple[int, torch.Tensor] | None] = field(init=False)
    _thread: threading.Thread = field(init=False)
    _error: BaseException | None = field(default=None, init=False)
    _unreported: list[tuple[int, list[str]]] = field(default_factory=list, init=False)
    _reported_at: float = field(default=0.0, init=False)
    _wake: threading.Event = field(default_factory=threading.Event, init=False)
    _batch_steps: int = field(default=1, init=False)  # steps per decode batch (the queue holds at least that)
    _closing: bool = field(default=False, init=False)
    _puts: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self._puts = ThreadPoolExecutor(max_workers=PARALLEL_PUTS, thread_name_prefix=f"put-{self.job_id[:8]}")
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
        self._puts.shutdown()
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
        # The decoders' torch ops on this thread run on one core: a thread of its own gets torch's
        # default team of one OpenMP thread per core, whose spinning threads took CPU from the
        # sampling thread (capture overhead 1.46x instead of 1.17x on the 2-core machine,
        # docs/performance.md). torch.set_num_threads is per thread: the sampling thread keeps its own.
        torch.set_num_threads(1)
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
        # Concurrently: one at a time would hold the sampler back through the queue's backpressure.
        list(self._puts.map(lambda frame: self.storage.put_bytes(frame[1], frame[2], "image/png"), frames))
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

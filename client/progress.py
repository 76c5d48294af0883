"""The progress line of ``stepanim ... --wait``: status, a bar of step/total and an ETA, on stderr
(for a grid, ``GridProgressBar``: cells done as well, the steps of every cell together).

On a terminal the line is redrawn in place; otherwise (logs, pipes) a line is written when
the status changes, on the last step, and at most once a second in between.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from client._core import Event
from client.models import GridPublic

BAR_WIDTH = 24


def format_duration(seconds: float) -> str:
    """``0:07``, ``12:30``, ``1:02:03``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def render_line(status: str, step: int, total: int, eta: float | None, *, width: int = BAR_WIDTH) -> str:
    """One progress line, e.g. ``rendering [##########--------------] 12/30 steps  ETA 0:06``."""
    if status != "rendering" or total <= 0:
        return status
    return bar_line(status, "", step, total, eta, width=width)


def bar_line(status: str, counted: str, step: int, total: int, eta: float | None, *, width: int) -> str:
    """``status``, the bar of ``step``/``total``, ``counted`` (what else is counted, if anything), the
    steps and the ETA until the last step."""
    done = min(step, total)
    filled = round(width * done / total)
    line = f"{status} [{'#' * filled}{'-' * (width - filled)}] {counted}{done}/{total} steps"
    if eta is not None and done < total:
        line += f"  ETA {format_duration(eta)}"
    return line


class ProgressBar:
    """An ``on_event`` callback for ``Client.wait`` that draws the job's progress on ``stream``."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.clock = clock
        self.status = "queued"
        self.step = 0
        self.total = 0
        self.server_eta: float | None = None
        self._first: tuple[float, int] | None = None  # (time, step) of the first progress seen
        self._shown: tuple[object, ...] | None = None
        self._shown_at = 0.0
        self._width = 0

    def __call__(self, event: Event) -> None:
        if event.event == "status" and event.status:
            self.status = event.status
            job = event.animation
            if job is not None:
                self._progress(job.progress.step, job.progress.total)
                self.server_eta = job.progress.eta_seconds
        elif event.event == "progress":
            step, total = event.data.get("step"), event.data.get("total")
            if isinstance(step, int) and isinstance(total, int):
                if self.status == "queued":
                    self.status = "rendering"
                self._progress(step, total)
                self.server_eta = None
        else:
            return  # rendition updates and the like
        self.draw()

    def _progress(self, step: int, total: int) -> None:
        if step > 0 and self._first is None:
            self._first = (self.clock(), step)
        self.step, self.total = step, total

    def eta(self) -> float | None:
        """Seconds of sampling left, from the pace of the steps seen so far (else the server's estimate)."""
        if self._first is not None and self.step > self._first[1]:
            started, first_step = self._first
            per_step = (self.clock() - started) / (self.step - first_step)
            return per_step * max(0, self.total - self.step)
        return self.server_eta

    def line(self) -> str:
        return render_line(self.status, self.step, self.total, self.eta())

    def state(self) -> tuple[object, ...]:
        """What a line shows, but the ETA: a new line is written when it changes."""
        return (self.status, self.step, self.total)

    def draw(self) -> None:
        now = self.clock()
        state = self.state()
        if self.tty:
            text = self.line()
            self.stream.write("\r" + text + " " * max(0, self._width - len(text)))
            self._width = len(text)
        else:
            if state == self._shown:
                return
            important = self._shown is None or state[0] != self._shown[0] or self.step == self.total
            if not important and now - self._shown_at < 1.0:
                return
            self.stream.write(self.line() + "\n")
        self._shown, self._shown_at = state, now
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._shown is not None:
            self.stream.write("\n")
            self.stream.flush()


def render_grid_line(
    status: str, cells_done: int, cells: int, step: int, total: int, eta: float | None, *, width: int = BAR_WIDTH
) -> str:
    """e.g. ``rendering [#####-------------------] 1/6 cells, 12/54 steps  ETA 0:06``."""
    if status not in ("queued", "rendering") or total <= 0:
        return status
    return bar_line(status, f"{cells_done}/{cells} cells, ", step, total, eta, width=width)


class GridProgressBar(ProgressBar):
    """An ``on_progress`` callback for ``Client.wait_grid``: cells done and steps done (all cells together)."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(stream, tty=tty, clock=clock)
        self.cells_done = 0
        self.cells = 0

    def update(self, grid: GridPublic) -> None:
        self.status = grid.status
        self.cells_done, self.cells = grid.progress.cells_done, grid.progress.cells_total
        self._progress(grid.progress.steps_done, grid.progress.steps_total)
        self.draw()

    def state(self) -> tuple[object, ...]:
        return (self.status, self.cells_done, self.step, self.total)

    def line(self) -> str:
        return render_grid_line(self.status, self.cells_done, self.cells, self.step, self.total, self.eta())

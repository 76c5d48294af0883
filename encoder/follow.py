"""What a stream knows of its render, from the job's events. Pure: no I/O.

The render worker appends a ``progress`` event per stored step, with that step's frame of
each image of the batch (``stepanim.lifecycle.record_progress``), and the job's status
changes are events of the same stream. :class:`Followed` folds them, in order, into the
frames stored so far and whether the stream can go on:

- ``restarted``: the render started again (its worker was lost and the job re-enqueued, or
  the task was retried). A second run rewrites the same keys but reports only the steps
  beyond the first run's progress, so a stream cannot tell which frames it has fed are still
  the stored ones: it gives the job back to the post-hoc encode, which reads them all.
- ``status``: the last status seen; ``encoding`` means every frame is stored (the record
  then lists them), a terminal status that there is nothing to publish.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stepanim.events import JobEvent, ProgressEvent, StageEvent, StatusEvent
from stepanim.jobs import JobStatus


@dataclass
class Followed:
    steps: list[list[str]] = field(default_factory=list)  # steps[n - 1]: step n's frame key of each image
    sampling: bool = False  # the render reached its sampling stage
    restarted: bool = False
    status: JobStatus | None = None

    def see(self, event: JobEvent) -> None:
        if isinstance(event, StatusEvent):
            self.status = event.status
        elif isinstance(event, StageEvent):
            if event.stage == "loading_model" and (self.sampling or self.steps):
                self.restarted = True  # a render starts again from its model (worker.render)
            elif event.stage == "sampling":
                self.sampling = True
        elif isinstance(event, ProgressEvent):
            if event.step == len(self.steps) + 1:
                self.steps.append(list(event.frames))
            elif event.step > len(self.steps) + 1:
                self.restarted = True  # steps missing: only a second run skips reports (progress never goes back)

    @property
    def ended(self) -> bool:
        """The job finished without this stream (canceled, failed, or encoded by someone else)."""
        return self.status is not None and self.status.is_terminal()

    @property
    def rendered(self) -> bool:
        """Every frame is stored: the record lists them."""
        return self.status == JobStatus.encoding

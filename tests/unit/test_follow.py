"""What a stream makes of its job's events (encoder.follow): pure."""

from __future__ import annotations

from encoder.follow import Followed
from stepanim.events import ProgressEvent, StageEvent, StatusEvent
from stepanim.jobs import JobStatus


def progress(step: int) -> ProgressEvent:
    return ProgressEvent(step=step, total=5, frames=[f"a{step}", f"b{step}"])


def test_steps_are_taken_in_order_and_the_render_end_is_seen() -> None:
    followed = Followed()
    followed.see(StatusEvent(status=JobStatus.rendering))
    followed.see(StageEvent(stage="loading_model"))
    followed.see(StageEvent(stage="sampling"))
    for step in (1, 2, 2, 3):  # a repeated event changes nothing
        followed.see(progress(step))
    assert followed.steps == [["a1", "b1"], ["a2", "b2"], ["a3", "b3"]]
    assert not followed.rendered and not followed.ended and not followed.restarted
    followed.see(StatusEvent(status=JobStatus.encoding))
    assert followed.rendered and not followed.ended


def test_a_render_that_loads_its_model_again_restarted() -> None:
    followed = Followed()
    for stage in ("loading_model", "sampling", "loading_model"):
        followed.see(StageEvent(stage=stage))  # type: ignore[arg-type]
    assert followed.restarted


def test_missing_steps_mean_a_second_run() -> None:
    followed = Followed()
    followed.see(progress(1))
    followed.see(progress(3))
    assert followed.restarted and followed.steps == [["a1", "b1"]]


def test_a_terminal_status_ends_the_stream() -> None:
    for status in (JobStatus.canceled, JobStatus.failed, JobStatus.succeeded):
        followed = Followed()
        followed.see(StatusEvent(status=status))
        assert followed.ended and not followed.rendered

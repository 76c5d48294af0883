import itertools
import math

import pytest

from encoder.timing import MARGIN_STEPS, TAIL_CUTS, plan, segments, tail_split


@pytest.mark.parametrize(
    ("steps", "duration", "fps", "hold", "parts"),
    [(100, 30, 30, 0, 2), (100, 30, 30, 2, 3), (7, 3, 30, 0, 2), (24, 1, 30, 0.5, 3), (50, 0.5, 60, 1, 4)],
)
def test_segments_cover_the_output_once_with_enough_steps(
    steps: int, duration: float, fps: int, hold: float, parts: int
) -> None:
    timeline = plan(steps, duration=duration, fps=fps, hold_last=hold)
    segs = segments(timeline, parts)
    assert segs[0].start == 0 and segs[-1].end == timeline.output_frames
    for left, right in itertools.pairwise(segs):
        assert left.end == right.start  # contiguous, no frame twice or missing
    animated = round(duration * fps)
    rate = timeline.input_rate
    for seg in segs:
        assert seg.start < seg.end
        # every kept output frame lies between steps that were fed, with a margin before
        assert seg.first_step <= max(0, math.floor(seg.start * rate / fps) - MARGIN_STEPS)
        if seg.end_step is not None:
            assert seg.end <= animated  # cuts never fall in the held tail
            # minterpolate makes frames up to the last-but-one step fed
            assert (seg.end_step - 2) / rate >= (seg.end - 1) / fps
    assert segs[-1].end_step is None


def test_few_steps_are_not_split() -> None:
    assert len(segments(plan(6, duration=2, fps=30), 4)) == 1
    assert len(segments(plan(8, duration=2, fps=30), 4)) == 2
    assert len(segments(plan(100, duration=30, fps=30), 1)) == 1


@pytest.mark.parametrize("interpolation", ["none", "blend"])
@pytest.mark.parametrize(
    ("steps", "duration", "fps", "hold"), [(30, 3, 30, 0), (26, 1.5, 30, 0.5), (100, 30, 30, 2), (25, 1, 24, 1)]
)
def test_tail_split_cuts_before_the_last_steps(
    interpolation: str, steps: int, duration: float, fps: int, hold: float
) -> None:
    timeline = plan(steps, duration=duration, fps=fps, hold_last=hold)
    body, tail = tail_split(timeline, interpolation)
    assert (body.start, body.end, tail.start, tail.end) == (0, tail.start, body.end, timeline.output_frames)
    rate = timeline.input_rate
    # the tail shows the last steps and the hold; it is fed from (a little before) its first step
    assert tail.start == round((steps - TAIL_CUTS[interpolation].steps) / rate * fps)
    assert tail.first_step <= math.floor(tail.start * rate / fps) and tail.end_step is None
    # the body is fed every step its frames show, and is closed before the last steps render
    assert body.first_step == 0 and body.end_step is not None
    assert (body.end_step - 1) / rate >= (body.end - 1) / fps
    assert body.end_step <= steps - 2


def test_tail_split_leaves_short_and_interpolated_videos_whole() -> None:
    for interpolation, tail in TAIL_CUTS.items():
        assert tail_split(plan(3 * tail.steps - 1, duration=2, fps=30), interpolation) == []
        assert len(tail_split(plan(3 * tail.steps, duration=2, fps=30), interpolation)) == 2
    assert tail_split(plan(100, duration=3, fps=30), "mci") == []

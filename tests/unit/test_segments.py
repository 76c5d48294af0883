import itertools
import math

import pytest

from encoder.timing import MARGIN_STEPS, plan, segments


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

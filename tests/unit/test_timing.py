from fractions import Fraction

import pytest

from encoder.timing import kept_frames, plan


def test_steps_fill_the_duration_exactly() -> None:
    t = plan(20, duration=5, fps=30)
    assert t.input_rate == Fraction(4)
    assert t.output_frames == 150
    assert t.seconds == 5


def test_fractional_rates_stay_exact() -> None:
    t = plan(7, duration=3, fps=30)
    assert t.input_rate == Fraction(7, 3)
    assert t.output_frames == 90


def test_hold_last_adds_exactly_its_frames() -> None:
    base = plan(10, duration=2, fps=30)
    held = plan(10, duration=2, fps=30, hold_last=1.5)
    assert held.output_frames - base.output_frames == 45
    assert held.seconds == pytest.approx(3.5)


def test_skip_keeps_the_first_kept_frame() -> None:
    # 10 steps, skip 3: steps 4..10 remain, 7 frames (the extension dropped one more).
    assert kept_frames(10, 3) == 7
    assert kept_frames(10, 0) == 10


@pytest.mark.parametrize("skip", [10, 11])
def test_skip_must_leave_a_frame(skip: int) -> None:
    with pytest.raises(ValueError, match="leaves no frame"):
        kept_frames(10, skip)


def test_short_duration_still_has_a_frame() -> None:
    assert plan(1, duration=0.01, fps=1).output_frames == 1


@pytest.mark.parametrize("kwargs", [{"duration": 0, "fps": 30}, {"duration": 1, "fps": 0}])
def test_rejects_nonsense(kwargs: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError):
        plan(5, **kwargs)

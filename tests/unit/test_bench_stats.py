import random

import pytest

from bench.stats import median_interval, paired_ratios


def test_paired_ratios_divide_round_by_round() -> None:
    assert paired_ratios([2.0, 3.0, 5.0], [1.0, 2.0, 4.0]) == [2.0, 1.5, 1.25]


def test_paired_ratios_refuse_unequal_rounds() -> None:
    with pytest.raises(ValueError, match="3 values against 2"):
        paired_ratios([1.0, 2.0, 3.0], [1.0, 2.0])


def test_interval_holds_the_median_and_is_repeatable() -> None:
    rng = random.Random(7)
    samples = [1.05 + rng.gauss(0, 0.03) for _ in range(41)]
    interval = median_interval(samples)
    assert interval.low <= interval.median <= interval.high
    assert interval == median_interval(samples)  # seeded
    assert interval.high - interval.low < 0.05
    assert str(interval).startswith(f"{interval.median:.3f}x [")


def test_interval_narrows_with_more_rounds() -> None:
    rng = random.Random(1)
    few = [1.0 + rng.gauss(0, 0.05) for _ in range(9)]
    many = [1.0 + rng.gauss(0, 0.05) for _ in range(201)]
    width = [(i.high - i.low) for i in (median_interval(few), median_interval(many))]
    assert width[1] < width[0] / 2


def test_constant_samples_give_a_point() -> None:
    interval = median_interval([1.1] * 5)
    assert (interval.low, interval.median, interval.high) == (1.1, 1.1, 1.1)


@pytest.mark.parametrize("confidence", [0, 1, 1.5])
def test_interval_refuses_bad_confidence(confidence: float) -> None:
    with pytest.raises(ValueError, match="confidence"):
        median_interval([1.0, 2.0], confidence=confidence)


def test_interval_refuses_no_samples() -> None:
    with pytest.raises(ValueError, match="no samples"):
        median_interval([])

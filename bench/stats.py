"""Paired ratios and their confidence interval, for benchmarks on a noisy machine.

A benchmark here times a variant and its baseline in the same round (ABBA order), so each
round gives one ratio that the machine's drift from one second to the next mostly cancels
out of. The figure reported is the median of those ratios; the interval says how far that
median could be from the one more rounds would give (a percentile bootstrap: resample the
rounds with replacement, take each resample's median, read the spread of those medians).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    median: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.median:.3f}x [{self.low:.3f}-{self.high:.3f}]"


def paired_ratios(values: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Each round's value over the same round's baseline."""
    if len(values) != len(baseline):
        raise ValueError(f"{len(values)} values against {len(baseline)} baseline rounds")
    return [v / b for v, b in zip(values, baseline, strict=True)]


def median_interval(
    samples: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Interval:
    """The median of ``samples`` and a percentile-bootstrap interval around it (seeded: repeatable)."""
    if not samples:
        raise ValueError("no samples")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    rng = random.Random(seed)
    n = len(samples)
    medians = sorted(statistics.median(rng.choices(samples, k=n)) for _ in range(resamples))
    tail = (1 - confidence) / 2
    low = medians[int(tail * (resamples - 1))]
    high = medians[int((1 - tail) * (resamples - 1) + 0.5)]
    return Interval(statistics.median(samples), low, high)

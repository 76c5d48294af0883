"""Frame timing: how N captured steps fill a video of a given length. Pure functions."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Timeline:
    input_frames: int  # frames fed to ffmpeg (after skipping initial steps)
    input_rate: Fraction  # frames per second at which steps are shown
    fps: int  # output frame rate
    animation_seconds: float  # the steps themselves
    hold_seconds: float  # the last frame, held
    output_frames: int  # exactly this many frames are written

    @property
    def seconds(self) -> float:
        return self.output_frames / self.fps


def kept_frames(total: int, skip_steps: int) -> int:
    """Frames left after skipping the first ``skip_steps``; the first kept step is in the video."""
    if skip_steps < 0:
        raise ValueError("skip_steps must not be negative")
    if skip_steps >= total:
        raise ValueError(f"skip_steps ({skip_steps}) leaves no frame of {total}")
    return total - skip_steps


def plan(frames: int, *, duration: float, fps: int, hold_last: float = 0.0) -> Timeline:
    """Show ``frames`` evenly over ``duration`` seconds at ``fps``, then hold the last one.

    The input rate is ``frames / duration`` (steps per second); the output has exactly
    ``round((duration + hold_last) * fps)`` frames, so its length is exact to one frame.
    """
    if frames < 1:
        raise ValueError("at least one frame is needed")
    if duration <= 0 or fps <= 0 or hold_last < 0:
        raise ValueError("duration and fps must be positive, hold_last not negative")
    rate = Fraction(frames) / Fraction(duration).limit_denominator(1000)
    output = max(1, round((duration + hold_last) * fps))
    return Timeline(
        input_frames=frames,
        input_rate=rate,
        fps=fps,
        animation_seconds=duration,
        hold_seconds=hold_last,
        output_frames=output,
    )


# Segments for parallel motion interpolation ------------------------------------------------
# Each segment feeds minterpolate a few steps before and after its own stretch of output
# (its motion search warms up on them), and keeps only its own output frames.
MARGIN_STEPS = 2
MIN_STEPS_PER_SEGMENT = 4


@dataclass(frozen=True)
class Segment:
    first_step: int  # first input frame fed (0-based, after skipped steps)
    end_step: int | None  # input frames fed stop before this one; None: to the end
    start: int  # first output frame kept
    end: int  # output frames kept stop before this one


def segments(timeline: Timeline, parts: int) -> list[Segment]:
    """Split the output into ``parts`` consecutive stretches that can be interpolated at once.

    Cuts fall inside the animation (never in the held tail, which the last segment
    makes); fewer parts are used when there are too few steps to share out.
    """
    parts = max(1, min(parts, timeline.input_frames // MIN_STEPS_PER_SEGMENT))
    animated = min(timeline.output_frames, round(timeline.animation_seconds * timeline.fps))
    cuts = [round(j * animated / parts) for j in range(1, parts)]
    # minterpolate stops at the last-but-one frame it is fed: feed two more, plus the margin.
    return cut(timeline, cuts, before=MARGIN_STEPS, after=2 + MARGIN_STEPS)


@dataclass(frozen=True)
class TailCut:
    steps: int  # the last steps, a segment of their own
    before: int  # steps fed before a cut (what the filter looks back at)
    after: int  # and past it: the first segment is closed that many steps after the cut


# The last steps of a stream (none, blend) are a segment of their own, so that at the last step
# only their few frames are left to encode: the rest was closed, and flushed through the
# encoder's look-ahead (~40 frames of x264), while these steps rendered. Post hoc cuts the same
# way (the same video). blend's filter makes the flush slower: it is cut earlier (bench.e2e --tail).
TAIL_CUTS = {"none": TailCut(steps=5, before=0, after=2), "blend": TailCut(steps=6, before=1, after=3)}


def tail_split(timeline: Timeline, interpolation: str) -> list[Segment]:
    """The video as [everything before the last ``TAIL_CUTS`` steps, those steps and the hold];
    [] when there are too few steps for the cut to help (the video is then made in one piece)."""
    tail = TAIL_CUTS.get(interpolation)
    if tail is None or timeline.input_frames < 3 * tail.steps:
        return []
    at = round((timeline.input_frames - tail.steps) / timeline.input_rate * timeline.fps)
    return cut(timeline, [at], before=tail.before, after=tail.after)


def cut(timeline: Timeline, cuts: list[int], *, before: int, after: int) -> list[Segment]:
    """Segments of the output cut at output frames ``cuts``; each is fed the steps its frames
    show, with ``before`` steps ahead of them and ``after`` past them (what its filter looks at)."""
    bounds = [0, *cuts, timeline.output_frames]
    steps_per_frame = timeline.input_rate / timeline.fps
    result = []
    for start, end in itertools.pairwise(bounds):
        last = end == timeline.output_frames
        result.append(
            Segment(
                first_step=max(0, math.floor(start * steps_per_frame) - before),
                end_step=None if last else math.ceil((end - 1) * steps_per_frame) + after,
                start=start,
                end=end,
            )
        )
    return result

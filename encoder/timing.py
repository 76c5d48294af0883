"""Frame timing: how N captured steps fill a video of a given length. Pure functions."""

from __future__ import annotations

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

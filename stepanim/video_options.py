"""How captured steps become a video: the codec, timing and frame options of a job's video and of
its renditions. Pure data and validation (``stepanim.request`` holds the rest of a request)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

MAX_FPS = 60
MAX_HOLD_LAST = 30  # seconds


class Codec(StrEnum):
    """Video codec (the extension's table; gif is an animated GIF)."""

    h264 = "h264"
    h265 = "h265"
    vp9 = "vp9"
    av1 = "av1"
    prores = "prores"
    gif = "gif"


class Interpolation(StrEnum):
    """How frames between steps are made: none (hold), blend (cross-fade), mci (motion compensated)."""

    none = "none"
    blend = "blend"
    mci = "mci"


class VideoOptions(BaseModel):
    """How captured steps become one video: the options of a rendition."""

    model_config = ConfigDict(extra="forbid")

    duration: float = Field(5.0, ge=0.5, le=120, description="Length of the step animation in seconds.", examples=[3])
    fps: StrictInt = Field(
        30,
        ge=1,
        le=MAX_FPS,
        description="Output frames per second (a GIF is made at no more than 10, 240 px wide, as the extension did).",
        examples=[30],
    )
    codec: Codec = Field(Codec.h264, description="Video codec; see GET /capabilities.")
    interpolation: Interpolation = Field(
        Interpolation.none, description="none holds each step; blend cross-fades; mci is motion compensated."
    )
    skip_steps: StrictInt = Field(0, ge=0, description="Leave out this many initial (noisiest) steps.", examples=[0])
    hold_last: float = Field(
        0.0, ge=0, le=MAX_HOLD_LAST, description="Seconds the final frame is held after the animation.", examples=[1]
    )


class AnimationOptions(VideoOptions):
    """How the captured steps become a video, and what happens to the frames."""

    run_on_incomplete: StrictBool = Field(
        False,
        description="Make the video from the frames captured so far when the render is canceled or the sampler "
        "exits early; otherwise such a job ends canceled or failed with no video.",
        examples=[False],
    )
    keep_frames: StrictBool = Field(
        True,
        description="Keep the per-step frames after encoding (needed to re-encode later); when false exactly this "
        "job's frames are deleted once its videos are made.",
        examples=[True],
    )
    frames_only: StrictBool = Field(
        False,
        description="Make no video: the job returns signed URLs of its frames and a zip of them.",
        examples=[False],
    )

    @model_validator(mode="after")
    def _frames_only_keeps_frames(self) -> AnimationOptions:
        if self.frames_only and not self.keep_frames:
            raise ValueError("frames_only needs keep_frames: a frames-only job returns its frames")
        return self


MAX_RENDITIONS = 8  # per job, requested up front and added later together


def streamable(options: AnimationOptions) -> bool:
    """Whether a job's video can be encoded while its frames arrive (``encoder.stream``): not a
    frames-only job, and not a GIF (its palette is made from the whole clip)."""
    return not options.frames_only and options.codec != Codec.gif

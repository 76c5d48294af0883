"""What the encoder's ffmpeg can do, and checking requests against it. Pure functions.

Design: the encoder worker probes *its own* ffmpeg once when it starts (``ffmpeg
-encoders`` and ``-filters``, parsed here) and keeps the result published in Redis
(``stepanim.published``); the API reads it from there for ``GET /capabilities``
and to refuse a codec or interpolation that is missing with a 422. This is simpler
and more robust than probing in the API: the binary that matters is the one the
encoder runs (the API image needs no ffmpeg, and may not have the same build), and
the API never imports the encoder package. The newest encoder to publish wins; if
several encoders with different ffmpeg builds share a queue, run the same image.
Until an encoder has reported, ``GET /capabilities`` answers 503 and requests are
not refused for their codec (the encoder then fails a job clearly if it must).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime

from pydantic import BaseModel, Field

from stepanim.video_options import Codec, Interpolation, VideoOptions

_ENCODER_LINE = re.compile(r"^\s*([VAS][F.][S.][X.][B.][D.])\s+(\S+)\s")
_FILTER_LINE = re.compile(r"^\s*([T.][S.][C.]?)\s+(\S+)\s+\S+->\S+")


class Capabilities(BaseModel):
    """Published by the encoder worker at start-up."""

    ffmpeg: str = Field(description="Path of the encoder's ffmpeg binary.")
    ffmpeg_version: str = Field(description="First line of `ffmpeg -version`.")
    codecs: list[Codec] = Field(description="Codecs this ffmpeg can encode.")
    interpolations: list[Interpolation] = Field(description="Interpolation modes this ffmpeg supports.")
    missing: dict[str, str] = Field(
        default_factory=dict, description="What is unavailable, and which encoder or filter it lacks."
    )
    probed_at: datetime


def parse_encoders(text: str) -> set[str]:
    """Video encoder names from ``ffmpeg -hide_banner -encoders``."""
    names = set()
    for line in text.splitlines():
        match = _ENCODER_LINE.match(line)
        if match and match.group(1).startswith("V") and match.group(2) != "=":
            names.add(match.group(2))
    return names


def parse_filters(text: str) -> set[str]:
    """Filter names from ``ffmpeg -hide_banner -filters``."""
    return {m.group(2) for line in text.splitlines() if (m := _FILTER_LINE.match(line))}


def supported(
    needs: Mapping[str, Iterable[str]], *, encoders: set[str], filters: set[str]
) -> tuple[list[str], dict[str, str]]:
    """Which of ``needs`` (name -> encoders/filters it needs) are available, and why the others are not."""
    available = encoders | filters
    ok: list[str] = []
    missing: dict[str, str] = {}
    for name, required in needs.items():
        lacking = [r for r in required if r not in available]
        if lacking:
            missing[name] = f"ffmpeg lacks {', '.join(lacking)}"
        else:
            ok.append(name)
    return ok, missing


def unsupported(options: VideoOptions, caps: Capabilities, *, field: str) -> str | None:
    """A message naming the field when ``options`` asks for something ``caps`` lacks; None when all is there."""
    if options.codec not in caps.codecs:
        have = ", ".join(c.value for c in caps.codecs) or "none"
        return f"{field}.codec: {options.codec.value} is not supported by this server's encoder (supported: {have})"
    if options.interpolation not in caps.interpolations:
        have = ", ".join(i.value for i in caps.interpolations) or "none"
        return (
            f"{field}.interpolation: {options.interpolation.value} is not supported by this server's encoder"
            f" (supported: {have})"
        )
    return None

"""Encoding a sequence of frames into a checked video. Shared by the worker and the CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from encoder.ffmpeg import CODECS, FfmpegError, Probe, build_args, probe, run
from encoder.timing import Timeline, kept_frames, plan
from stepanim.jobs import AnimationOptions, Codec

ARTIST = "Steps Animation Service"
SEQUENCE = "%05d"


def sequence_path(folder: Path, index: int, ext: str = "png") -> Path:
    """Where the ``index``-th (from 1) frame goes for ffmpeg's image2 reader."""
    return folder / f"{SEQUENCE % index}.{ext}"


def metadata(params: dict[str, Any]) -> dict[str, str]:
    """Title (prompt and key parameters), description and comment (all parameters), artist."""
    title = (
        f"{params.get('prompt', '')} | {params.get('model', '')} | {params.get('steps', '')} steps"
        f" | {params.get('scheduler', '')} | seed {params.get('seed', '')}"
    )
    description = json.dumps(params, ensure_ascii=False, sort_keys=True, default=str)
    return {"title": title, "description": description, "comment": description, "artist": ARTIST}


@dataclass(frozen=True)
class Encoded:
    path: Path
    probe: Probe
    timeline: Timeline
    content_type: str


def verify(result: Probe, codec: Codec, timeline: Timeline) -> None:
    """Refuse to publish a video that is not what was asked for."""
    spec = CODECS[codec]
    if result.codec != spec.probe_name:
        raise FfmpegError(f"expected a {spec.probe_name} stream, ffprobe found {result.codec!r}")
    fps = timeline.fps if codec != Codec.gif else 15
    expected = timeline.seconds
    if abs(result.duration - expected) > 1.5 / fps + 0.02:
        raise FfmpegError(f"video lasts {result.duration:.3f}s, expected {expected:.3f}s")
    if result.frames < 1:
        raise FfmpegError("video has no frames")


def encode_sequence(
    folder: Path,
    count: int,
    *,
    options: AnimationOptions,
    output: Path,
    params: dict[str, Any],
    ffmpeg: str,
    ffprobe: str,
    timeout: float,
    ext: str = "png",
) -> Encoded:
    """Encode frames ``00001.<ext>`` .. ``<count>.<ext>`` of ``folder``; the first ``skip_steps`` are left out.

    Raises :class:`FfmpegError` when ffmpeg fails or the probed result is wrong; the
    output file is then removed, so nothing partial is ever published.
    """
    kept = kept_frames(count, options.skip_steps)
    timeline = plan(kept, duration=options.duration, fps=options.fps, hold_last=options.hold_last)
    args = build_args(
        ffmpeg=ffmpeg,
        pattern=folder / f"{SEQUENCE}.{ext}",
        start_number=options.skip_steps + 1,
        output=output,
        timeline=timeline,
        codec=options.codec,
        interpolation=options.interpolation,
        metadata=metadata(params),
    )
    try:
        run(args, timeout=timeout)
        result = probe(ffprobe, output)
        verify(result, options.codec, timeline)
    except BaseException:
        output.unlink(missing_ok=True)
        raise
    return Encoded(path=output, probe=result, timeline=timeline, content_type=CODECS[options.codec].content_type)

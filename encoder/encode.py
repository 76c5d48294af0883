"""Encoding a sequence of frames into a checked video. Shared by the worker and the CLI."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from encoder.ffmpeg import (
    CODECS,
    GIF_FPS,
    FfmpegError,
    Probe,
    build_args,
    concat_args,
    probe,
    run,
    run_all,
    write_listing,
)
from encoder.timing import Segment, Timeline, kept_frames, plan, segments, tail_split
from stepanim.video_options import Codec, Interpolation, VideoOptions

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
    loras = params.get("loras") or []
    if loras:  # as a web UI writes them in its prompt: <lora:name:weight>
        title += " | " + " ".join(f"<lora:{lora.get('name')}:{float(lora.get('weight', 1)):g}>" for lora in loras)
    description = json.dumps(params, ensure_ascii=False, sort_keys=True, default=str)
    return {"title": title, "description": description, "comment": description, "artist": ARTIST}


@dataclass(frozen=True)
class Encoded:
    path: Path
    probe: Probe
    timeline: Timeline
    content_type: str
    commands: list[list[str]]


def timeline_for(options: VideoOptions, kept: int) -> Timeline:
    """The timeline of ``kept`` steps; GIFs are made at no more than ``GIF_FPS``."""
    fps = min(options.fps, GIF_FPS) if options.codec == Codec.gif else options.fps
    return plan(kept, duration=options.duration, fps=fps, hold_last=options.hold_last)


def verify(result: Probe, codec: Codec, timeline: Timeline) -> None:
    """Refuse to publish a video that is not what was asked for."""
    spec = CODECS[codec]
    if result.codec != spec.probe_name:
        raise FfmpegError(f"expected a {spec.probe_name} stream, ffprobe found {result.codec!r}")
    expected = timeline.seconds
    if abs(result.duration - expected) > 1.5 / timeline.fps + 0.02:
        raise FfmpegError(f"video lasts {result.duration:.3f}s, expected {expected:.3f}s")
    if result.frames != timeline.output_frames:
        raise FfmpegError(f"video has {result.frames} frames, expected {timeline.output_frames}")


def cut_for(options: VideoOptions, timeline: Timeline, parallelism: int) -> list[Segment]:
    """The segments a video is encoded in, post hoc and streamed alike (so both make the same
    frames); [] or one segment: in one piece. Motion-compensated interpolation runs on one core
    per ffmpeg, so with ``parallelism`` above 1 it is split into that many segments encoded at
    once; ``none`` and ``blend`` are cut before their last steps (``encoder.timing.tail_split``);
    GIFs are never split (one palette per clip)."""
    if options.codec == Codec.gif:
        return []
    if options.interpolation == Interpolation.mci:
        return segments(timeline, parallelism) if parallelism > 1 else []
    return tail_split(timeline, options.interpolation)


def segmented(
    parts: list[Segment], common: dict[str, Any], *, workdir: Path, output: Path
) -> tuple[list[list[str]], list[str]]:
    """A video cut in ``parts`` (``cut_for``; ``common``: the ``build_args`` of every segment): one
    ffmpeg a segment into ``workdir`` (run at once), and the join that puts them in ``output``
    without re-encoding."""
    codec = common["codec"]
    ext_out = CODECS[codec].ext
    names = [f"segment-{j}.{ext_out}" for j in range(len(parts))]
    commands = [
        build_args(output=workdir / name, segment=part, **common) for name, part in zip(names, parts, strict=True)
    ]
    listing = workdir / "segments.ffconcat"
    write_listing(listing, names)
    join = concat_args(
        ffmpeg=common["ffmpeg"], listing=listing, output=output, codec=codec, metadata=common["metadata"]
    )
    return commands, join


def encode_sequence(
    folder: Path,
    count: int,
    *,
    options: VideoOptions,
    output: Path,
    params: dict[str, Any],
    ffmpeg: str,
    ffprobe: str,
    timeout: float,
    ext: str = "png",
    parallelism: int = 1,
    on_command: Callable[[list[str]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Encoded:
    """Encode frames ``00001.<ext>`` .. ``<count>.<ext>`` of ``folder``; the first ``skip_steps`` are left out.

    Raises :class:`FfmpegError` when ffmpeg fails or the probed result is wrong; the
    output file is then removed, so nothing partial is ever published.
    ``on_command`` sees every ffmpeg command before it runs (the CLI's ``--debug``);
    ``should_stop`` is asked every half second while ffmpeg runs (a canceled job stops it).
    """
    timeline = timeline_for(options, kept_frames(count, options.skip_steps))
    common: dict[str, Any] = {
        "ffmpeg": ffmpeg,
        "pattern": folder / f"{SEQUENCE}.{ext}",
        "start_number": options.skip_steps + 1,
        "timeline": timeline,
        "codec": options.codec,
        "interpolation": options.interpolation,
        "metadata": metadata(params),
    }
    parts = cut_for(options, timeline, parallelism)
    with tempfile.TemporaryDirectory(prefix="segments-", dir=output.parent) as tmp:
        commands: list[list[str]] = [build_args(output=output, **common)]
        join: list[str] | None = None
        if len(parts) > 1:
            commands, join = segmented(parts, common, workdir=Path(tmp), output=output)
        ran = [*commands, *([join] if join else [])]
        if on_command is not None:
            for command in ran:
                on_command(command)
        try:
            run_all(commands, timeout=timeout, should_stop=should_stop)
            if join is not None:
                run(join, timeout=timeout, should_stop=should_stop)
            result = probe(ffprobe, output)
            verify(result, options.codec, timeline)
        except BaseException:
            output.unlink(missing_ok=True)
            raise
    return Encoded(
        path=output, probe=result, timeline=timeline, content_type=CODECS[options.codec].content_type, commands=ran
    )

"""ffmpeg and ffprobe: finding them, building argument lists (pure), running, probing.

Commands are always argument lists, never shell strings, so prompts with quotes,
newlines or any other characters cannot break them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from encoder.timing import Timeline
from stepanim.jobs import Codec, Interpolation


class FfmpegError(Exception):
    """ffmpeg or ffprobe is missing, failed, or produced an unusable file."""


@dataclass(frozen=True)
class CodecSpec:
    ext: str
    content_type: str
    encoder: str | None  # None: the muxer's own (gif)
    args: tuple[str, ...]
    probe_name: str  # codec_name as ffprobe reports it
    metadata: bool = True


# The extension's defaults, corrected where they broke players or current ffmpeg:
# yuv420p for h264/h265/vp9/av1 (yuv444p AV1 plays almost nowhere), hvc1 tag for Apple,
# and prores under its real encoder name, prores_ks.
CODECS: dict[Codec, CodecSpec] = {
    Codec.h264: CodecSpec(
        "mp4",
        "video/mp4",
        "libx264",
        ("-preset", "medium", "-crf", "23", "-pix_fmt", "yuv420p", "-movflags", "+faststart"),
        "h264",
    ),
    Codec.h265: CodecSpec(
        "mp4",
        "video/mp4",
        "libx265",
        (
            "-preset",
            "faster",
            "-crf",
            "28",
            "-pix_fmt",
            "yuv420p",
            "-tag:v",
            "hvc1",
            "-movflags",
            "+faststart",
            "-x265-params",
            "log-level=error",
        ),
        "hevc",
    ),
    Codec.vp9: CodecSpec(
        "webm",
        "video/webm",
        "libvpx-vp9",
        ("-crf", "34", "-b:v", "0", "-deadline", "realtime", "-cpu-used", "4", "-pix_fmt", "yuv420p"),
        "vp9",
    ),
    Codec.av1: CodecSpec(
        "mp4",
        "video/mp4",
        "libaom-av1",
        (
            "-crf",
            "28",
            "-b:v",
            "0",
            "-usage",
            "realtime",
            "-cpu-used",
            "8",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
        ),
        "av1",
    ),
    Codec.prores: CodecSpec(
        "mov",
        "video/quicktime",
        "prores_ks",
        ("-profile:v", "3", "-vendor", "apl0", "-bits_per_mb", "8000", "-pix_fmt", "yuv422p10le"),
        "prores",
    ),
    Codec.gif: CodecSpec("gif", "image/gif", None, (), "gif", metadata=False),
}

GIF_FPS = 15
GIF_MAX_WIDTH = 256


def find_binary(name: str, explicit: str | None) -> str:
    """An explicit setting, then PATH, then (ffmpeg only) the imageio-ffmpeg wheel's binary."""
    tried = []
    if explicit:
        if Path(explicit).is_file():
            return explicit
        tried.append(f"setting {explicit!r} (no such file)")
    else:
        tried.append("setting (unset)")
    found = shutil.which(name)
    if found:
        return found
    tried.append("PATH")
    if name == "ffmpeg":
        try:
            import imageio_ffmpeg  # type: ignore[import-not-found,unused-ignore]

            exe: str = imageio_ffmpeg.get_ffmpeg_exe()
            return exe
        except Exception:  # not installed, or its binary is missing
            tried.append("imageio-ffmpeg")
    raise FfmpegError(f"{name} not found; tried {', '.join(tried)}. Install it (apt-get install ffmpeg).")


def video_filter(timeline: Timeline, interpolation: Interpolation) -> str:
    """The filter chain that turns steps at ``input_rate`` into ``fps`` output frames.

    The tail is padded with clones of the last frame (hold, plus one step so that
    neither fps nor minterpolate runs short) and the output is cut by frame count.
    """
    fps = timeline.fps
    pad = timeline.hold_seconds + float(1 / timeline.input_rate)
    steps: list[str] = []
    if interpolation == Interpolation.none:
        steps.append(f"fps={fps}")
    else:
        # minterpolate stops at the last input frame; one cloned frame lets it reach the end.
        steps.append("tpad=stop_mode=clone:stop=1")
        if interpolation == Interpolation.blend:
            steps.append(f"minterpolate=fps={fps}:mi_mode=blend")
        else:
            steps.append(f"minterpolate=fps={fps}:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1")
    steps.append(f"tpad=stop_mode=clone:stop_duration={pad:.6f}")
    steps.append("scale=trunc(iw/2)*2:trunc(ih/2)*2")
    return ",".join(steps)


def build_args(
    *,
    ffmpeg: str,
    pattern: Path,
    start_number: int = 1,
    output: Path,
    timeline: Timeline,
    codec: Codec,
    interpolation: Interpolation,
    metadata: dict[str, str],
) -> list[str]:
    """The full ffmpeg command for frames matching ``pattern`` (an image2 pattern, e.g. %05d.png).

    Reading starts at frame ``start_number``: that is how initial steps are skipped.
    """
    spec = CODECS[codec]
    rate = timeline.input_rate
    args = [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-xerror",
        "-y",
        "-framerate",
        f"{rate.numerator}/{rate.denominator}",
        "-start_number",
        str(start_number),
        "-i",
        str(pattern),
    ]
    chain = video_filter(timeline, interpolation)
    if codec == Codec.gif:
        # Palette per clip; a lower rate and width keep long GIFs quick and small.
        args += [
            "-filter_complex",
            f"[0:v]{chain},fps={GIF_FPS},scale='min({GIF_MAX_WIDTH},iw)':-2:flags=lanczos,split[a][b];"
            "[a]palettegen=stats_mode=diff[p];[b][p]paletteuse=dither=bayer",
        ]
        frames = max(1, round(timeline.output_frames * GIF_FPS / timeline.fps))
    else:
        args += ["-vf", chain, "-fps_mode", "cfr", "-r", str(timeline.fps)]
        frames = timeline.output_frames
    args += ["-frames:v", str(frames)]
    if spec.encoder:
        args += ["-c:v", spec.encoder, *spec.args]
    if spec.metadata:
        for key, value in metadata.items():
            args += ["-metadata", f"{key}={value}"]
    args.append(str(output))
    return args


def run(args: list[str], *, timeout: float) -> None:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise FfmpegError(f"ffmpeg ran longer than {timeout:.0f}s") from e
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-5:]
        raise FfmpegError(f"ffmpeg exited with {proc.returncode}: {' | '.join(tail) or 'no output'}")


@dataclass(frozen=True)
class Probe:
    codec: str
    pix_fmt: str
    width: int
    height: int
    frames: int
    duration: float
    frame_rate: str
    format_name: str
    tags: dict[str, str]


def probe(ffprobe: str, path: Path) -> Probe:
    args = [
        ffprobe,
        "-v",
        "error",
        "-count_frames",
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=codec_name,pix_fmt,width,height,r_frame_rate,nb_read_frames",
        "-show_entries",
        "format=duration,format_name:format_tags",
        "-of",
        "json",
        str(path),
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise FfmpegError(f"ffprobe could not read the video: {proc.stderr.strip()[-300:]}")
    data: dict[str, Any] = json.loads(proc.stdout)
    streams = data.get("streams") or []
    if not streams:
        raise FfmpegError("ffprobe found no video stream")
    stream, fmt = streams[0], data.get("format", {})
    return Probe(
        codec=stream.get("codec_name", ""),
        pix_fmt=stream.get("pix_fmt", ""),
        width=int(stream.get("width", 0)),
        height=int(stream.get("height", 0)),
        frames=int(stream.get("nb_read_frames", 0)),
        duration=float(fmt.get("duration", 0.0)),
        frame_rate=stream.get("r_frame_rate", ""),
        format_name=fmt.get("format_name", ""),
        tags={k.lower(): v for k, v in (fmt.get("tags") or {}).items()},
    )

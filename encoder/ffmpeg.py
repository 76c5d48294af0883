"""ffmpeg and ffprobe: finding them, building argument lists (pure), running, probing.

Commands are always argument lists, never shell strings, so prompts with quotes,
newlines or any other characters cannot break them.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from encoder.timing import Segment, Timeline
from stepanim.failures import Canceled, EncodeError
from stepanim.processes import die_with_parent
from stepanim.video_options import Codec, Interpolation


class FfmpegError(EncodeError):
    """ffmpeg or ffprobe is missing, failed, or produced an unusable file."""


@dataclass(frozen=True)
class CodecSpec:
    ext: str
    content_type: str
    encoder: str | None  # None: the muxer's own (gif)
    args: tuple[str, ...]
    probe_name: str  # codec_name as ffprobe reports it
    metadata: bool = True
    mux_args: tuple[str, ...] = ()  # container flags, given again when segments are joined


# The extension's defaults, corrected where they broke players or current ffmpeg:
# yuv420p for h264/h265/vp9/av1 (yuv444p AV1 plays almost nowhere), hvc1 tag for Apple,
# and prores under its real encoder name, prores_ks.
CODECS: dict[Codec, CodecSpec] = {
    Codec.h264: CodecSpec(
        "mp4",
        "video/mp4",
        "libx264",
        ("-preset", "medium", "-crf", "23", "-pix_fmt", "yuv420p"),
        "h264",
        mux_args=("-movflags", "+faststart"),
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
            "-x265-params",
            "log-level=error",
        ),
        "hevc",
        mux_args=("-tag:v", "hvc1", "-movflags", "+faststart"),
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
        ),
        "av1",
        mux_args=("-movflags", "+faststart"),
    ),
    Codec.prores: CodecSpec(
        "mov",
        "video/quicktime",
        "prores_ks",
        ("-profile:v", "3", "-vendor", "apl0", "-bits_per_mb", "8000", "-pix_fmt", "yuv422p10le"),
        "prores",
        # QuickTime keeps only a few classic tags; metadata tags keep the description too.
        mux_args=("-movflags", "+faststart+use_metadata_tags"),
    ),
    Codec.gif: CodecSpec("gif", "image/gif", None, (), "gif", metadata=False),
}

GIF_FPS = 10  # the extension's GIF rate and width: a GIF is a preview, and stays small
GIF_MAX_WIDTH = 240


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


def interpolate_filter(fps: int, interpolation: Interpolation) -> str:
    """The extension's minterpolate settings (its ``fifo`` dropped), straight at the output rate.

    The extension let minterpolate make 60 fps and then dropped every other frame
    with ``-r 30``; asking for the output rate makes the same frames at half the work.
    """
    return f"minterpolate=fps={fps}:mi_mode={interpolation.value}"


def video_filter(timeline: Timeline, interpolation: Interpolation, segment: Segment | None = None) -> str:
    """The filter chain that turns steps at ``input_rate`` into ``fps`` output frames.

    The tail is padded with clones of the last frame (hold, plus one step so that
    neither fps nor minterpolate runs short) and the output is cut by frame count.
    With ``segment``, the input starts at its first step (``build_args``), whose timestamps
    are moved to where that step stands in the whole video; only its steps are fed and
    only its output frames kept.
    """
    fps = timeline.fps
    pad = timeline.hold_seconds + float(1 / timeline.input_rate)
    steps: list[str] = []
    if segment is not None and segment.first_step:
        shift = segment.first_step / timeline.input_rate
        steps.append(f"setpts=PTS+{shift.numerator}/({shift.denominator}*TB)")
    if interpolation == Interpolation.none:
        steps.append(f"fps={fps}")
    else:
        # minterpolate stops at the last-but-one input frame; one cloned frame lets it reach the end.
        steps.append("tpad=stop_mode=clone:stop=1")
        if segment is not None and segment.end_step is not None:
            steps.append(f"trim=end_frame={segment.end_step - segment.first_step}")
        steps.append(interpolate_filter(fps, interpolation))
    # tpad spaces its clones at the input rate: fps puts every frame back on the output grid.
    steps.append(f"tpad=stop_mode=clone:stop_duration={pad:.6f},fps={fps}")
    if segment is not None:
        # minterpolate stamps frames on the absolute output grid (1/fps): keep this segment's own.
        steps.append(f"trim=start_pts={segment.start}:end_pts={segment.end},setpts=PTS-STARTPTS")
    steps.append("scale=trunc(iw/2)*2:trunc(ih/2)*2")
    return ",".join(steps)


def _input_args(ffmpeg: str, pattern: Path | None, start_number: int, timeline: Timeline) -> list[str]:
    """Frames from files matching ``pattern`` (image2), or, with None, images one after the other on stdin."""
    rate = timeline.input_rate
    args = [ffmpeg, "-hide_banner", "-loglevel", "error", "-xerror", "-y"]
    args += ["-framerate", f"{rate.numerator}/{rate.denominator}"]
    if pattern is None:
        return [*args, "-f", "image2pipe", "-i", "pipe:0"]
    return [*args, "-nostdin", "-start_number", str(start_number), "-i", str(pattern)]


def _metadata_args(spec: CodecSpec, metadata: dict[str, str]) -> list[str]:
    args: list[str] = []
    if spec.metadata:
        for key, value in metadata.items():
            args += ["-metadata", f"{key}={value}"]
    return args


def build_args(
    *,
    ffmpeg: str,
    pattern: Path | None,
    start_number: int = 1,
    output: Path,
    timeline: Timeline,
    codec: Codec,
    interpolation: Interpolation,
    metadata: dict[str, str],
    segment: Segment | None = None,
    bare: bool = False,
) -> list[str]:
    """The full ffmpeg command for frames matching ``pattern`` (an image2 pattern, e.g. %05d.png),
    or, with ``pattern`` None, for the images written to its stdin (a stream: ``encoder.stream``).

    Reading starts at frame ``start_number``: that is how initial steps are skipped.
    With ``segment`` the command reads from its first step (a stream feeds a piped segment
    just its steps) and makes only that segment's frames, with no metadata
    or container flags (``concat_args`` adds them when the segments are joined); ``bare``
    leaves them out of a whole video too (a stream is joined the same way at its end).
    """
    spec = CODECS[codec]
    first = segment.first_step if segment is not None else 0
    args = _input_args(ffmpeg, pattern, start_number + first, timeline)
    chain = video_filter(timeline, interpolation, segment)
    if codec == Codec.gif:
        # Scaled down first (cheaper interpolation), one palette per clip. Without interpolation the
        # palette is made from the input frames once each (the held copies add no colour), not from
        # every output frame.
        scale = f"scale='min({GIF_MAX_WIDTH},iw)':-2:flags=lanczos"
        palette = "palettegen=stats_mode=diff"
        graph = (
            f"[0:v]{scale},split[a][b];[a]{palette}[p];[b]{chain}[v];[v][p]paletteuse=dither=bayer"
            if interpolation == Interpolation.none
            else f"[0:v]{scale},{chain},split[a][b];[a]{palette}[p];[b][p]paletteuse=dither=bayer"
        )
        args += ["-filter_complex", graph]
    else:
        args += ["-vf", chain]
    args += ["-fps_mode", "cfr", "-r", str(timeline.fps)]
    frames = timeline.output_frames if segment is None else segment.end - segment.start
    args += ["-frames:v", str(frames)]
    if spec.encoder:
        args += ["-c:v", spec.encoder, *spec.args]
    if segment is None and not bare:
        args += [*spec.mux_args, *_metadata_args(spec, metadata)]
    args.append(str(output))
    return args


def concat_args(
    *, ffmpeg: str, listing: Path, output: Path, codec: Codec, metadata: dict[str, str] | None
) -> list[str]:
    """Join encoded segments (an ffconcat ``listing``) without re-encoding; adds metadata and container flags.

    ``metadata`` None: read on stdin, as an FFmpeg metadata file (``metadata_file``), before the
    listing is opened: a join started before the metadata and the segments exist (``encoder.stream``).
    """
    spec = CODECS[codec]
    args = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-xerror", "-y"]
    if metadata is None:
        args += ["-f", "ffmetadata", "-i", "pipe:0"]
    args += ["-f", "concat", "-safe", "0", "-i", str(listing)]
    if metadata is None:
        args += ["-map", "1:v", "-map_metadata", "0", "-c", "copy", *spec.mux_args, str(output)]
    else:
        args += ["-map", "0:v", "-c", "copy", *spec.mux_args, *_metadata_args(spec, metadata), str(output)]
    return args


def write_listing(listing: Path, names: list[str]) -> None:
    """The ffconcat list of a ``concat_args`` join: files named relative to the list's folder."""
    listing.write_text("ffconcat version 1.0\n" + "".join(f"file '{name}'\n" for name in names))


def metadata_file(codec: Codec, metadata: dict[str, str]) -> bytes:
    """``metadata`` as an FFmpeg metadata file (``-f ffmetadata``): the metadata of a ``concat_args``
    join that reads it on stdin. Empty for a codec whose container keeps none (as ``-metadata``)."""
    lines = [";FFMETADATA1"]
    if CODECS[codec].metadata:
        lines += [f"{_ffmetadata_escape(key)}={_ffmetadata_escape(value)}" for key, value in metadata.items()]
    return ("\n".join(lines) + "\n").encode()


def _ffmetadata_escape(text: str) -> str:
    """'=', ';', '#', backslash and newline are escaped with a backslash in that format."""
    for special in ("\\", "=", ";", "#", "\n"):
        text = text.replace(special, "\\" + special)
    return text


def _failure(returncode: int, stderr: str) -> FfmpegError:
    tail = stderr.strip().splitlines()[-5:]
    return FfmpegError(f"ffmpeg exited with {returncode}: {' | '.join(tail) or 'no output'}")


class EncodeCanceled(FfmpegError, Canceled):
    """The job was canceled while ffmpeg ran; its processes were stopped."""


STOP_CHECK_SECONDS = 0.5  # how often a running encode asks whether it should stop


def run(args: list[str], *, timeout: float, should_stop: Callable[[], bool] | None = None) -> None:
    run_all([args], timeout=timeout, should_stop=should_stop)


def run_all(commands: list[list[str]], *, timeout: float, should_stop: Callable[[], bool] | None = None) -> None:
    """Run ``commands`` at the same time; when one fails, time runs out or ``should_stop()``
    says so (a canceled job), stop the others and raise."""
    deadline = time.monotonic() + timeout
    next_check = time.monotonic()
    with contextlib.ExitStack() as stack:
        running: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
        for args in commands:
            log: IO[bytes] = stack.enter_context(tempfile.TemporaryFile())
            # die_with_parent: an encoder killed with SIGKILL leaves no ffmpeg running (stepanim.processes).
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, preexec_fn=die_with_parent)
            running.append((proc, log))
        try:
            pending = list(running)
            while pending:
                for proc, log in list(pending):
                    if proc.poll() is None:
                        continue
                    pending.remove((proc, log))
                    if proc.returncode != 0:
                        log.seek(0)
                        raise _failure(proc.returncode, log.read().decode(errors="replace"))
                now = time.monotonic()
                if now > deadline:
                    raise FfmpegError(f"ffmpeg ran longer than {timeout:.0f}s")
                if should_stop is not None and pending and now >= next_check:
                    next_check = now + STOP_CHECK_SECONDS
                    if should_stop():
                        raise EncodeCanceled("the job was canceled; ffmpeg was stopped")
                time.sleep(0.02)
        finally:
            for proc, _ in running:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()


def version(ffmpeg: str) -> str:
    proc = subprocess.run([ffmpeg, "-hide_banner", "-version"], capture_output=True, text=True, timeout=30, check=False)
    return (proc.stdout.splitlines() or ["unknown"])[0]


def listing(ffmpeg: str, what: str) -> str:
    """Output of ``ffmpeg -hide_banner -<what>`` (``encoders``, ``filters``)."""
    proc = subprocess.run([ffmpeg, "-hide_banner", f"-{what}"], capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise FfmpegError(f"{ffmpeg} -{what} failed: {proc.stderr.strip()[-300:]}")
    return proc.stdout


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


def probe_args(ffprobe: str, source: str) -> list[str]:
    """ffprobe reading ``source``: a path, or ``pipe:0`` for a video given on stdin (it reads all the
    videos made here alike from a pipe: the MP4 and MOV ones are faststart)."""
    return [
        ffprobe,
        "-v",
        "error",
        "-count_packets",  # demuxing only: one packet per frame in these codecs, and no decoding
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=codec_name,pix_fmt,width,height,r_frame_rate,nb_read_packets",
        "-show_entries",
        "format=duration,format_name:format_tags",
        "-of",
        "json",
        source,
    ]


def probe(ffprobe: str, path: Path) -> Probe:
    proc = subprocess.run(probe_args(ffprobe, str(path)), capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise FfmpegError(f"ffprobe could not read the video: {proc.stderr.strip()[-300:]}")
    return parse_probe(proc.stdout)


def parse_probe(output: str) -> Probe:
    """What ffprobe (``probe_args``) printed."""
    data: dict[str, Any] = json.loads(output)
    streams = data.get("streams") or []
    if not streams:
        raise FfmpegError("ffprobe found no video stream")
    stream, fmt = streams[0], data.get("format", {})
    return Probe(
        codec=stream.get("codec_name", ""),
        pix_fmt=stream.get("pix_fmt", ""),
        width=int(stream.get("width", 0)),
        height=int(stream.get("height", 0)),
        frames=int(stream.get("nb_read_packets", 0)),
        duration=float(fmt.get("duration", 0.0)),
        frame_rate=stream.get("r_frame_rate", ""),
        format_name=fmt.get("format_name", ""),
        tags={k.lower(): v for k, v in (fmt.get("tags") or {}).items()},
    )

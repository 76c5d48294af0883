"""Encoder benchmark: this encoder against the extension's own ffmpeg command lines.

    python -m bench.encode                      # 100 frames of 512x512 -> 30 s, every codec x interpolation
    python -m bench.encode --frames 20 --size 128 --duration 5 --codecs h264 vp9

For each codec and interpolation it runs, on the same synthetic frames and in the same
process, the extension's command (its ``fifo`` removed, nothing else changed) and then
ours, and reports wall time, CPU time of the ffmpeg processes (user + system, which
other load on the machine disturbs less than wall time), output size, and the ratios
ours / baseline. Results are printed as a Markdown table; ``--jsonl`` also appends each
cell as it finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from encoder.encode import encode_sequence, sequence_path
from encoder.ffmpeg import CODECS, find_binary
from stepanim.video_options import Codec, Interpolation, VideoOptions

# The extension's presets (README and scripts/steps_animation.py), keyed by our codec names.
EXTENSION_PRESETS = {
    Codec.h264: "-vcodec libx264 -preset medium -crf 23",
    Codec.h265: "-vcodec libx265 -preset faster -crf 28",
    Codec.vp9: "-vcodec libvpx-vp9 -crf 34 -b:v 0 -deadline realtime -cpu-used 4",
    Codec.av1: "-vcodec libaom-av1 -crf 28 -b:v 0 -usage realtime -cpu-used 8 -pix_fmt yuv444p",
    Codec.prores: "-vcodec prores_ks -profile:v 3 -vendor apl0 -bits_per_mb 8000 -pix_fmt yuv422p10le",
}
# Its README's GIF graph without the sample crop (crop=305:203:42:660 does not fit a 512x512 frame).
EXTENSION_GIF = "fps=10,scale=240:-1,split [a][b];[a] palettegen [p];[b][p] paletteuse"
EXTENSION_EXT = {Codec.h264: "mp4", Codec.h265: "mp4", Codec.vp9: "webm", Codec.av1: "mp4", Codec.prores: "mov"}


def make_frames(folder: Path, count: int, size: int) -> None:
    """Steps that look like a denoising run: noise resolving into a picture, plus a moving shape."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    target = np.stack([0.5 + 0.5 * np.sin(6 * x + 2 * y), 0.5 + 0.5 * np.cos(5 * y), 0.5 + 0.4 * np.sin(9 * x * y)], -1)
    box = max(2, size // 16)
    for i in range(count):
        t = i / max(1, count - 1)
        image = (1 - t) ** 2 * rng.random((size, size, 3)) + (1 - (1 - t) ** 2) * target
        cx = int(box + (size - 3 * box) * t)
        cy = int(size / 2 + size / 5 * np.sin(6 * t))
        image[cy - box : cy + box, cx - box : cx + box] = 1.0
        Image.fromarray((image * 255).astype(np.uint8)).save(sequence_path(folder, i + 1), compress_level=1)


def extension_args(
    ffmpeg: str, folder: Path, count: int, options: VideoOptions, output: Path, meta: dict[str, str]
) -> list[str]:
    """The extension's ``cli_template`` as an argument list, with ``,fifo`` taken out of its filter."""
    framerate = max(0, 1.0 * count / options.duration)
    args = [ffmpeg, "-hide_banner", "-loglevel", "error", "-hwaccel", "auto", "-y"]
    args += ["-framerate", str(framerate), "-start_number", "1", "-i", str(folder / "%05d.png")]
    args += ["-r", str(options.fps)]
    minterpolate = (
        "" if options.interpolation == Interpolation.none else f"minterpolate=mi_mode={options.interpolation}"
    )
    if options.codec == Codec.gif:
        graph = f"[0:v] {minterpolate + ',' if minterpolate else ''}{EXTENSION_GIF}"
        args += ["-filter_complex", graph]
    else:
        args += EXTENSION_PRESETS[options.codec].split()
        if minterpolate:
            args += ["-vf", minterpolate]
    args += ["-movflags", "+faststart"]
    args += ["-metadata", f"title={meta['title']}", "-metadata", f"description={meta['description']}"]
    args += ["-metadata", "author=stable-diffusion", "-metadata", "album_artist=https://github.com/vladmandic"]
    args.append(str(output))
    return args


@dataclass
class Run:
    wall: float
    cpu: float
    size: int
    frames: int
    duration: float


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def probe(ffprobe: str, path: Path) -> tuple[int, float]:
    out = subprocess.run(
        [
            ffprobe,
            "-v",
            "error",
            "-count_packets",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_packets",
            "-show_entries",
            "format=duration",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data = json.loads(out)
    return int(data["streams"][0]["nb_read_packets"]), float(data["format"]["duration"])


def timed(action, output: Path, ffprobe: str) -> Run:  # type: ignore[no-untyped-def]
    cpu, wall = children_cpu(), time.perf_counter()
    action()
    wall, cpu = time.perf_counter() - wall, children_cpu() - cpu
    frames, duration = probe(ffprobe, output)
    return Run(wall=wall, cpu=cpu, size=output.stat().st_size, frames=frames, duration=duration)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--codecs", nargs="+", default=[c.value for c in Codec], choices=[c.value for c in Codec])
    parser.add_argument(
        "--interpolations",
        nargs="+",
        default=[i.value for i in Interpolation],
        choices=[i.value for i in Interpolation],
    )
    parser.add_argument("--parallelism", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--jsonl", type=Path, help="append each cell's result to this file as it finishes")
    args = parser.parse_args(argv)

    ffmpeg, ffprobe = find_binary("ffmpeg", None), find_binary("ffprobe", None)
    meta = {"title": "bench", "description": json.dumps({"prompt": "bench"})}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-encode-") as tmp:
        folder = Path(tmp)
        make_frames(folder, args.frames, args.size)
        build = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True, check=True).stdout.split("\n")[0]
        print(
            f"# {args.frames} frames of {args.size}x{args.size} -> {args.duration:g} s at {args.fps} fps,"
            f" {os.cpu_count()} CPUs, parallelism {args.parallelism}, {build}",
            file=sys.stderr,
        )
        for codec in map(Codec, args.codecs):
            for interpolation in map(Interpolation, args.interpolations):
                options = VideoOptions(codec=codec, interpolation=interpolation, duration=args.duration, fps=args.fps)
                ext = CODECS[codec].ext
                base_out, ours_out = folder / f"base.{EXTENSION_EXT.get(codec, ext)}", folder / f"ours.{ext}"
                base_args = extension_args(ffmpeg, folder, args.frames, options, base_out, meta)
                try:
                    base: Run | None = timed(
                        lambda a=base_args: subprocess.run(a, check=True, capture_output=True), base_out, ffprobe
                    )
                except subprocess.CalledProcessError as e:  # reported, not fatal: the extension's command failed
                    base = None
                    print(
                        f"baseline {codec} {interpolation} failed: {e.returncode} {e.stderr[-200:]!r}", file=sys.stderr
                    )
                ours = timed(
                    lambda o=options, out=ours_out: encode_sequence(
                        folder,
                        args.frames,
                        options=o,
                        output=out,
                        params={"prompt": "bench"},
                        ffmpeg=ffmpeg,
                        ffprobe=ffprobe,
                        timeout=3600,
                        parallelism=args.parallelism,
                    ),
                    ours_out,
                    ffprobe,
                )
                row: dict[str, object] = {"codec": codec.value, "interpolation": interpolation.value}
                row |= {f"base_{k}": v for k, v in asdict(base).items()} if base else {"base_failed": True}
                row |= {f"ours_{k}": v for k, v in asdict(ours).items()}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
                if args.jsonl:
                    with args.jsonl.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                base_out.unlink(missing_ok=True)
                ours_out.unlink()
    print(table(rows))
    return 0


def table_from(path: Path) -> str:
    """The Markdown table of a ``--jsonl`` file (``python -c 'from bench.encode import table_from; ...'``)."""
    return table([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def table(rows: list[dict]) -> str:  # type: ignore[type-arg]
    lines = [
        "| codec | interpolation | baseline wall s | ours wall s | wall ratio | baseline CPU s | ours CPU s"
        " | CPU ratio | baseline KB | ours KB | size ratio | ours frames / s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        if r.get("base_failed"):
            lines.append(
                f"| {r['codec']} | {r['interpolation']} | baseline crashed | {r['ours_wall']:.1f} | – | – |"
                f" {r['ours_cpu']:.1f} | – | – | {r['ours_size'] / 1024:.0f} | – | {r['ours_frames']} /"
                f" {r['ours_duration']:.2f} |"
            )
            continue
        lines.append(
            f"| {r['codec']} | {r['interpolation']} | {r['base_wall']:.1f} | {r['ours_wall']:.1f}"
            f" | **{r['ours_wall'] / r['base_wall']:.2f}** | {r['base_cpu']:.1f} | {r['ours_cpu']:.1f}"
            f" | {r['ours_cpu'] / r['base_cpu']:.2f} | {r['base_size'] / 1024:.0f} | {r['ours_size'] / 1024:.0f}"
            f" | {r['ours_size'] / r['base_size']:.2f} | {r['ours_frames']} / {r['ours_duration']:.2f}"
            f" (baseline {r['base_frames']} / {r['base_duration']:.2f}) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

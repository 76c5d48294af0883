"""``python -m encoder FRAMES_DIR -o OUT``: encode any folder of frames, with the worker's code.

    python -m encoder frames/ --codec vp9 --duration 5 --interpolation blend -o out.webm
    python -m encoder frames/ -o out.gif --debug     # the codec follows the extension; prints ffmpeg commands

Frames are taken in file-name order (the extension's names sort by step); the codec,
when not given, follows the output's extension.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from pydantic import ValidationError

from encoder.encode import encode_sequence, sequence_path
from encoder.ffmpeg import CODECS, FfmpegError, find_binary
from stepanim.settings import Settings
from stepanim.video_options import Codec, Interpolation, VideoOptions

IMAGE_EXTS = {"png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"}
BY_EXT = {"mp4": Codec.h264, "webm": Codec.vp9, "mov": Codec.prores, "gif": Codec.gif}


class UsageError(Exception):
    pass


def frames_in(folder: Path) -> tuple[list[Path], str]:
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lstrip(".").lower() in IMAGE_EXTS)
    if not files:
        raise UsageError(f"no image files ({', '.join(sorted(IMAGE_EXTS))}) in {folder}")
    exts = {p.suffix.lstrip(".").lower() for p in files}
    if len(exts) > 1:
        raise UsageError(f"frames must share one image format; {folder} has {', '.join(sorted(exts))}")
    return files, exts.pop()


def choose_codec(output: Path, codec: str | None) -> Codec:
    ext = output.suffix.lstrip(".").lower()
    chosen = Codec(codec) if codec else BY_EXT.get(ext)
    if chosen is None:
        raise UsageError(f"cannot tell the codec from {output.name!r}; pass --codec")
    if CODECS[chosen].ext != ext:
        raise UsageError(f"{chosen.value} is written as .{CODECS[chosen].ext}, not {output.name!r}")
    return chosen


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m encoder", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("frames", type=Path, help="folder of frames, taken in file-name order")
    p.add_argument("-o", "--output", type=Path, required=True, help="video to write (.mp4, .webm, .mov, .gif)")
    p.add_argument("--codec", choices=[c.value for c in Codec], help="default: from the output's extension")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of animation (0.5-120)")
    p.add_argument("--fps", type=int, default=30, help="output frames per second")
    p.add_argument("--interpolation", choices=[i.value for i in Interpolation], default="none")
    p.add_argument("--skip-steps", type=int, default=0, help="leave out this many first frames")
    p.add_argument("--hold-last", type=float, default=0.0, help="seconds the last frame is held")
    p.add_argument("--title", help="title metadata (default: the folder's name)")
    p.add_argument("--parallelism", type=int, default=os.cpu_count() or 1, help="ffmpeg processes for mci")
    p.add_argument("--ffmpeg", help="ffmpeg binary (default: STEPANIM_FFMPEG_PATH, PATH, imageio-ffmpeg)")
    p.add_argument("--ffprobe", help="ffprobe binary (default: STEPANIM_FFPROBE_PATH, PATH)")
    p.add_argument("--debug", action="store_true", help="print every ffmpeg command before it runs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        files, ext = frames_in(args.frames)
        options = VideoOptions(
            codec=choose_codec(args.output, args.codec),
            duration=args.duration,
            fps=args.fps,
            interpolation=args.interpolation,
            skip_steps=args.skip_steps,
            hold_last=args.hold_last,
        )
        settings = Settings()
        ffmpeg = find_binary("ffmpeg", args.ffmpeg or settings.ffmpeg_path)
        ffprobe = find_binary("ffprobe", args.ffprobe or settings.ffprobe_path)
        params = {"prompt": args.title or args.frames.resolve().name, "frames": len(files), "source": str(args.frames)}
        with tempfile.TemporaryDirectory(prefix="stepanim-cli-") as tmp:
            folder = Path(tmp)
            for index, path in enumerate(files, start=1):
                target = sequence_path(folder, index, ext)
                try:
                    target.symlink_to(path.resolve())
                except OSError:
                    shutil.copyfile(path, target)
            out = folder / f"video.{CODECS[options.codec].ext}"
            encoded = encode_sequence(
                folder,
                len(files),
                options=options,
                output=out,
                params=params,
                ffmpeg=ffmpeg,
                ffprobe=ffprobe,
                timeout=24 * 3600,
                ext=ext,
                parallelism=args.parallelism,
                on_command=(lambda c: print(f"ffmpeg: {shlex.join(c)}", file=sys.stderr)) if args.debug else None,
            )
            args.output.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(encoded.path, args.output)
    except ValidationError as e:
        first = e.errors()[0]
        print(f"error: --{str(first['loc'][0]).replace('_', '-')}: {first['msg']}", file=sys.stderr)
        return 2
    except (UsageError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FfmpegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    info = encoded.probe
    print(
        f"{args.output}: {info.codec} {info.width}x{info.height} {info.pix_fmt}, {info.frames} frames,"
        f" {info.duration:.3f} s, {args.output.stat().st_size} bytes"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

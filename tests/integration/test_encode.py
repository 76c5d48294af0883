"""The encoder against the real ffmpeg/ffprobe."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from encoder.encode import encode_sequence, sequence_path
from encoder.ffmpeg import CODECS, FfmpegError, find_binary
from stepanim.jobs import AnimationOptions, Codec, Interpolation
from tests.conftest import ffprobe_json

FFMPEG = find_binary("ffmpeg", None)
FFPROBE = find_binary("ffprobe", None)
PARAMS = {"prompt": 'a "quoted"\nprompt ✨', "model": "tiny", "steps": 12, "scheduler": "euler", "seed": 5}


def write_frames(folder: Path, count: int, size: int = 64) -> None:
    for i in range(1, count + 1):
        image = np.zeros((size, size, 3), np.uint8)
        image[:, :, 0] = i * 20
        image[i : i + 8, i : i + 8, 1] = 255
        Image.fromarray(image).save(sequence_path(folder, i))


def encode(folder: Path, count: int, **options: object) -> Path:
    opts = AnimationOptions.model_validate(options)
    out = folder / f"out.{CODECS[opts.codec].ext}"
    encode_sequence(folder, count, options=opts, output=out, params=PARAMS, ffmpeg=FFMPEG, ffprobe=FFPROBE, timeout=60)
    return out


def test_h264_lasts_the_requested_duration(tmp_path: Path) -> None:
    write_frames(tmp_path, 12)
    info = ffprobe_json(encode(tmp_path, 12, duration=2.5))
    stream = info["streams"][0]
    assert stream["codec_name"] == "h264"
    assert stream["pix_fmt"] == "yuv420p"
    assert stream["r_frame_rate"] == "30/1"
    assert int(stream["nb_read_frames"]) == 75
    assert float(info["format"]["duration"]) == pytest.approx(2.5, abs=1 / 30)
    tags = {k.lower(): v for k, v in info["format"]["tags"].items()}
    assert tags["title"].startswith(PARAMS["prompt"])
    assert tags["artist"]


@pytest.mark.parametrize("interpolation", list(Interpolation))
def test_skip_and_hold_change_frames_exactly(tmp_path: Path, interpolation: Interpolation) -> None:
    write_frames(tmp_path, 12)
    base = ffprobe_json(encode(tmp_path, 12, duration=2, interpolation=interpolation))
    held = ffprobe_json(encode(tmp_path, 12, duration=2, hold_last=1, skip_steps=4, interpolation=interpolation))
    assert int(held["streams"][0]["nb_read_frames"]) - int(base["streams"][0]["nb_read_frames"]) == 30


def test_first_kept_frame_is_in_the_video(tmp_path: Path) -> None:
    write_frames(tmp_path, 10)
    out = encode(tmp_path, 10, duration=1, fps=10, skip_steps=3)  # 7 steps over 10 frames
    first = tmp_path / "first.png"
    import subprocess

    subprocess.run([FFMPEG, "-v", "error", "-i", str(out), "-frames:v", "1", str(first)], check=True)
    red = np.asarray(Image.open(first))[:, :, 0].mean()
    assert red == pytest.approx(4 * 20, abs=6)  # frame 4 is the first kept step (frame 3 would be ~60)


@pytest.mark.parametrize("codec", list(Codec))
def test_every_codec_plays(tmp_path: Path, codec: Codec) -> None:
    write_frames(tmp_path, 6)
    info = ffprobe_json(encode(tmp_path, 6, duration=1, codec=codec))
    expected = {"h264": "h264", "h265": "hevc", "vp9": "vp9", "av1": "av1", "prores": "prores", "gif": "gif"}[codec]
    assert info["streams"][0]["codec_name"] == expected
    assert float(info["format"]["duration"]) == pytest.approx(1.0, abs=0.07)


def test_a_corrupt_frame_fails_and_leaves_no_video(tmp_path: Path) -> None:
    write_frames(tmp_path, 6)
    sequence_path(tmp_path, 3).write_bytes(b"not a png")
    with pytest.raises(FfmpegError):
        encode(tmp_path, 6, duration=1)
    assert not (tmp_path / "out.mp4").exists()

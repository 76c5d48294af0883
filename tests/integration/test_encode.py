"""The encoder against the real ffmpeg/ffprobe."""

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from encoder.encode import Encoded, encode_sequence, sequence_path
from encoder.ffmpeg import CODECS, GIF_FPS, FfmpegError, find_binary
from stepanim.video_options import AnimationOptions, Codec, Interpolation
from tests.conftest import ffprobe_json

FFMPEG = find_binary("ffmpeg", None)
FFPROBE = find_binary("ffprobe", None)
PARAMS = {"prompt": 'a "quoted"\nprompt ✨', "model": "tiny", "steps": 12, "scheduler": "euler", "seed": 5}


def write_frames(folder: Path, count: int, size: int = 64) -> None:
    for i in range(1, count + 1):
        image = np.zeros((size, size, 3), np.uint8)
        image[:, :, 0] = min(255, i * 20)
        image[i : i + 8, i : i + 8, 1] = 255
        Image.fromarray(image).save(sequence_path(folder, i))


def encode_to(
    folder: Path,
    count: int,
    options: AnimationOptions,
    output: Path,
    *,
    parallelism: int = 1,
    timeout: float = 120,
    should_stop: Callable[[], bool] | None = None,
) -> Encoded:
    """``encode_sequence`` of the frames in ``folder`` with this module's metadata and binaries."""
    return encode_sequence(
        folder,
        count,
        options=options,
        output=output,
        params=PARAMS,
        ffmpeg=FFMPEG,
        ffprobe=FFPROBE,
        timeout=timeout,
        parallelism=parallelism,
        should_stop=should_stop,
    )


def encode(folder: Path, count: int, parallelism: int = 1, **options: object) -> Path:
    opts = AnimationOptions.model_validate(options)
    out = folder / f"out.{CODECS[opts.codec].ext}"
    encode_to(folder, count, opts, out, parallelism=parallelism)
    return out


CONTAINERS = {"mp4": "mov,mp4,m4a,3gp,3g2,mj2", "webm": "matroska,webm", "mov": "mov,mp4,m4a,3gp,3g2,mj2", "gif": "gif"}
PIX_FMTS = {
    Codec.h264: "yuv420p",
    Codec.h265: "yuv420p",
    Codec.vp9: "yuv420p",
    Codec.av1: "yuv420p",
    Codec.prores: "yuv422p10le",
    Codec.gif: "bgra",  # what ffprobe reports for a palette GIF
}
PROBE_NAMES = {"h264": "h264", "h265": "hevc", "vp9": "vp9", "av1": "av1", "prores": "prores", "gif": "gif"}


@pytest.mark.parametrize("interpolation", list(Interpolation))
@pytest.mark.parametrize("codec", list(Codec))
def test_codec_and_interpolation_matrix(tmp_path: Path, codec: Codec, interpolation: Interpolation) -> None:
    write_frames(tmp_path, 6, size=48)
    out = encode(tmp_path, 6, duration=1.2, codec=codec, interpolation=interpolation, parallelism=2)
    assert out.suffix == f".{CODECS[codec].ext}"
    info = ffprobe_json(out)
    stream, fmt = info["streams"][0], info["format"]
    fps = GIF_FPS if codec == Codec.gif else 30
    assert stream["codec_name"] == PROBE_NAMES[codec]
    assert fmt["format_name"] == CONTAINERS[CODECS[codec].ext]
    assert stream["pix_fmt"] == PIX_FMTS[codec]
    assert int(stream["nb_read_frames"]) == round(1.2 * fps)
    assert float(fmt["duration"]) == pytest.approx(1.2, abs=1 / fps)
    if codec != Codec.gif:
        assert stream["r_frame_rate"] == f"{fps}/1"
        tags = {k.lower(): v for k, v in fmt.get("tags", {}).items()}
        assert tags["title"].startswith(PARAMS["prompt"])
        assert json.loads(tags["description"])["seed"] == PARAMS["seed"]
        assert tags["artist"]
    if codec == Codec.h265:
        assert stream["codec_tag_string"] == "hvc1"


@pytest.mark.parametrize("codec", [Codec.h264, Codec.vp9])
def test_parallel_mci_matches_one_process(tmp_path: Path, codec: Codec) -> None:
    """Segments interpolated at once give the same frames, count and length as one ffmpeg."""
    for i in range(1, 25):
        image = np.full((48, 48, 3), 40 + 8 * i, np.uint8)
        image[10 : 10 + 12, i : i + 12] = (255, 0, 0)
        Image.fromarray(image).save(sequence_path(tmp_path, i))
    ext = CODECS[codec].ext
    options = AnimationOptions(duration=1, codec=codec, interpolation=Interpolation.mci, hold_last=0.5, skip_steps=2)
    outputs = {}
    for parts in (1, 2, 3):
        out = tmp_path / f"p{parts}.{ext}"
        encoded = encode_to(tmp_path, 24, options, out, parallelism=parts)
        assert len(encoded.commands) == (1 if parts == 1 else parts + 1)  # segments, then the join
        assert encoded.probe.frames == 45  # (1 s + 0.5 s) * 30
        assert encoded.probe.duration == pytest.approx(1.5, abs=1 / 30)
        tags = {k.lower(): v for k, v in ffprobe_json(out)["format"]["tags"].items()}
        assert json.loads(tags["description"])["seed"] == PARAMS["seed"]
        outputs[parts] = decode_gray(out)
    one = outputs[1].astype(int)
    shifted = np.abs(one[1:29] - one[:28]).mean(axis=(1, 2))
    assert shifted.min() > 3  # so a frame out of place would show
    for parts in (2, 3):
        diff = np.abs(outputs[parts].astype(int) - one).mean(axis=(1, 2))
        assert diff.max() < 2, diff.round(2)  # lossy coding differs slightly; never a frame out of place


def decode_gray(path: Path) -> np.ndarray:
    raw = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 48, 48)


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


def test_a_stop_request_kills_running_processes() -> None:
    import time

    from encoder.ffmpeg import EncodeCanceled, run_all

    started = time.monotonic()
    asked: list[float] = []

    def should_stop() -> bool:
        asked.append(time.monotonic() - started)
        return len(asked) >= 2  # the second check, about half a second in

    with pytest.raises(EncodeCanceled):
        run_all([["sleep", "30"], ["sleep", "30"]], timeout=60, should_stop=should_stop)
    assert time.monotonic() - started < 10


def test_a_canceled_encode_publishes_nothing(tmp_path: Path) -> None:
    from encoder.ffmpeg import EncodeCanceled

    write_frames(tmp_path, 6)
    opts = AnimationOptions.model_validate({"duration": 120, "interpolation": "mci"})  # would take a while
    out = tmp_path / "out.mp4"
    with pytest.raises(EncodeCanceled):
        encode_to(tmp_path, 6, opts, out, timeout=600, should_stop=lambda: True)
    assert not out.exists()


@pytest.mark.parametrize("codec", list(Codec))
def test_a_join_and_probe_started_ahead_match_the_ones_run_after(tmp_path: Path, codec: Codec) -> None:
    """encoder.stream.Standby: the join reads the metadata on stdin, ffprobe the video; the video and
    the answer are those of a join given the metadata as arguments and ffprobe given the file."""
    import time

    from encoder.encode import metadata
    from encoder.ffmpeg import concat_args, probe, run, write_listing
    from encoder.stream import Standby

    write_frames(tmp_path, 6)
    part = encode(tmp_path, 6, duration=1, codec=codec)
    folder = tmp_path / "parts"
    folder.mkdir()
    parts = [part.rename(folder / f"part-0{part.suffix}")]
    parts.append(folder / f"part-1{part.suffix}")
    parts[1].write_bytes(parts[0].read_bytes())
    # what escapes in a metadata file: = ; # \ and a newline
    tags = metadata({**PARAMS, "prompt": "a = b; # c \\ d\ne"})
    standby = Standby(folder, codec, ffmpeg=FFMPEG, ffprobe=FFPROBE)
    try:
        time.sleep(0.2)
        assert standby.joiner.proc.poll() is None and standby.prober.proc.poll() is None  # waiting on stdin
        joined = standby.join(parts, tags, time.monotonic() + 60)
        answer = standby.probe(time.monotonic() + 60)
    finally:
        standby.kill()
    listing = folder / "direct.ffconcat"
    write_listing(listing, [p.name for p in parts])
    direct = folder / f"direct{part.suffix}"
    run(concat_args(ffmpeg=FFMPEG, listing=listing, output=direct, codec=codec, metadata=tags), timeout=60)
    assert answer == probe(FFPROBE, joined) == probe(FFPROBE, direct)
    assert answer.frames == 2 * probe(FFPROBE, parts[0]).frames
    if CODECS[codec].metadata:
        assert answer.tags["title"] == tags["title"] and answer.tags["comment"] == tags["comment"]

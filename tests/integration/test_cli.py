"""``python -m encoder``: the command-line encoder, as a real process with the real ffmpeg."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import ffprobe_json

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "encoder", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def frames(folder: Path, count: int) -> Path:
    folder.mkdir()
    for step in range(1, count + 1):
        image = np.full((40, 56, 3), 12 * step, np.uint8)
        image[step : step + 6, step : step + 6] = 255
        # The extension's names: they sort by step.
        Image.fromarray(image).save(folder / f"0000{step:03d}-7-a 'quoted' prompt ✨.png")
    (folder / "notes.txt").write_text("not a frame")
    return folder


def test_encodes_a_folder_and_prints_the_command_in_debug(tmp_path: Path) -> None:
    src = frames(tmp_path / "my frames", 10)
    out = tmp_path / "out dir" / "video.webm"
    args = [str(src), "--codec", "vp9", "--duration", "1", "--interpolation", "blend", "-o", str(out), "--debug"]
    result = cli(*args, "--title", 'say "hi"')
    assert result.returncode == 0, result.stderr
    assert "ffmpeg: " in result.stderr and "minterpolate=fps=30:mi_mode=blend" in result.stderr
    assert "libvpx-vp9" in result.stderr
    assert f"{out}: vp9 56x40 yuv420p, 30 frames" in result.stdout
    info = ffprobe_json(out)
    assert info["streams"][0]["codec_name"] == "vp9"
    assert int(info["streams"][0]["nb_read_frames"]) == 30
    tags = {k.lower(): v for k, v in info["format"]["tags"].items()}
    assert tags["title"].startswith('say "hi"')


def test_codec_follows_the_output_and_skip_and_hold_work(tmp_path: Path) -> None:
    src = frames(tmp_path / "f", 10)
    out = tmp_path / "v.gif"
    result = cli(str(src), "-o", str(out), "--duration", "2", "--skip-steps", "4", "--hold-last", "1")
    assert result.returncode == 0, result.stderr
    assert "ffmpeg: " not in result.stderr
    stream = ffprobe_json(out)["streams"][0]
    assert stream["codec_name"] == "gif" and int(stream["nb_read_frames"]) == 30  # 3 s at 10 fps


def test_clear_errors(tmp_path: Path) -> None:
    src = frames(tmp_path / "f", 3)
    cases = [
        ([str(tmp_path / "nope"), "-o", "x.mp4"], "is not a folder"),
        ([str(src), "-o", str(tmp_path / "x.webm"), "--codec", "h264"], "h264 is written as .mp4"),
        ([str(src), "-o", str(tmp_path / "x.avi")], "cannot tell the codec"),
        ([str(src), "-o", str(tmp_path / "x.mp4"), "--duration", "500"], "--duration: Input should be less than"),
        ([str(src), "-o", str(tmp_path / "x.mp4"), "--skip-steps", "3"], "leaves no frame"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    no_path = {**os.environ, "PATH": "/nonexistent"}
    result = cli(str(src), "-o", str(tmp_path / "x.mp4"), "--ffprobe", "/no/ffprobe", env=no_path)
    assert result.returncode == 1
    # ffmpeg: setting (unset), PATH, imageio-ffmpeg when installed; then ffprobe: setting, PATH
    assert "not found; tried setting" in result.stderr and "PATH" in result.stderr
    assert not list(tmp_path.glob("x.*"))

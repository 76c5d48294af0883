"""Every shell and Python example of the README, run as written against ``make serve``'s stack.

The stack is ``scripts/serve.py`` itself (what ``make serve SERVE_ARGS="--allow-webhooks-to
127.0.0.1"`` runs) on a free port; the only change made to an example is that address (and
the webhook listener's port, 9000, which may be taken). Shell blocks run with ``bash -euo
pipefail`` in a folder holding what a user would have (``photo.jpg``, a ``frames/`` folder),
with the venv's ``bin`` on ``PATH`` and ``STEPANIM_URL`` exported, as the README's first CLI
block asks. The two ``make`` commands are run by ``tests/e2e/test_commands.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from scripts.devstack import ROOT, free_port
from tests.conftest import ffprobe_json
from tests.processes import start_serve

pytestmark = pytest.mark.slow

README = (ROOT / "README.md").read_text()
BLOCKS = [(kind, text) for kind, text in re.findall(r"```(sh|python)\n(.*?)```", README, re.S)]
MAKE_ONLY = [
    text for kind, text in BLOCKS if kind == "sh" and all(line.startswith("make ") for line in text.splitlines())
]
EXAMPLES = [(kind, text) for kind, text in BLOCKS if text not in MAKE_ONLY]

# What some examples must show beyond running without an error (a phrase of the block -> a check).
EXPECTED_OUTPUT = {
    "prefer: wait=60": '"status": "succeeded"',
    '"a bulldozer"': "does not know the words 'bulldozer'",
    "webhook listen": "animation.succeeded",
    "python -m stepanim.auth": '"sha256"',
}
EXPECTED_FILES = {
    "rocket.webm": ["rocket.webm", "apple-40.mp4", "apple-41.mp4", "cat.mp4", "cat.gif"],
    "frames.zip": ["frames.zip"],
    "sunflower.mp4": ["sunflower.mp4"],
    "penguin.mp4": ["penguin.mp4"],
    "dolphin.mp4": ["dolphin.mp4"],
    "grid.mp4": ["grid.mp4"],
    "grid4.mp4": ["grid4.mp4"],
    "out.webm": ["out.webm"],
}


def test_the_readme_has_the_examples_this_test_expects() -> None:
    assert len(MAKE_ONLY) == 1 and "make demo" in MAKE_ONLY[0] and "make test" in MAKE_ONLY[0]
    assert len(EXAMPLES) >= 10
    for phrase in [*EXPECTED_OUTPUT, *EXPECTED_FILES]:
        assert any(phrase in text for _, text in EXAMPLES), phrase


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("serve")
    port = free_port()
    proc, log = start_serve(data, port, "--allow-webhooks-to", "127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not _models_published(url):  # the render worker has told the API what it has
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        if proc.poll() is None:
            proc.kill()


def _models_published(url: str) -> bool:
    try:
        caps = httpx.get(f"{url}/capabilities", timeout=2)
    except httpx.HTTPError:
        return False
    return caps.status_code == 200 and any(m["name"] == "digits" for m in caps.json()["models"])


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """What a user's folder holds when trying the examples: a photo, and frames to encode."""
    Image.new("RGB", (96, 64), (200, 120, 40)).save(tmp_path / "photo.jpg")
    frames = tmp_path / "frames"
    frames.mkdir()
    for step in range(1, 9):
        Image.new("RGB", (64, 64), (step * 30, 90, 255 - step * 30)).save(frames / f"{step:03d}.png")
    return tmp_path


def as_run_here(text: str, url: str, listener_port: int) -> str:
    text = text.replace("http://127.0.0.1:8000", url)
    return text.replace("127.0.0.1:9000", f"127.0.0.1:{listener_port}").replace(
        "--port 9000", f"--port {listener_port}"
    )


@pytest.mark.parametrize(("kind", "text"), EXAMPLES, ids=[f"{kind}-{n}" for n, (kind, _) in enumerate(EXAMPLES)])
def test_the_example_runs_as_written(
    serve: str, workdir: Path, kind: str, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = as_run_here(text, serve, free_port())
    if kind == "sh":
        env = {**os.environ, "STEPANIM_URL": serve, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        env.pop("STEPANIM_API_KEY", None)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{code}\n---\n{output}"
    else:
        here = Path.cwd()
        os.chdir(workdir)
        try:
            exec(compile(code, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102 (our own README)
        finally:
            os.chdir(here)
        output = capsys.readouterr().out
    for phrase, expected in EXPECTED_OUTPUT.items():
        if phrase in text:
            assert expected in output, output
    for phrase, files in EXPECTED_FILES.items():
        if phrase in text:
            for name in files:
                assert (workdir / name).stat().st_size > 0, name
                if name.endswith((".mp4", ".webm", ".gif")):
                    assert ffprobe_json(workdir / name)["streams"], name

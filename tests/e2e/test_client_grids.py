"""Grids through the Python clients and ``stepanim grid`` (as a separate process) against the whole
service on real processes, with the committed digits model: small grids of few steps at 32 px."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client import ApiError, AsyncClient, Client, GridPublic
from tests.conftest import ffprobe_json
from tests.e2e.conftest import Service
from tests.e2e.test_client_cli import ROOT, ok, one_line_error

BASE = {"prompt": "the number 3", "steps": 3, "seed": 5, "animation": {"duration": 1, "fps": 10}}
SMALL = ["--steps", "3", "--seed", "5", "--duration", "1", "--fps", "10"]


def stepanim(service: Service, *argv: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client", *argv],
        cwd=ROOT,
        env=cli_env(service),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli_env(service: Service) -> dict[str, str]:
    env = {**os.environ, "STEPANIM_URL": service.url, "PYTHONPATH": str(ROOT)}
    env.pop("STEPANIM_API_KEY", None)
    return env


def playable(path: Path, frames: int) -> dict[str, object]:
    stream = next(s for s in ffprobe_json(path)["streams"] if s["codec_type"] == "video")
    assert int(stream["nb_read_frames"]) == frames
    return stream  # type: ignore[no-any-return]


def test_the_python_clients_round_trip_a_grid(digits_service: Service, tmp_path: Path) -> None:
    with Client(digits_service.url) as api:
        grid = api.create_grid(BASE, ("seed", [1, 2]), idempotency_key="client-grid-1")
        again = api.create_grid(BASE, {"field": "seed", "values": [1, 2]}, idempotency_key="client-grid-1")
        assert again.id == grid.id  # a retried create never starts a second grid
        assert [c.x_label for c in grid.cells] == ["1", "2"] and grid.progress.steps_total == 6

        seen: list[GridPublic] = []
        done = api.wait_grid(grid.id, timeout=240, on_progress=seen.append, poll_interval=0.2)
        assert done.status == "succeeded", done.error
        assert done.progress.cells_done == 2 and done.progress.steps_done == 6
        steps = [g.progress.steps_done for g in seen]
        assert steps == sorted(steps) and seen[-1].status == "succeeded"
        assert all(cell.video is not None and cell.status == "succeeded" for cell in done.cells)
        path = api.download_grid(done, tmp_path / "grid.mp4")
        playable(path, 10)  # 1 s at 10 fps

        events = list(api.grid_events(grid.id))
        assert events[-1].is_final and events[-1].grid is not None and events[-1].grid.video is not None
        assert {e.event for e in events} >= {"status", "cell"}
        assert all(e.grid is not None and e.grid.id == grid.id for e in events if e.event in ("status", "cell"))

        with pytest.raises(ApiError) as finished:
            api.cancel_grid(grid.id)
        assert (finished.value.status, finished.value.code) == (409, "already_finished")

        rendition = api.create_grid_rendition(grid.id, {"codec": "gif", "duration": 1, "fps": 5})
        rendition = api.wait_grid_rendition(grid.id, rendition.id, timeout=120, poll_interval=0.2)
        assert rendition.status == "succeeded" and rendition.video is not None
        gif = api.download(rendition.video.url, tmp_path / "grid.gif")
        assert playable(gif, 5)["codec_name"] == "gif"
        assert [r.id for r in api.get_grid(grid.id).renditions] == [rendition.id]

        with pytest.raises(ApiError) as refused:
            api.create_grid(BASE, ("steps", [3, 2000]))
        assert refused.value.status == 422
        assert "cells[1,0].steps" in {d["field"] for d in refused.value.details}

    async def run() -> GridPublic:
        async with AsyncClient(digits_service.url) as api:
            grid = await api.create_grid(BASE, ("steps", [2, 3]), allow_partial=True)
            updates: list[int] = []

            async def progress(g: GridPublic) -> None:
                updates.append(g.progress.steps_done)

            done = await api.wait_grid(grid.id, timeout=240, on_progress=progress, poll_interval=0.2)
            assert updates == sorted(updates) and updates[-1] == 5
            await api.download_grid(done, tmp_path / "async.mp4")
            return done

    done = asyncio.run(run())
    assert done.status == "succeeded" and done.allow_partial
    playable(tmp_path / "async.mp4", 10)


def test_stepanim_grid_waits_and_writes_a_playable_video(digits_service: Service, tmp_path: Path) -> None:
    target = tmp_path / "grid.mp4"
    # A prompt axis: search and replace, its values with spaces (quoted as one argument).
    result = stepanim(
        digits_service,
        *("grid", "the number 3", "--x", "scheduler=euler_a,ddim", "--y", "prompt=number 3,handwritten 7"),
        *(*SMALL, "--wait", "-o", str(target)),
    )
    assert ok(result).splitlines() == [str(target)]
    stream = playable(target, 10)
    assert stream["codec_name"] == "h264"
    progress = result.stderr.splitlines()
    assert progress[0].startswith("grid ") and progress[0].endswith(" queued (4 cells)"), progress
    assert any(re.fullmatch(r"(queued|rendering) \[[#-]+\] [0-4]/4 cells, \d+/12 steps", line) for line in progress)
    assert progress[-1] == "succeeded"

    grid_id = progress[0].split()[1]
    shown = ok(stepanim(digits_service, "grid-status", grid_id))
    assert f"id         {grid_id}" in shown and "status     succeeded (4/4 cells, 12/12 steps)" in shown
    assert "axis       y prompt: number 3, handwritten 7" in shown and "video      http" in shown
    cells = [line for line in shown.splitlines() if line.startswith("cell ")]
    assert len(cells) == 4 and cells[-1].endswith("ddim / handwritten 7")
    grid = json.loads(ok(stepanim(digits_service, "grid-status", grid_id, "--json")))
    prompts = {digits_service.get(cell["id"])["request"]["prompt"] for cell in grid["cells"]}
    assert prompts == {"the number 3", "the handwritten 7"}
    waited = ok(stepanim(digits_service, "grid-wait", grid_id, "--quiet")).strip()
    assert waited.split("?")[0] == grid["video"]["url"].split("?")[0]  # signed anew: another expiry second
    gif = tmp_path / "again.gif"
    rerendered = stepanim(digits_service, "grid-rerender", grid_id, "--codec", "gif", "--fps", "5", "-o", str(gif))
    assert ok(rerendered).strip() == str(gif) and playable(gif, 25)["codec_name"] == "gif"  # 5 s: the default

    finished = stepanim(digits_service, "grid-cancel", grid_id)
    one_line_error(finished, 3, "the grid already succeeded; it cannot be canceled (HTTP 409 already_finished)")


def test_stepanim_grid_names_the_cell_of_a_bad_value(digits_service: Service) -> None:
    refused = stepanim(
        digits_service, "grid", "the number 3", "--x", "steps=3,2000", "--y", "scheduler=euler_a,no_such_sampler"
    )
    one_line_error(refused, 3, "cells[1,0].steps (steps=2000, scheduler=euler_a): ")
    assert "cells[0,1].scheduler (steps=3, scheduler=no_such_sampler): " in refused.stderr
    assert refused.stderr.rstrip().endswith("(HTTP 422 invalid_request)")
    cases = [
        (("grid", "p", "--x", "seed=1,one"), 2, "argument --x: seed: 'one' is not a whole number"),
        (("grid", "p", "--x", "seed=1", "--y", "seed=2"), 2, "--y: the same field as --x (seed)"),
        (("grid", "p", "--x", "seed=" + ",".join(map(str, range(16))), "--y", "steps=" + ",".join("3" * 5)), 2,
         "--x x --y: 80 cells is above this server's limit of 64"),
        (("grid-status", "0" * 32), 3, f"no grid with id '{'0' * 32}' (HTTP 404 not_found)"),
    ]  # fmt: skip
    for argv, code, message in cases:
        one_line_error(stepanim(digits_service, *argv), code, message)


def test_ctrl_c_while_waiting_leaves_the_grid_running(digits_service: Service) -> None:
    waiting = subprocess.Popen(
        [sys.executable, "-m", "client", "grid", "the number 3", "--x", "seed=1,2", "--steps", "200", "--wait"],
        cwd=ROOT,
        env=cli_env(digits_service),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert waiting.stderr is not None
        first = waiting.stderr.readline()  # "grid <id> queued (2 cells)"
        grid_id = first.split()[1]
        deadline = time.monotonic() + 60
        while ok(stepanim(digits_service, "grid-status", grid_id, "--json")).find('"steps_done": 0,') >= 0:
            assert time.monotonic() < deadline
        waiting.send_signal(signal.SIGINT)
        _, err = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 130, err
    assert (
        err.splitlines()[-1]
        == f"stepanim: interrupted; grid {grid_id} keeps running (`stepanim grid-cancel {grid_id}`)"
    )
    assert json.loads(ok(stepanim(digits_service, "grid-status", grid_id, "--json")))["status"] in (
        "queued",
        "rendering",
    )
    assert ok(stepanim(digits_service, "grid-cancel", grid_id)).strip() == f"{grid_id} canceled"

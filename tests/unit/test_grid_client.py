"""The grid client's and ``stepanim grid``'s pure logic: axes from the command line, the body of
POST /grids, a refusal naming its cells with their values, and the grid progress line."""

from __future__ import annotations

import argparse
import io

import pytest
from pydantic import ValidationError

from client import _core, cli, grid_cli
from client.errors import ApiError
from client.grid_cli import axis_value, named_cells, parse_axis
from client.models import GridAxis, GridPublic
from client.progress import GridProgressBar, render_grid_line


@pytest.mark.parametrize(
    ("text", "field", "values"),
    [
        ("scheduler=euler_a,dpmpp_2m,ddim", "scheduler", ["euler_a", "dpmpp_2m", "ddim"]),
        ("seed=1, 2", "seed", [1, 2]),
        ("steps=10,20", "steps", [10, 20]),
        ("guidance-scale=3,7.5", "guidance_scale", [3.0, 7.5]),
        ("strength=0.5", "strength", [0.5]),
        ("lora=0,0.5,1", "lora", [0.0, 0.5, 1.0]),
        ("prompt=lighthouse,red barn,old windmill", "prompt", ["lighthouse", "red barn", "old windmill"]),
        ('prompt=lighthouse,"barn, red",x=y', "prompt", ["lighthouse", "barn, red", "x=y"]),
        ("scheduler=DPM++ 2M Karras,Euler a", "scheduler", ["DPM++ 2M Karras", "Euler a"]),
    ],
)
def test_an_axis_from_the_command_line_takes_its_fields_type(text: str, field: str, values: list[object]) -> None:
    axis = parse_axis(text)
    assert axis.field == field and axis.values == values
    assert [type(v) for v in axis.values] == [type(v) for v in values]  # 1 is an int, 1.0 a float


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed=1,two", "seed: 'two' is not a whole number"),
        ("steps=2.5", "steps: '2.5' is not a whole number"),
        ("guidance_scale=high", "guidance_scale: 'high' is not a number"),
        ("guidance_scale=nan", "guidance_scale: 'nan' is not a number"),
        ("sampler=euler", "with FIELD one of scheduler, schedule, steps"),
        ("scheduler", "expected FIELD=V1,V2,..."),
        ("seed=", "give one or more values"),
        ("seed=1,,2", "none empty"),
    ],
)
def test_a_bad_axis_is_a_usage_error(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message.replace("+", r"\+").replace(".", r"\.")):
        parse_axis(text)


def test_a_bad_axis_on_the_command_line_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["grid", "p", "--x", "seed=1,x"])
    assert exit_.value.code == cli.EXIT_USAGE
    assert capsys.readouterr().err.splitlines() == [
        "stepanim grid: error: argument --x: seed: 'x' is not a whole number (see stepanim grid --help)"
    ]


def test_axis_values_keep_text_for_text_fields() -> None:
    assert axis_value("model", "10") == "10"
    assert axis_value("seed", "10") == 10


def test_the_grid_body_has_only_what_was_set() -> None:
    body = _core.grid_body(
        {"prompt": "the number 3", "steps": 4}, ("scheduler", ["euler_a", "ddim"]), {"field": "seed", "values": [1]}
    )
    assert body == {
        "base": {"prompt": "the number 3", "steps": 4},
        "x": {"field": "scheduler", "values": ["euler_a", "ddim"]},
        "y": {"field": "seed", "values": [1]},
    }
    partial = _core.grid_body({"prompt": "p"}, GridAxis(field="steps", values=[2, 3]), allow_partial=True)
    assert partial["allow_partial"] is True and "y" not in partial
    with pytest.raises(ValidationError):
        _core.grid_body({"prompt": "p"}, ("sampler", ["euler"]))  # a typo fails here, not on the server
    with pytest.raises(ValidationError):
        _core.grid_body({"prompt": "p", "stepz": 3}, ("seed", [1]))


def test_a_refusal_names_each_cell_with_its_values() -> None:
    error = ApiError(
        422,
        "invalid_request",
        "cells[1,0].steps: 2000 is above this server's limit of 200; cells[0,1].scheduler: unknown",
        details=[
            {"field": "cells[1,0].steps", "message": "2000 is above this server's limit of 200"},
            {"field": "cells[0,1].scheduler", "message": "unknown"},
            {"field": "base.renditions", "message": "not in a grid"},
        ],
    )
    x = GridAxis(field="steps", values=[10, 2000])
    y = GridAxis(field="scheduler", values=["euler_a", "nope"])
    named = named_cells(error, x, y)
    assert named.status == 422 and named.details == error.details
    assert str(named) == (
        "cells[1,0].steps (steps=2000, scheduler=euler_a): 2000 is above this server's limit of 200; "
        "cells[0,1].scheduler (steps=10, scheduler=nope): unknown; base.renditions: not in a grid "
        "(HTTP 422 invalid_request)"
    )
    one_axis = named_cells(
        ApiError(422, "invalid_request", "m", details=[{"field": "cells[0,0].guidance_scale", "message": "m"}]),
        GridAxis(field="guidance_scale", values=[1.5]),
        None,
    )
    assert one_axis.message == "cells[0,0].guidance_scale (guidance_scale=1.5): m"
    other = ApiError(422, "limit_exceeded", "x.values: too many", details=[{"field": "x.values", "message": "m"}])
    assert named_cells(other, x, y) is other


GRID = {
    "id": "9b1d2c3e4f5a6b7c8d9e0f1a2b3c4d5e",
    "status": "rendering",
    "created_at": "2026-01-02T03:04:05Z",
    "updated_at": "2026-01-02T03:04:05Z",
    "started_at": None,
    "finished_at": None,
    "seed": 5,
    "x": {"field": "seed", "values": [1, 2]},
    "y": None,
    "allow_partial": False,
    "progress": {"cells_done": 0, "cells_total": 2, "steps_done": 0, "steps_total": 8},
    "cells": [
        {
            "index": i,
            "x": i,
            "y": 0,
            "x_label": str(i + 1),
            "y_label": None,
            "id": f"{i}" * 32,
            "status": "rendering",
            "step": 0,
            "total": 4,
            "video": None,
            "error": None,
        }
        for i in range(2)
    ],
    "video": None,
    "error": None,
    "urls": {"get": "g", "cancel": "c", "stream": "s"},
    "base": {"prompt": "the number 3"},
}


def grid(status: str, cells_done: int, steps_done: int) -> GridPublic:
    progress = {"cells_done": cells_done, "cells_total": 2, "steps_done": steps_done, "steps_total": 8}
    return GridPublic.model_validate({**GRID, "status": status, "progress": progress})


def test_the_grid_progress_line() -> None:
    line = render_grid_line("rendering", 1, 6, 12, 54, 6.4, width=10)
    assert line == "rendering [##--------] 1/6 cells, 12/54 steps  ETA 0:06"
    assert render_grid_line("encoding", 6, 6, 54, 54, None) == "encoding"


def test_a_grid_progress_bar_off_a_terminal_writes_what_changed() -> None:
    out, now = io.StringIO(), [0.0]
    bar = GridProgressBar(out, tty=False, clock=lambda: now[0])
    for status, cells, steps in [("queued", 0, 0), ("rendering", 0, 2), ("rendering", 0, 4), ("rendering", 1, 6)]:
        now[0] += 0.1
        bar.update(grid(status, cells, steps))
    now[0] += 2
    bar.update(grid("rendering", 2, 8))
    bar.update(grid("encoding", 2, 8))
    bar.update(grid("succeeded", 2, 8))
    lines = out.getvalue().splitlines()
    assert lines[0] == "queued [------------------------] 0/2 cells, 0/8 steps"
    assert lines[1].startswith("rendering [######------------------] 0/2 cells, 2/8 steps")
    assert lines[-3:] == ["rendering [########################] 2/2 cells, 8/8 steps", "encoding", "succeeded"]
    assert len(lines) == 5  # within a second only the status changes and the last step are written


def test_polled_grids_are_reported_when_they_move_on() -> None:
    assert _core.grid_changed(None, grid("queued", 0, 0))
    assert not _core.grid_changed(grid("rendering", 0, 2), grid("rendering", 0, 2))
    assert _core.grid_changed(grid("rendering", 0, 2), grid("rendering", 0, 3))
    assert _core.grid_changed(grid("rendering", 1, 8), grid("encoding", 1, 8))


def test_grid_events_carry_the_grid() -> None:
    event = _core.Event(event="cell", data={"cell": 0, "id": "0" * 32, "status": "succeeded", "grid": GRID})
    assert event.grid is not None and event.grid.id == GRID["id"] and not event.is_final
    final = _core.Event(event="status", data={"status": "succeeded", "animation": None, "grid": GRID})
    assert final.is_final and final.animation is None and final.grid is not None


def test_grid_commands_are_registered() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(
        ["grid", "a lighthouse", "--x", "scheduler=euler_a,ddim", "--y", "seed=1,2", "--steps", "4", "--wait"]
    )
    assert args.handler is grid_cli.create and args.x.values == ["euler_a", "ddim"] and args.y.values == [1, 2]
    assert cli.build_request(args).model_dump(exclude_unset=True) == {"prompt": "a lighthouse", "steps": 4}
    with pytest.raises(SystemExit):
        parser.parse_args(["grid", "p", "--x", "seed=1", "--batch-size", "2"])  # a cell renders one image
    for name in ("grid-status", "grid-wait", "grid-cancel", "grid-rerender"):
        assert parser.parse_args([name, "0" * 32]).id == "0" * 32

"""``stepanim grid`` and its companions: a grid of cells (POST /grids) from the command line.

    stepanim grid "a lighthouse" --x scheduler=euler_a,dpmpp_2m,ddim --y seed=1,2 --wait -o grid.mp4

An axis is ``FIELD=V1,V2,...``: each value is parsed to the field's type (whole numbers for
seed and steps, numbers for guidance_scale, strength and a LoRA's weight, text otherwise); a
value with a comma is quoted as in CSV (``--x 'prompt=lighthouse,"red, old barn"'``). The
base request takes ``submit``'s options. Registered by ``client.cli.build_parser``.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from collections.abc import Callable
from typing import get_args

from client.cli import (
    Cli,
    Parser,
    UsageError,
    add_request_options,
    add_video_options,
    build_request,
    positive,
    rendition_request,
)
from client.errors import ApiError, ConnectionFailed
from client.models import GridAxis, GridField, GridPublic
from client.progress import GridProgressBar

# The type of each axis's values in the request body (text for the others).
AXIS_TYPES: dict[str, type[int] | type[float]] = {
    "steps": int,
    "seed": int,
    "guidance_scale": float,
    "strength": float,
    "lora": float,  # the weight of the base request's first LoRA
}
CELL_FIELD = re.compile(r"^cells\[(\d+),(\d+)\](.*)$")


def axis_value(field: str, text: str) -> str | int | float:
    """``text`` as the value ``field`` takes in the request."""
    kind = AXIS_TYPES.get(field)
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{field}: {text!r} is not a whole number") from None
    if kind is float:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise argparse.ArgumentTypeError(f"{field}: {text!r} is not a number")
        return number
    return text


def parse_axis(text: str) -> GridAxis:
    """``scheduler=euler_a,ddim`` -> an axis; the values are CSV (quote one that has a comma)."""
    name, eq, rest = text.partition("=")
    field = name.strip().replace("-", "_")
    fields = [str(f) for f in get_args(GridField)]
    if not eq or field not in fields:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FIELD=V1,V2,... with FIELD one of {', '.join(fields)}")
    values = [value.strip() for value in next(csv.reader([rest], skipinitialspace=True), [])]
    if not values or any(value == "" for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more values, separated by commas, none empty")
    return GridAxis(field=field, values=[axis_value(field, value) for value in values])


def axis_text(axis: GridAxis, index: int) -> str:
    value = axis.values[index] if index < len(axis.values) else "?"
    return f"{axis.field}={value:g}" if isinstance(value, float) else f"{axis.field}={value}"


def named_cells(error: ApiError, x: GridAxis, y: GridAxis | None) -> ApiError:
    """A refusal whose causes name cells (``cells[1,0].steps``) with each cell's values as well:
    ``cells[1,0].steps (steps=2000, seed=1): ...``; any other error as it is."""
    if not any(CELL_FIELD.match(str(d.get("field", ""))) for d in error.details):
        return error
    parts = []
    for detail in error.details:
        field, message = str(detail.get("field", "")), str(detail.get("message", ""))
        match = CELL_FIELD.match(field)
        if match:
            column, row = int(match[1]), int(match[2])
            values = [axis_text(x, column)] + ([axis_text(y, row)] if y is not None else [])
            field = f"{field} ({', '.join(values)})"
        parts.append(f"{field}: {message}")
    return ApiError(
        error.status,
        error.code,
        "; ".join(parts),
        details=error.details,
        retry_after=error.retry_after,
        request_id=error.request_id,
    )


def describe_grid(grid: GridPublic) -> list[str]:
    """``grid-status``'s human output: the grid, then one line per cell."""
    progress = grid.progress
    status = f"{grid.status} ({progress.cells_done}/{progress.cells_total} cells, "
    status += f"{progress.steps_done}/{progress.steps_total} steps)"
    axes = [f"x {grid.x.field}: {', '.join(map(str, grid.x.values))}"]
    if grid.y is not None:
        axes.append(f"y {grid.y.field}: {', '.join(map(str, grid.y.values))}")
    rows = [
        ("id", grid.id),
        ("status", status),
        ("prompt", grid.base.prompt),
        *(("axis", text) for text in axes),
        ("created", grid.created_at.isoformat()),
    ]
    if grid.finished_at is not None:
        rows.append(("finished", grid.finished_at.isoformat()))
    if grid.error is not None:
        rows.append(("error", f"{grid.error.code}: {grid.error.message}"))
    if grid.video is not None:
        rows.append(("video", grid.video.url))
    for rendition in grid.renditions:
        url = rendition.video.url if rendition.video is not None else ""
        rows.append(("rendition", f"{rendition.id} {rendition.status} {rendition.options.codec} {url}".rstrip()))
    for cell in grid.cells:
        label = cell.x_label if cell.y_label is None else f"{cell.x_label} / {cell.y_label}"
        rows.append(("cell", f"{cell.id}  {cell.status or 'pending':<9}  {cell.step:>3}/{cell.total:<3}  {label}"))
    return [f"{name:<10} {value}" for name, value in rows]


# Commands: each takes the Cli (its client, output streams and options) as ``Cli``'s methods do.


def create(cli: Cli) -> int:
    args = cli.args
    request = build_request(args)
    x, y = args.x, args.y
    if y is not None and y.field == x.field:
        raise UsageError(f"--y: the same field as --x ({x.field}); a grid varies two fields")
    check_cells(cli, len(x.values) * (len(y.values) if y is not None else 1))
    cli.check_limits(request)
    request = cli.uploaded_init_image(request)
    try:
        grid = cli.api.create_grid(
            request, x, y, allow_partial=args.allow_partial, idempotency_key=args.idempotency_key
        )
    except ApiError as e:
        raise named_cells(e, x, y) from e
    if not (args.wait or args.output):
        return cli.show(grid, grid.id)
    cli.note(f"grid {grid.id} {grid.status} ({grid.progress.cells_total} cells)")
    return finish(cli, grid.id)


def check_cells(cli: Cli, count: int) -> None:
    """More cells than the server's ``max_grid_cells`` is refused before anything is sent."""
    try:
        most = cli.api.capabilities().limits.max_grid_cells
    except (ApiError, ConnectionFailed):
        return  # POST /grids says it
    if count > most:
        raise UsageError(f"--x x --y: {count} cells is above this server's limit of {most}")


def finish(cli: Cli, grid_id: str) -> int:
    """Wait with a progress line (cells and steps done), then print the grid video's URL or download it."""
    args = cli.args
    bar = None if cli.quiet else GridProgressBar(cli.err)
    with cli.waiting(bar, f"grid {grid_id}", f"grid-cancel {grid_id}"):
        grid = cli.api.wait_grid(grid_id, timeout=args.timeout, on_progress=bar.update if bar else None)
    if grid.status != "succeeded" or grid.video is None:
        raise cli.failure("grid", grid)
    if args.output:
        return cli.show(grid, str(cli.api.download_grid(grid, args.output)))
    return cli.show(grid, grid.video.url)


def wait(cli: Cli) -> int:
    return finish(cli, cli.args.id)


def status(cli: Cli) -> int:
    grid = cli.api.get_grid(cli.args.id)
    return cli.show(grid, "\n".join(describe_grid(grid)))


def cancel(cli: Cli) -> int:
    grid = cli.api.cancel_grid(cli.args.id)
    return cli.show(grid, f"{grid.id} {grid.status}")


def rerender(cli: Cli) -> int:
    rendition = cli.api.create_grid_rendition(cli.args.id, rendition_request(cli.args))
    return cli.follow_rendition(rendition, f"grid {cli.args.id}", cli.api.wait_grid_rendition)


# The parser


def add_grid_wait_options(parser: argparse.ArgumentParser, *, what: str = "grid", flag: bool = True) -> None:
    group = parser.add_argument_group("waiting")
    if flag:
        group.add_argument(
            "--wait", action="store_true", help=f"wait for the {what}, showing progress on stderr; print its video URL"
        )
    implies = " (implies --wait)" if flag else ""
    group.add_argument("-o", "--output", metavar="FILE", help=f"download the {what}'s video to FILE{implies}")
    group.add_argument(
        "--timeout", type=positive(float), metavar="SECONDS", help="give up waiting after this long (exit 5)"
    )


def add_commands(command: Callable[..., Parser]) -> None:
    """The grid commands, made by ``build_parser``'s ``command(name, help, handler)``."""
    grid = command(
        "grid",
        "start a grid: every combination of the --x and --y values is a cell, one video of them all (POST /grids)",
        create,
    )
    grid.add_argument("prompt", help="what every cell draws (a prompt axis replaces its first value in it)")
    axes = grid.add_argument_group("axes")
    axes.add_argument(
        "--x",
        required=True,
        type=parse_axis,
        metavar="FIELD=V1,V2,...",
        help="the columns: a field and its values, e.g. scheduler=euler_a,dpmpp_2m,ddim or "
        "'prompt=lighthouse,red barn' (the first value must occur in the prompt); FIELD is one of "
        f"{', '.join(map(str, get_args(GridField)))}",
    )
    axes.add_argument("--y", type=parse_axis, metavar="FIELD=V1,V2,...", help="the rows, as --x (optional)")
    axes.add_argument(
        "--allow-partial",
        action="store_true",
        help="make the video with a placeholder for each failed cell, instead of failing the grid",
    )
    add_request_options(grid, grid=True)
    grid.add_argument("--idempotency-key", metavar="KEY", help="reuse to make a repeated grid return the same grid")
    add_grid_wait_options(grid)

    waiting = command("grid-wait", "wait for a grid, then print its video URL or download it", wait)
    waiting.add_argument("id", help="grid id")
    add_grid_wait_options(waiting, flag=False)

    shown = command("grid-status", "show a grid and its cells (GET /grids/{id})", status)
    shown.add_argument("id", help="grid id")

    canceled = command("grid-cancel", "cancel a grid and its unfinished cells (safe to repeat)", cancel)
    canceled.add_argument("id", help="grid id")

    again = command("grid-rerender", "make another video of a succeeded grid (POST /grids/{id}/renditions)", rerender)
    again.add_argument("id", help="grid id")
    add_video_options(again, "video")
    add_grid_wait_options(again, what="rendition")

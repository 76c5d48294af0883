"""Grids: one request, a synced grid animation comparing how samplers, seeds or step counts denoise.

A grid is a base request (everything ``POST /animations`` takes) and up to two axes, X and Y,
each naming one field and its values. Every combination is a *cell*: the base request with the
axis values applied, an ordinary animation job of its own (``cell_requests``), rendered by the
render workers like any other, so N GPU hosts render a grid about N times faster. When every
cell has finished, the encoder composes one video: the cells side by side in a labelled grid,
time-aligned on progress through the denoising (:func:`aligned_frames`: a 10-step and a 30-step
cell both start at noise and end at their last step together).

Pure: the models and the arithmetic. The grid record is a job of kind ``grid``
(``stepanim.jobs``); its cells are jobs whose ``parent`` is the grid; ``encoder.grid`` composes.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from stepanim.request import AnimationCreate
from stepanim.video_options import VideoOptions

AxisField = Literal[
    "scheduler", "schedule", "steps", "seed", "guidance_scale", "model", "prompt", "negative_prompt", "strength", "lora"
]
MAX_VALUES = 16  # per axis


class GridAxis(BaseModel):
    """One axis of a grid: a request field and the values its cells take, in order.

    ``prompt`` and ``negative_prompt`` work like the web UIs' "Prompt S/R": the first value must
    occur in the base text, and each value replaces it there (the first cell keeps the base text).
    ``lora`` varies the weight of the base request's first LoRA.
    """

    model_config = ConfigDict(extra="forbid")

    field: AxisField = Field(description="The request field this axis varies.", examples=["scheduler"])
    values: list[str | int | float] = Field(
        min_length=1,
        max_length=MAX_VALUES,
        description="The values, one column (X) or row (Y) each.",
        examples=[["euler_a", "dpmpp_2m", "ddim"]],
    )


class GridCreate(BaseModel):
    """Body of POST /grids."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "base": {"prompt": "a lighthouse", "steps": 20, "animation": {"duration": 3}},
                    "x": {"field": "scheduler", "values": ["euler_a", "dpmpp_2m", "ddim"]},
                    "y": {"field": "seed", "values": [1, 2]},
                }
            ]
        },
    )

    base: AnimationCreate = Field(description="What every cell renders (and how the grid video is made).")
    x: GridAxis = Field(description="The columns.")
    y: GridAxis | None = Field(None, description="The rows (none: one row).")
    allow_partial: StrictBool = Field(
        False,
        examples=[False],
        description="When some cells fail: false fails the grid with their errors; true makes the video with a "
        "labelled placeholder in their place.",
    )


class Cell(BaseModel):
    """One cell: where it stands, its captions, and what it renders."""

    index: int  # row by row: y * columns + x
    x: int
    y: int
    x_label: str
    y_label: str | None
    request: AnimationCreate


class GridPlan(BaseModel):
    """What the grid record keeps (the base request is the record's ``request``): its axes and
    every cell's request as checked at create time (the model's defaults filled in)."""

    x: GridAxis
    y: GridAxis | None = None
    allow_partial: bool = False
    cells: list[Cell]

    @property
    def columns(self) -> int:
        return len(self.x.values)

    @property
    def rows(self) -> int:
        return len(self.y.values) if self.y is not None else 1


def label(value: Any) -> str:
    """A value as its caption shows it."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _apply(body: dict[str, Any], base: AnimationCreate, axis: GridAxis, value: Any) -> str | None:
    """Set ``axis`` to ``value`` in ``body`` (the base request as JSON); a problem, or None."""
    if axis.field in ("prompt", "negative_prompt"):
        find = str(axis.values[0])
        text = getattr(base, axis.field)
        if find not in text:
            return f"{axis.field}: the first value {find!r} does not occur in the base's {axis.field}"
        body[axis.field] = text.replace(find, str(value))
    elif axis.field == "lora":
        if not body.get("loras"):
            return "lora: the base request names no LoRA whose weight to vary"
        body["loras"] = [{**body["loras"][0], "weight": value}, *body["loras"][1:]]
    else:
        body[axis.field] = value
    return None


def grid_problems(grid: GridCreate) -> list[tuple[str, str]]:
    """What makes a grid invalid as a whole (field, message); the cells are checked by ``cell_requests``."""
    problems = []
    if grid.y is not None and grid.y.field == grid.x.field:
        problems.append(("y.field", f"the same field as x ({grid.x.field!r}); a grid varies two fields"))
    if grid.base.batch_size != 1:
        problems.append(("base.batch_size", "a grid's cells render one image each: 1"))
    if not grid.base.animation.keep_frames or grid.base.animation.frames_only:
        problems.append(
            ("base.animation", "a grid composes its cells' frames into a video: keep_frames true, not frames_only")
        )
    if "animation.progress" in grid.base.webhook_events and grid.base.webhook is not None:
        problems.append(("base.webhook_events", "a grid sends no progress webhooks (follow its events instead)"))
    if grid.base.renditions:
        problems.append(("base.renditions", "ask for more videos of a grid with POST /grids/{id}/renditions"))
    return problems


def cell_requests(grid: GridCreate) -> tuple[list[Cell], list[tuple[str, str]]]:
    """Every cell of the grid, row by row, and the problems found (field, message): a value
    that does not make a valid request is named by its cell and field."""
    base = grid.base.model_dump(mode="json", exclude_unset=True)
    base.pop("webhook", None)  # the grid's webhook is the grid's, not each cell's
    base.pop("webhook_events", None)
    rows = grid.y.values if grid.y is not None else [None]
    cells: list[Cell] = []
    problems: list[tuple[str, str]] = []
    for y, y_value in enumerate(rows):
        for x, x_value in enumerate(grid.x.values):
            where = f"cells[{x},{y}]"
            body = dict(base)
            found = [_apply(body, grid.base, grid.x, x_value)]
            if grid.y is not None:
                found.append(_apply(body, grid.base, grid.y, y_value))
            for problem in filter(None, found):
                field, _, message = problem.partition(": ")
                problems.append((f"{where}.{field}", message))
            try:
                request = AnimationCreate.model_validate(body)
            except ValidationError as e:
                for error in e.errors():
                    field = ".".join(str(part) for part in error["loc"]) or "base"
                    problems.append((f"{where}.{field}", str(error["msg"]).removeprefix("Value error, ")))
                continue
            cells.append(
                Cell(
                    index=len(cells),
                    x=x,
                    y=y,
                    x_label=label(x_value),
                    y_label=label(y_value) if grid.y is not None else None,
                    request=request,
                )
            )
    return cells, problems


def cell_id(grid_id: str, index: int) -> str:
    """The job id of cell ``index`` of grid ``grid_id``: the same on every try (the fan-out is idempotent)."""
    return hashlib.sha256(f"{grid_id}/cell/{index}".encode()).hexdigest()[:32]


def aligned_frames(counts: list[int]) -> list[list[int]]:
    """For each frame of the grid video, the frame (0-based) each cell shows: cells with ``counts``
    frames, aligned on progress through the denoising (all start together and end together).
    The grid has as many frames as its longest cell; a cell with fewer shows each of its frames
    a little longer."""
    total = max(counts)
    if total <= 1:
        return [[0 for _ in counts]]
    return [[round(j * (n - 1) / (total - 1)) for n in counts] for j in range(total)]


def video_options(base: AnimationCreate) -> VideoOptions:
    """How the grid video is made: the base request's animation options (applied to the composed frames)."""
    return VideoOptions.model_validate(base.animation.model_dump(include=set(VideoOptions.model_fields)))


CellOutcome = Literal["open", "succeeded", "failed"]
NextStep = Literal["fan_out", "wait", "compose", "fail", "done"]


def next_step(status: str, cells: list[CellOutcome | None], *, allow_partial: bool) -> NextStep:
    """What the grid task does with a grid in ``status`` whose cells are in ``cells`` (None: the
    cell's job does not exist yet). Pure; ``stepanim.grid_flow`` acts on it."""
    if status in ("succeeded", "failed", "canceled"):
        return "done"
    if status == "encoding":
        return "compose"
    if status == "queued" or None in cells:
        return "fan_out"
    if "open" in cells:
        return "wait"
    if "failed" not in cells or (allow_partial and "succeeded" in cells):
        return "compose"
    return "fail"

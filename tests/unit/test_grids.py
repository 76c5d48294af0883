"""Grids: the cells a request makes, how their frames line up, what the grid task does next, and
how a grid frame is laid out and composed (pure code and Pillow, no service)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from encoder.grid import BACKGROUND, MAX_WIDTH, PLACEHOLDER, compose, fit, font, layout
from stepanim.grids import GridCreate, GridPlan, aligned_frames, cell_id, cell_requests, grid_problems, next_step


def grid(**extra: Any) -> GridCreate:
    body: dict[str, Any] = {
        "base": {"prompt": "a red lighthouse", "steps": 10, "seed": 3},
        "x": {"field": "scheduler", "values": ["euler_a", "dpmpp_2m", "ddim"]},
        "y": {"field": "seed", "values": [1, 2]},
    }
    body.update(extra)
    return GridCreate.model_validate(body)


def plan_of(body: GridCreate) -> GridPlan:
    cells, problems = cell_requests(body)
    assert problems == []
    return GridPlan(x=body.x, y=body.y, cells=cells)


def test_every_combination_is_a_cell_row_by_row() -> None:
    cells, problems = cell_requests(grid())
    assert problems == []
    assert [(c.index, c.x, c.y) for c in cells] == [(0, 0, 0), (1, 1, 0), (2, 2, 0), (3, 0, 1), (4, 1, 1), (5, 2, 1)]
    assert [(c.request.scheduler, c.request.seed) for c in cells] == [
        ("euler_a", 1),
        ("dpmpp_2m", 1),
        ("ddim", 1),
        ("euler_a", 2),
        ("dpmpp_2m", 2),
        ("ddim", 2),
    ]
    assert [c.x_label for c in cells[:3]] == ["euler_a", "dpmpp_2m", "ddim"]
    assert {c.y_label for c in cells[3:]} == {"2"}
    assert all(c.request.prompt == "a red lighthouse" and c.request.steps == 10 for c in cells)


def test_a_web_ui_sampler_name_sets_the_sampler_and_its_schedule() -> None:
    cells, problems = cell_requests(grid(x={"field": "scheduler", "values": ["DPM++ 2M Karras", "Euler a"]}, y=None))
    assert problems == []
    assert [(c.request.scheduler, c.request.schedule) for c in cells] == [
        ("dpmpp_2m", "karras"),
        ("euler_a", "default"),
    ]
    assert [c.y_label for c in cells] == [None, None]


def test_prompt_search_and_replace() -> None:
    cells, problems = cell_requests(grid(x={"field": "prompt", "values": ["red", "blue", "green"]}, y=None))
    assert problems == []
    assert [c.request.prompt for c in cells] == ["a red lighthouse", "a blue lighthouse", "a green lighthouse"]


def test_every_bad_cell_is_named_by_its_place_and_field() -> None:
    body = grid(x={"field": "steps", "values": [10, 5000]}, y={"field": "guidance_scale", "values": [3, -1]})
    cells, problems = cell_requests(body)
    fields = sorted(field for field, _ in problems)
    assert fields == ["cells[0,1].guidance_scale", "cells[1,0].steps", "cells[1,1].guidance_scale", "cells[1,1].steps"]
    assert [c.index for c in cells] == [0]  # only the valid one


def test_a_prompt_axis_whose_first_value_is_not_in_the_prompt_is_refused() -> None:
    _, problems = cell_requests(grid(x={"field": "prompt", "values": ["cat", "dog"]}, y=None))
    assert ("cells[0,0].prompt", "the first value 'cat' does not occur in the base's prompt") in problems


def test_a_lora_axis_needs_a_lora_in_the_base() -> None:
    _, problems = cell_requests(grid(x={"field": "lora", "values": [0.5, 1.0]}, y=None))
    assert problems and problems[0][0] == "cells[0,0].lora"
    body = grid(
        base={"prompt": "a lighthouse", "loras": [{"name": "ink", "weight": 1.0}]},
        x={"field": "lora", "values": [0.25, 1.5]},
        y=None,
    )
    cells, problems = cell_requests(body)
    assert problems == []
    assert [c.request.loras[0].weight for c in cells] == [0.25, 1.5]


def test_what_a_grid_as_a_whole_must_be() -> None:
    assert grid_problems(grid()) == []
    body = grid(
        base={"prompt": "x", "batch_size": 2, "animation": {"keep_frames": False}, "renditions": [{"codec": "vp9"}]},
        y={"field": "scheduler", "values": ["ddim"]},
    )
    assert [field for field, _ in grid_problems(body)] == [
        "y.field",
        "base.batch_size",
        "base.animation",
        "base.renditions",
    ]


def test_cell_ids_are_stable_and_distinct() -> None:
    assert cell_id("g1", 0) == cell_id("g1", 0)
    assert len({cell_id("g1", i) for i in range(64)} | {cell_id("g2", 0)}) == 65
    assert len(cell_id("g1", 0)) == 32


def test_frames_are_aligned_on_progress_through_the_denoising() -> None:
    plan = aligned_frames([10, 30, 30])
    assert len(plan) == 30
    assert plan[0] == [0, 0, 0]
    assert plan[-1] == [9, 29, 29]  # the 10-step cell ends with the 30-step ones
    assert all(b >= a for a, b in zip([p[0] for p in plan], [p[0] for p in plan[1:]], strict=False))
    assert sorted({p[0] for p in plan}) == list(range(10))  # every frame of the short cell is shown
    assert plan[15][1] == 15 and plan[15][0] == round(15 * 9 / 29)
    assert aligned_frames([1, 1]) == [[0, 0]]


@pytest.mark.parametrize(
    ("status", "cells", "partial", "expected"),
    [
        ("queued", [None, None], False, "fan_out"),
        ("queued", ["open", "open"], False, "fan_out"),  # stored, but the grid was not marked: again (idempotent)
        ("rendering", ["open", None], False, "fan_out"),
        ("rendering", ["open", "succeeded"], False, "wait"),
        ("rendering", ["succeeded", "succeeded"], False, "compose"),
        ("rendering", ["succeeded", "failed"], False, "fail"),
        ("rendering", ["succeeded", "failed"], True, "compose"),
        ("rendering", ["failed", "failed"], True, "fail"),
        ("encoding", ["succeeded", "succeeded"], False, "compose"),
        ("canceled", ["open", "failed"], False, "done"),
        ("succeeded", ["succeeded"], False, "done"),
    ],
)
def test_what_the_grid_task_does_next(status: str, cells: list[Any], partial: bool, expected: str) -> None:
    assert next_step(status, cells, allow_partial=partial) == expected


def test_the_layout_fits_and_has_even_sides() -> None:
    small = layout(plan_of(grid()), (128, 128))
    assert small.tile == (128, 128)
    width, height = small.size
    assert width % 2 == 0 and height % 2 == 0
    assert width >= small.gutter + 3 * 128 and height >= small.header + 2 * 128
    wide = layout(plan_of(grid(x={"field": "seed", "values": list(range(16))}, y=None)), (512, 512))
    assert wide.size[0] <= MAX_WIDTH and wide.tile[0] < 512 and wide.gutter == 0


def test_captions_are_cut_to_fit() -> None:
    face = font(14)
    assert fit("ddim", face, 200) == "ddim"
    short = fit("a very long caption that cannot fit in a small tile", face, 60)
    assert short.endswith("…") and face.getlength(short) <= 60


def frames_of(folder: Path, colours: list[tuple[int, int, int]]) -> list[Path]:
    folder.mkdir()
    paths = []
    for i, colour in enumerate(colours):
        path = folder / f"{i:05d}.png"
        Image.new("RGB", (32, 32), colour).save(path)
        paths.append(path)
    return paths


def test_each_tile_shows_its_cells_frame_at_the_same_progress(tmp_path: Path) -> None:
    body = grid(x={"field": "steps", "values": [3, 6, 9]}, y=None)
    plan = plan_of(body)
    short = frames_of(tmp_path / "a", [(i * 100, 0, 0) for i in range(3)])
    long = frames_of(tmp_path / "b", [(0, i * 40, 0) for i in range(6)])
    place = layout(plan, (32, 32))
    write = compose(plan, [short, long, None], {2: "render_error"}, place)

    def tile(image: np.ndarray, x: int) -> np.ndarray:
        left, top = place.origin(x, 0)
        return image[top + 4 : top + place.tile[1] - 4, left + 4 : left + place.tile[0] - 4].reshape(-1, 3)

    for j, (a, b) in [(0, (0, 0)), (5, (2, 5)), (2, (1, 2))]:
        out = tmp_path / f"g{j}.png"
        write(j, out)
        image = np.asarray(Image.open(out).convert("RGB")).astype(int)
        assert image.shape[:2] == (place.size[1], place.size[0])
        assert np.abs(tile(image, 0) - [a * 100, 0, 0]).max() <= 1
        assert np.abs(tile(image, 1) - [0, b * 40, 0]).max() <= 1
        third = tile(image, 2)  # the failed cell: a placeholder with its error written on it
        assert (np.abs(third - PLACEHOLDER).sum(axis=1) <= 3).mean() > 0.6
        assert (np.abs(third - PLACEHOLDER).sum(axis=1) > 3).any()
        assert tuple(image[place.size[1] - 1, 0]) == BACKGROUND


@pytest.mark.parametrize("value", [0, 1, "true", None])
def test_allow_partial_is_a_json_boolean_only(value: Any) -> None:
    """0 or "true" is a client's mistake, not a wish: refused rather than read as false or true."""
    with pytest.raises(ValueError, match="allow_partial"):
        grid(allow_partial=value)


def test_an_axis_value_of_the_wrong_type_names_the_cell() -> None:
    _, problems = cell_requests(grid(y={"field": "steps", "values": [10, "20"]}))
    assert [where for where, _ in problems] == ["cells[0,1].steps", "cells[1,1].steps", "cells[2,1].steps"]

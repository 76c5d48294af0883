"""A grid's video: its cells' frames side by side in a labelled grid, aligned on progress.

Plain code for the grid task (``encoder.tasks``): the cells are finished animation jobs whose
frames are stored; every frame of the grid shows, in each cell's place, the frame of that cell
at the same fraction of its denoising (``stepanim.grids.aligned_frames``), under column
captions (the X values) and beside row captions (the Y values). A cell that failed (with
``allow_partial``) shows a labelled placeholder. The composed frames are then encoded like any
animation's (``encoder.encode.encode_sequence``) with the base request's video options.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from encoder.encode import sequence_path
from encoder.ffmpeg import EncodeCanceled
from encoder.job import ImageFolder, download_frames, make_video
from stepanim.failures import EncodeError
from stepanim.grid_flow import plan_of
from stepanim.grids import GridPlan, aligned_frames, video_options
from stepanim.jobs import Job, JobImage, JobStatus, VideoInfo
from stepanim.manifest import Manifest
from stepanim.naming import rendition_key, video_key
from stepanim.services import Services
from stepanim.video_options import VideoOptions

MAX_WIDTH = 2048  # the grid video's widest: tiles shrink to fit
BACKGROUND = (24, 24, 27)
TEXT = (235, 235, 235)
MUTED = (160, 160, 170)
PLACEHOLDER = (70, 30, 30)


@dataclass(frozen=True)
class Layout:
    """Where everything goes in a grid frame (pixels)."""

    columns: int
    rows: int
    tile: tuple[int, int]  # width, height
    header: int  # height of the captions above the tiles
    gutter: int  # width of the row captions (0 without a Y axis)
    text: int  # caption font size
    gap: int = 4

    @property
    def size(self) -> tuple[int, int]:
        width = self.gutter + self.columns * (self.tile[0] + self.gap) + self.gap
        height = self.header + self.rows * (self.tile[1] + self.gap) + self.gap
        return width + width % 2, height + height % 2  # even sides, as yuv420p wants

    def origin(self, x: int, y: int) -> tuple[int, int]:
        left = self.gutter + self.gap + x * (self.tile[0] + self.gap)
        return left, self.header + self.gap + y * (self.tile[1] + self.gap)


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def fit(text: str, face: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float) -> str:
    """``text``, cut short with an ellipsis where it is wider than ``width`` pixels."""
    if face.getlength(text) <= width:
        return text
    while text and face.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def layout(plan: GridPlan, frame: tuple[int, int]) -> Layout:
    """Tiles of (at most) ``frame`` size, no wider than ``MAX_WIDTH`` in all, under two lines of
    captions (the X field, then each column's value) and beside the row values (the Y field's)."""
    gap = 4
    text = max(12, min(frame[1] // 10, 24))
    gutter = 0
    if plan.y is not None:
        face = font(text)
        widest = max(face.getlength(label) for label in [plan.y.field, *(c.y_label or "" for c in plan.cells)])
        gutter = min(int(widest) + 3 * gap, MAX_WIDTH // 4)
    room = (MAX_WIDTH - gutter - gap) // plan.columns - gap
    scale = min(1.0, room / frame[0])
    tile = (max(8, int(frame[0] * scale)), max(8, int(frame[1] * scale)))
    return Layout(plan.columns, plan.rows, tile, header=2 * text + 3 * gap, gutter=gutter, text=text, gap=gap)


def backdrop(plan: GridPlan, place: Layout, failed: dict[int, str]) -> Image.Image:
    """What every grid frame has: the captions, and a placeholder for each failed cell."""
    image = Image.new("RGB", place.size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    face, small = font(place.text), font(max(10, place.text * 3 // 4))
    tiles_width = place.columns * (place.tile[0] + place.gap)
    values_top = 2 * place.gap + place.text
    draw.text((place.gutter + tiles_width / 2, place.gap), plan.x.field, font=face, fill=MUTED, anchor="mt")
    if plan.y is not None:
        draw.text((place.gap, values_top), fit(plan.y.field, face, place.gutter - place.gap), font=face, fill=MUTED)
    for cell in plan.cells:
        left, top = place.origin(cell.x, cell.y)
        if cell.y == 0:
            caption = fit(cell.x_label, face, place.tile[0])
            draw.text((left + place.tile[0] / 2, values_top), caption, font=face, fill=TEXT, anchor="mt")
        if cell.x == 0 and cell.y_label is not None:
            caption = fit(cell.y_label, face, place.gutter - 2 * place.gap)
            draw.text((place.gap, top + place.tile[1] / 2), caption, font=face, fill=TEXT, anchor="lm")
        if cell.index in failed:
            draw.rectangle((left, top, left + place.tile[0] - 1, top + place.tile[1] - 1), fill=PLACEHOLDER)
            for line, words in enumerate(("failed", failed[cell.index])):
                where = (left + place.gap, top + place.gap + line * (place.text + 2))
                draw.text(where, fit(words, small, place.tile[0] - 2 * place.gap), font=small, fill=TEXT)
    return image


def compose(
    plan: GridPlan, frames: list[list[Path] | None], failed: dict[int, str], place: Layout
) -> Callable[[int, Path], None]:
    """A function that writes grid frame ``j`` (0-based) to a path; ``frames[i]`` are cell i's
    frame files in step order (None for a failed cell, drawn as a placeholder saying ``failed[i]``)."""
    plan_frames = aligned_frames([len(f) if f else 1 for f in frames])
    base = backdrop(plan, place, failed)

    def write(j: int, path: Path) -> None:
        image = base.copy()
        for cell in plan.cells:
            files = frames[cell.index]
            if files is None:
                continue
            with Image.open(files[plan_frames[j][cell.index]]) as tile:
                image.paste(
                    tile.convert("RGB").resize(place.tile, Image.Resampling.BICUBIC), place.origin(cell.x, cell.y)
                )
        image.save(path, format="PNG", compress_level=1)

    return write


def compose_video(
    grid: Job,
    cell_jobs: list[Job | None],
    svc: Services,
    *,
    options: VideoOptions | None = None,
    rendition_id: str | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> VideoInfo:
    """Download the cells' frames, compose every grid frame, encode, check, upload.

    ``cell_jobs`` are the grid's cells in cell order; a cell that did not succeed (or is gone)
    is a placeholder. The base request's video options apply to the composed frames
    (``skip_steps`` drops the first composed frames), unless a rendition gives its own.
    """
    plan = plan_of(grid)
    options = options or video_options(grid.request)
    failed = {
        cell.index: (job.error.code if job.error else job.status.value) if job is not None else "gone"
        for cell, job in zip(plan.cells, cell_jobs, strict=True)
        if job is None or job.status != JobStatus.succeeded
    }
    with tempfile.TemporaryDirectory(prefix=f"grid-{grid.id[:8]}-") as tmp:
        root = Path(tmp)
        folders: list[ImageFolder | None] = [
            download_frames(job.images[0], root / f"cell-{cell.index}", svc)
            if job is not None and cell.index not in failed and job.images and job.images[0].frames
            else None
            for cell, job in zip(plan.cells, cell_jobs, strict=True)
        ]
        frames = [
            [sequence_path(f.path, n, f.ext) for n in range(1, f.count + 1)] if f is not None else None for f in folders
        ]
        present = [f for f in frames if f]
        if not present:
            raise EncodeError("no cell of the grid has frames to compose")
        with Image.open(present[0][0]) as first:
            frame_size = first.size
        place = layout(plan, frame_size)
        write = compose(plan, frames, failed, place)
        count = max(len(f) for f in present)
        if options.skip_steps >= count:
            raise EncodeError(f"skip_steps: {options.skip_steps} leaves no frame of the grid's {count}")
        composed = root / "grid"
        composed.mkdir()
        names: list[str] = []
        for j in range(options.skip_steps, count):
            if should_stop is not None and should_stop():
                raise EncodeCanceled("the grid was canceled")
            path = sequence_path(composed, len(names) + 1)
            write(j, path)
            names.append(path.name)
        grid_frames = ImageFolder(JobImage(batch_index=0, seed=grid.seed, frames=names), composed, "png")
        return make_video(
            grid,
            svc,
            frames=grid_frames,
            options=options.model_copy(update={"skip_steps": 0}),
            manifest=grid_manifest(grid, cell_jobs, frames=count, size=place.size),
            key_for=lambda name: (
                rendition_key(grid.id, rendition_id, name) if rendition_id is not None else video_key(grid.id, name)
            ),
            should_stop=should_stop,
        )


def grid_manifest(grid: Job, cell_jobs: list[Job | None], *, frames: int, size: tuple[int, int]) -> Manifest:
    """What the grid video's metadata says: the base request, the axes, and each cell's job."""
    plan = plan_of(grid)
    return Manifest(
        job_id=grid.id,
        model=grid.model,
        prompt=grid.request.prompt,
        negative_prompt=grid.request.negative_prompt,
        width=size[0],
        height=size[1],
        steps=grid.request.steps,
        steps_run=frames,
        total_steps=frames,
        complete=True,
        scheduler=grid.request.scheduler or "",
        schedule=grid.request.schedule,
        guidance_scale=grid.request.guidance_scale,
        seed=grid.seed,
        grid={
            "x": plan.x.model_dump(mode="json"),
            "y": plan.y.model_dump(mode="json") if plan.y else None,
            "cells": [job.id if job is not None else None for job in cell_jobs],
        },
        images=[],
    )

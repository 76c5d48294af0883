"""/animations/{id}/frames: every step of a job, as signed URLs, and all of them as one zip.

The steps are the product: a client (the web page's step explorer, a script) can show any
step of any image of the batch, while the job renders and after, as long as its frames are
kept (``animation.keep_frames``). While the job renders, the frames stored so far are read from
its event stream; once rendered, from its record.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from api.deps import JobDep, ServicesDep
from api.errors import AUTH_RESPONSES, ApiError, ErrorResponse
from stepanim.events import ProgressEvent
from stepanim.jobs import Job
from stepanim.services import Services
from stepanim.storage import Storage

router = APIRouter(prefix="/animations", tags=["animations"])


class FramePublic(BaseModel):
    step: int = Field(description="The step it shows, from 1.", examples=[12])
    url: str = Field(description="Signed, expiring download URL.", examples=["https://api.example.com/files/x.png"])
    filename: str = Field(
        description="`<batch-count:02><batch-index:02><step:03>-<seed>-<prompt>.png`",
        examples=["0000012-1234-a lighthouse.png"],
    )


class FramesPublic(BaseModel):
    """The frames of one image of a job, in step order."""

    batch_index: int = Field(description="Which image of the batch.", examples=[0])
    images: int = Field(description="Images in the job's batch (ask for another with `?image=`).", examples=[1])
    frames: list[FramePublic] = Field(description="The frames stored so far, in step order.")
    total: int = Field(description="Steps the sampler runs (frames to come while it renders).", examples=[30])
    complete: bool = Field(description="The render is over: no more frames will come.", examples=[True])


def frame_keys(svc: Services, job: Job) -> list[list[str]]:
    """The frame keys of each image: from the record once rendered, else from the job's events."""
    if job.images:
        return [image.frames for image in job.images]
    by_image: list[list[str]] = [[] for _ in range(job.request.batch_size)]
    for _, event in svc.store.events(job.id):
        if isinstance(event, ProgressEvent):
            for index, key in enumerate(event.frames[: len(by_image)]):
                if key not in by_image[index]:
                    by_image[index].append(key)
    return by_image


def require_kept(job: Job) -> None:
    if job.frames_deleted:
        raise ApiError(410, "frames_deleted", "the frames of this animation were deleted (keep_frames was false)")


@router.get(
    "/{animation_id}/frames",
    response_model=FramesPublic,
    summary="List an animation's frames",
    responses={
        404: {"model": ErrorResponse, "description": "No such animation for this tenant, or no such image."},
        410: {"model": ErrorResponse, "description": "The frames were deleted after encoding (keep_frames false)."},
        **AUTH_RESPONSES,
    },
)
def list_frames(
    *,
    job: JobDep,
    svc: ServicesDep,
    image: Annotated[
        int, Query(ge=0, le=7, description="Which image of the batch (0 for the first).", examples=[0])
    ] = 0,
) -> FramesPublic:
    """Every frame of one image of the job, with a signed URL each: the steps stored so far while
    it renders, all of them once it is done (as long as its frames are kept)."""
    require_kept(job)
    keys = frame_keys(svc, job)
    if image >= len(keys):
        raise ApiError(404, "not_found", f"image: this animation has {len(keys)} image(s) (0 to {len(keys) - 1})")
    return FramesPublic(
        batch_index=image,
        images=len(keys),
        frames=[
            FramePublic(step=step, url=svc.storage.signed_url(key), filename=PurePosixPath(key).name)
            for step, key in enumerate(keys[image], start=1)
        ],
        total=job.progress.total or job.request.denoising_steps(),
        complete=bool(job.images),
    )


class _Chunks(io.RawIOBase):
    """What zipfile writes, kept until taken: a zip written as it is sent, never whole in memory."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


def zip_stream(storage: Storage, keys: list[str]) -> Iterator[bytes]:
    """A zip (stored: PNGs are compressed already) of ``keys`` under their own names, written as it goes."""
    sink = _Chunks()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        for key in keys:
            archive.writestr(PurePosixPath(key).name, storage.get_bytes(key))
            yield sink.take()
    yield sink.take()


@router.get(
    "/{animation_id}/frames.zip",
    response_class=StreamingResponse,
    summary="Download an animation's frames as a zip",
    responses={
        200: {"content": {"application/zip": {}}, "description": "Every frame of every image, under its own name."},
        404: {"model": ErrorResponse, "description": "No such animation for this tenant."},
        410: {"model": ErrorResponse, "description": "The frames were deleted after encoding (keep_frames false)."},
        **AUTH_RESPONSES,
    },
)
def download_frames(*, job: JobDep, svc: ServicesDep) -> StreamingResponse:
    """Every frame stored so far of every image of the job, in one zip (its entries carry the
    batch index, step and seed in their names)."""
    require_kept(job)
    keys = [key for image in frame_keys(svc, job) for key in image]
    filename = f"{job.seed}-{job.id[:8]}-frames.zip"
    return StreamingResponse(
        zip_stream(svc.storage, keys),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )

"""A job's events: what the workers write to its stream, and what clients receive. Pure models.

Every change a client can follow is one event in the job's Redis stream (``stepanim.store``),
written by ``stepanim.lifecycle`` in the same transaction as the record:

- :class:`StatusEvent`: the job moved to a new status;
- :class:`StageEvent`: what the render worker is doing before the first step (``loading_model``,
  then ``sampling``), so a cold start does not look stuck at step 0;
- :class:`ProgressEvent`: a step was captured; the storage key of that step's frame of each
  image of the batch;
- :class:`RenditionEvent`: a rendition moved to a new status;
- :class:`CellEvent` (grids only): one of the grid's cells moved to a new status.

:data:`JobEvent` is their union, told apart by ``type``. The API turns each into a
server-sent event whose ``event`` is the type and whose data is a ``*Data`` model below
(storage keys become signed URLs; a status carries the job as the API returns it); the
Python client parses that data with the same models (``client._core.Event``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

from stepanim.jobs import JobStatus, RenditionStatus, Stage


class StatusEvent(BaseModel):
    type: Literal["status"] = "status"
    status: JobStatus


class StageEvent(BaseModel):
    type: Literal["stage"] = "stage"
    stage: Stage


class ProgressEvent(BaseModel):
    type: Literal["progress"] = "progress"
    step: int
    total: int
    frames: list[str] = Field(default_factory=list, description="This step's frame of each image (storage keys).")


class RenditionEvent(BaseModel):
    type: Literal["rendition"] = "rendition"
    id: str
    status: RenditionStatus


class CellEvent(BaseModel):
    type: Literal["cell"] = "cell"
    cell: int
    id: str
    status: JobStatus


JobEvent = Annotated[StatusEvent | StageEvent | ProgressEvent | RenditionEvent | CellEvent, Field(discriminator="type")]
_EVENT: TypeAdapter[JobEvent] = TypeAdapter(JobEvent)


def parse_event(raw: str | bytes) -> JobEvent:
    """An event as stored in the job's stream."""
    return _EVENT.validate_json(raw)


def is_final(event: JobEvent) -> bool:
    """The job's last status: succeeded, failed or canceled."""
    return isinstance(event, StatusEvent) and event.status.is_terminal()


# What clients receive: the data of each server-sent event, by its ``event`` name.


class StatusData(BaseModel):
    status: JobStatus = Field(description="The job's new status.")
    animation: dict[str, Any] | None = Field(description="The job as GET /animations/{id} returns it.")
    grid: dict[str, Any] | None = Field(None, description="Grids: the grid as GET /grids/{id} returns it.")


class StageData(BaseModel):
    stage: Stage = Field(description="`loading_model` before the model is ready, then `sampling`.")


class ProgressData(BaseModel):
    step: int = Field(description="Steps captured so far.")
    total: int = Field(description="Steps the sampler runs.")
    latest_frame_url: str | None = Field(description="Signed URL of this step's frame of the first image.")
    latest_frame_urls: list[str] = Field(description="Signed URLs of this step's frame of each image of the batch.")


class RenditionData(BaseModel):
    id: str = Field(description="The rendition's id.")
    status: RenditionStatus = Field(description="Its new status.")


class CellData(BaseModel):
    cell: int = Field(description="Which cell of the grid (row by row).")
    id: str = Field(description="The cell's own animation job (GET /animations/{id}).")
    status: JobStatus = Field(description="The cell's new status.")
    grid: dict[str, Any] | None = Field(description="The grid as GET /grids/{id} returns it.")


EVENT_DATA: dict[str, type[BaseModel]] = {
    "status": StatusData,
    "stage": StageData,
    "progress": ProgressData,
    "rendition": RenditionData,
    "cell": CellData,
}


def parse_data(name: str, data: dict[str, Any]) -> BaseModel | None:
    """The data of a server-sent event named ``name`` as its model; None for an event this
    version does not know (a newer server may send more kinds)."""
    model = EVENT_DATA.get(name)
    return None if model is None else model.model_validate(data)

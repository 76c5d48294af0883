"""Every call of the API as data, for ``Client`` and ``AsyncClient`` alike: no network here.

A ``Call`` says what to send (method, path, body, query, headers) and which model its JSON
answer is; each client only sends it (``httpx.Client`` or ``httpx.AsyncClient``) and parses
the answer with ``Call.parse``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from client import _core
from client.models import (
    AnimationCreate,
    AnimationList,
    AnimationPublic,
    CapabilitiesPublic,
    FramesPublic,
    GridPublic,
    RenditionPublic,
    UploadPublic,
    VideoOptions,
    WebhookSecrets,
)

AnswerT = TypeVar("AnswerT", bound=BaseModel)
RecordT = TypeVar("RecordT", AnimationPublic, GridPublic)  # what has events and ``finished``


@dataclass(frozen=True)
class Call(Generic[AnswerT]):
    """One request and the model of its answer. ``idempotent``: safe to send again after a
    connection broke mid-request (every call but rotating the webhook secret)."""

    method: str
    path: str
    answer: type[AnswerT]
    idempotent: bool = True
    json: dict[str, Any] | None = None
    params: list[tuple[str, str | int]] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    headers: dict[str, str] | None = None

    def options(self) -> dict[str, Any]:
        """The keyword arguments of the request: those this call sets."""
        given = {"json": self.json, "params": self.params, "files": self.files, "headers": self.headers}
        return {name: value for name, value in given.items() if value is not None}

    def parse(self, data: Any) -> AnswerT:
        return self.answer.model_validate(data)


def idempotency(key: str | None) -> dict[str, str]:
    """The ``Idempotency-Key`` header: ``key``, or a new UUID. Retries with it never do the work twice."""
    return {"Idempotency-Key": key or str(uuid.uuid4())}


def animation_path(animation_id: str) -> str:
    return f"/animations/{animation_id}"


def grid_path(grid_id: str) -> str:
    return f"/grids/{grid_id}"


# Animations


def create(request: AnimationCreate | Mapping[str, Any], idempotency_key: str | None) -> Call[AnimationPublic]:
    body = _core.create_body(request)
    return Call("POST", "/animations", AnimationPublic, json=body, headers=idempotency(idempotency_key))


def get(animation_id: str) -> Call[AnimationPublic]:
    return Call("GET", animation_path(animation_id), AnimationPublic)


def cancel(animation_id: str) -> Call[AnimationPublic]:
    return Call("POST", f"{animation_path(animation_id)}/cancel", AnimationPublic)


def list_animations(status: Iterable[str] | None, limit: int, cursor: str | None) -> Call[AnimationList]:
    params: list[tuple[str, str | int]] = [("limit", limit)]
    params += [("status", s) for s in status or ()]
    if cursor:
        params.append(("cursor", cursor))
    return Call("GET", "/animations", AnimationList, params=params)


def frames(animation_id: str, image: int) -> Call[FramesPublic]:
    return Call("GET", f"{animation_path(animation_id)}/frames", FramesPublic, params=[("image", image)])


# Renditions: ``owner`` is the path of their job or grid (``animation_path``, ``grid_path``).


def create_rendition(
    owner: str, options: VideoOptions | Mapping[str, Any], idempotency_key: str | None
) -> Call[RenditionPublic]:
    body = _core.rendition_body(options)
    return Call("POST", f"{owner}/renditions", RenditionPublic, json=body, headers=idempotency(idempotency_key))


def get_rendition(owner: str, rendition_id: str) -> Call[RenditionPublic]:
    return Call("GET", f"{owner}/renditions/{rendition_id}", RenditionPublic)


# Grids


def create_grid(
    base: AnimationCreate | Mapping[str, Any],
    x: _core.AxisLike,
    y: _core.AxisLike | None,
    *,
    allow_partial: bool,
    idempotency_key: str | None,
) -> Call[GridPublic]:
    body = _core.grid_body(base, x, y, allow_partial=allow_partial)
    return Call("POST", "/grids", GridPublic, json=body, headers=idempotency(idempotency_key))


def get_grid(grid_id: str) -> Call[GridPublic]:
    return Call("GET", grid_path(grid_id), GridPublic)


def cancel_grid(grid_id: str) -> Call[GridPublic]:
    return Call("POST", f"{grid_path(grid_id)}/cancel", GridPublic)


# The rest


def upload(file: str | os.PathLike[str] | bytes, filename: str | None, content_type: str | None) -> Call[UploadPublic]:
    """POST /uploads of ``file`` (its bytes, or a path read here)."""
    if isinstance(file, bytes):
        data, name = file, filename or "image"
    else:
        path = Path(file)
        data, name = path.read_bytes(), filename or path.name
    files = {"file": (name, data, content_type or "application/octet-stream")}
    return Call("POST", "/uploads", UploadPublic, files=files)


def capabilities() -> Call[CapabilitiesPublic]:
    return Call("GET", "/capabilities", CapabilitiesPublic)


def webhook_secrets() -> Call[WebhookSecrets]:
    return Call("GET", "/webhooks/secret", WebhookSecrets)


def rotate_webhook_secret() -> Call[WebhookSecrets]:
    return Call("POST", "/webhooks/secret/rotate", WebhookSecrets, idempotent=False)

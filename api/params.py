"""A JSON body and header parameters read by hand, as FastAPI reads them, for the hot path.

``POST /animations`` is the route every job goes through. FastAPI resolving its
parameters (the body, two headers, the security scheme) took about a third of its time
in the API benchmark (docs/performance.md, "Third pass"), so that endpoint takes the
bare ``Request`` and reads them with :func:`read_json` and :func:`validate`. They give FastAPI's answers: the
same values, and the same errors in the same order (a ``RequestValidationError`` with
FastAPI's locations, worded by the one handler in ``api/errors.py``). Because FastAPI no
longer sees these parameters, the route declares them for the OpenAPI document with
:func:`header_parameter` and :func:`json_request_body` (``tests/unit/test_params.py``
checks both halves against a route FastAPI resolves).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException

MISSING: Any = object()  # no body at all
M = TypeVar("M", bound=BaseModel)


def is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters ignored (FastAPI's rule)."""
    if not content_type:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    major, _, subtype = kind.partition("/")
    return major == "application" and (subtype == "json" or subtype.endswith("+json"))


async def read_json(request: Request) -> Any:
    """The body of a request with a JSON body parameter, read as FastAPI does: :data:`MISSING`
    if empty, the bytes themselves if the content type is not JSON (validation then refuses
    them), else the decoded JSON. Invalid JSON raises ``RequestValidationError`` (422), a
    body that is not text 400. FastAPI reads the body before it authenticates; so do callers."""
    raw = await request.body()
    if not raw:
        return MISSING
    if not is_json(request.headers.get("content-type")):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", e.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": e.msg},
                }
            ]
        ) from e
    except ValueError as e:  # not UTF-8, -16 or -32
        raise HTTPException(400, "There was an error parsing the body") from e


def _located(error: Any, *loc: str | int) -> dict[str, Any]:
    return {**error, "loc": (*loc, *error["loc"])}


def validate(
    request: Request, model: type[M], raw: Any, headers: dict[str, TypeAdapter[Any] | None]
) -> tuple[M, dict[str, Any]]:
    """The body ``raw`` (from :func:`read_json`) as ``model``, and the first value of each
    header named in ``headers`` (None if absent), checked by its adapter (None: any text).
    Every refusal together in one ``RequestValidationError``, the headers' first, at
    FastAPI's locations (``("header", name)``, ``("body", ...)``)."""
    errors: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    for name, adapter in headers.items():
        values[name] = value = request.headers.get(name)
        if value is not None and adapter is not None:
            try:
                values[name] = adapter.validate_python(value)
            except ValidationError as e:
                errors.extend(_located(error, "header", name) for error in e.errors())
    body: M | None = None
    if raw is MISSING:
        errors.append({"type": "missing", "loc": ("body",), "msg": "Field required", "input": None})
    else:
        try:
            body = model.model_validate(raw, from_attributes=True)  # FastAPI's mode (and its wording)
        except ValidationError as e:
            errors.extend(_located(error, "body") for error in e.errors())
    if errors or body is None:
        raise RequestValidationError(errors)
    return body, values


def header_parameter(
    name: str, *, title: str, description: str, examples: list[str], pattern: str | None = None
) -> dict[str, Any]:
    """The OpenAPI entry of an optional string header, as FastAPI writes one."""
    schema: dict[str, Any] = {"type": "string"}
    if pattern is not None:
        schema["pattern"] = pattern
    schema |= {"description": description, "examples": examples, "title": title}
    return {"name": name, "in": "header", "required": False, "schema": schema, "description": description}


def json_request_body(model: type[BaseModel], *, example: Any) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a required JSON body of ``model`` (a schema FastAPI
    already lists: the model must also appear in a response or another route)."""
    return {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}, "example": example}
        },
    }


class HandRoute(APIRoute):
    """A route FastAPI documents but does not resolve: its endpoint takes the ``Request``,
    reads it with :func:`read_json` and :func:`validate` and returns a ``Response``. FastAPI's per-request
    work around an endpoint (dependencies, body, response model, telemetry) is skipped;
    routing, middleware and the exception handlers stay as for every route."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint

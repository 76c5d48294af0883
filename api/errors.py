"""One error shape for every failure, and the one place that maps errors to HTTP.

Every error response is ``{"error": {"code": ..., "message": ..., "details": [...]}}``.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from stepanim.storage import StorageError
from stepanim.store import JobNotFound

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    code: str = Field(description="Stable, machine-readable error code.", examples=["invalid_request"])
    message: str = Field(
        description="What went wrong, for a person; names the field or limit.",
        examples=["steps: 300 is above this server's limit of 200"],
    )
    details: list[dict[str, Any]] = Field(
        [], description="One entry per problem (`field`, `message`), when there are several.", examples=[[]]
    )


class ErrorResponse(BaseModel):
    """The one shape of every error response."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"error": {"code": "not_found", "message": "no animation with id 'x'", "details": []}}]
        }
    )

    error: ErrorBody = Field(description="The error.")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.details = details


def error_content(code: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON body of an error (for the few places that answer without an exception handler)."""
    return ErrorResponse(error=ErrorBody(code=code, message=message, details=details or [])).model_dump()


# Responses every authenticated operation may give, for the OpenAPI document.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No API key, or an unknown one."},
    429: {
        "model": ErrorResponse,
        "description": "Too many requests for this API key (or too many unfinished jobs); see `Retry-After`.",
        "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    },
    503: {"model": ErrorResponse, "description": "Redis, storage or the queue is unavailable; try again."},
}
# Responses of the POSTs that create something from a JSON body with an Idempotency-Key.
CREATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body could not be read as UTF-8 JSON."},
    409: {"model": ErrorResponse, "description": "A request with this Idempotency-Key is still being processed."},
    413: {"model": ErrorResponse, "description": "The body is larger than the server's limit."},
}


def _response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=details or []))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def readable_json_error(error: dict[str, Any]) -> dict[str, Any]:
    """FastAPI words a body that is not JSON as ``JSON decode error`` at location ``("body",
    <offset>)`` (which reads as a field named ``12``): say what is wrong, and where."""
    if error.get("type") != "json_invalid":
        return error
    loc = tuple(error.get("loc", ()))
    offset = f" at character {loc[1]}" if len(loc) > 1 and isinstance(loc[1], int) else ""
    reason = (error.get("ctx") or {}).get("error")
    return {**error, "loc": ("body",), "msg": f"not valid JSON{offset}" + (f": {reason}" if reason else "")}


def _validation_message(errors: list[dict[str, Any]]) -> str:
    """Every refusal, ``field: why``, joined with ``; `` (the first alone reads as before)."""
    return "; ".join(
        f"{field_path(e.get('loc', ()))}: {str(e.get('msg', 'invalid value')).removeprefix('Value error, ')}"
        for e in errors
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first matching route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [readable_json_error(e) for e in exc.errors()]
        details = [
            {"field": field_path(e.get("loc", ())), "message": str(e.get("msg", "")).removeprefix("Value error, ")}
            for e in errors
        ]
        return _response(422, "invalid_request", _validation_message(errors), details)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _response(exc.status, exc.code, exc.message, exc.details, headers=exc.headers)

    @app.exception_handler(JobNotFound)
    async def _not_found(request: Request, exc: JobNotFound) -> JSONResponse:
        return _response(404, "not_found", f"no animation with id {exc.job_id!r}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(
            exc.status_code, "http_error"
        )
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return _response(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(StorageError)
    async def _storage(request: Request, exc: StorageError) -> JSONResponse:
        log.error("storage error: %s", exc)
        return _response(
            503, "storage_unavailable", "object storage is unavailable; try again", headers={"Retry-After": "5"}
        )

    @app.exception_handler(redis.RedisError)
    async def _redis(request: Request, exc: redis.RedisError) -> JSONResponse:
        log.error("redis error: %s", exc)
        return _response(
            503, "store_unavailable", "the job store is unavailable; try again", headers={"Retry-After": "5"}
        )

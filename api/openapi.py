"""The OpenAPI document as YAML, from the app itself (so ``openapi.yaml`` cannot drift)."""

from __future__ import annotations

from typing import Any

import yaml
from fastapi import FastAPI

from stepanim.settings import Settings


def install(app: FastAPI) -> None:
    """Serve the generated document with :func:`no_null_parameters` applied."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = one_error_shape(no_null_parameters(generate()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def one_error_shape(doc: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents its own validation error body for 422; this service answers every
    error, 422 included, with ``ErrorResponse`` (``api/errors.py``): say so."""
    ours = "#/components/schemas/ErrorResponse"
    for path_item in [*doc.get("paths", {}).values(), *doc.get("webhooks", {}).values()]:
        for operation in path_item.values():
            response = operation.get("responses", {}).get("422")
            if response is None:
                continue
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            if schema.get("$ref") == "#/components/schemas/HTTPValidationError":
                schema["$ref"] = ours
                response["description"] = "Invalid request: the message names the field."
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return doc


def no_null_parameters(doc: dict[str, Any]) -> dict[str, Any]:
    """An optional query or header parameter is omitted, never sent as null: drop the
    ``null`` branch FastAPI writes for ``X | None`` parameters (clients and fuzzers would
    otherwise send the text ``null``)."""
    for path_item in doc.get("paths", {}).values():
        for operation in path_item.values():
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                branches = schema.get("anyOf")
                if parameter.get("required") or not branches:
                    continue
                kept = [b for b in branches if b.get("type") != "null"]
                if len(kept) == 1 and len(kept) < len(branches):
                    rest = {k: v for k, v in schema.items() if k != "anyOf"}
                    parameter["schema"] = {**kept[0], **rest}
    return doc


def openapi_dict() -> dict[str, Any]:
    from api.app import create_app
    from stepanim.services import Services

    settings = Settings(_env_file=None)
    # Building the document touches no service; the handles are created lazily.
    app = create_app(settings, services=Services.from_settings(settings))
    return app.openapi()


def openapi_yaml() -> str:
    return yaml.safe_dump(openapi_dict(), sort_keys=False, allow_unicode=True, width=100)

"""``api.params`` reads a request as FastAPI does: the same route, resolved by FastAPI and
read by hand, gives the same answers to the same requests and the same OpenAPI entry."""

from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, FastAPI, Header, Request, Response
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field

from api import errors, params
from api.idempotency import KEY_ADAPTER, key_header, key_parameter
from api.openapi import no_null_parameters


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    duration: float = Field(3, gt=0, le=60)


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    size: int = Field(8, ge=8, multiple_of=8)
    inner: Inner = Inner()


EXAMPLE = {"name": "x", "size": 16}
PREFER = "Something to prefer."


def app() -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.post(
        "/resolved",
        status_code=202,
        openapi_extra={"requestBody": {"content": {"application/json": {"example": EXAMPLE}}}},
    )
    async def resolved(
        thing: Thing,
        idempotency_key: Annotated[str | None, key_header("thing")] = None,
        prefer: Annotated[str | None, Header(description=PREFER, examples=["wait=1"])] = None,
    ) -> dict[str, Any]:
        return {"thing": thing.model_dump(), "key": idempotency_key, "prefer": prefer}

    by_hand = APIRouter(route_class=params.HandRoute)

    @by_hand.post(
        "/by-hand",
        status_code=202,
        openapi_extra={
            "parameters": [
                key_parameter("thing"),
                params.header_parameter("prefer", title="Prefer", description=PREFER, examples=["wait=1"]),
            ],
            "requestBody": params.json_request_body(Thing, example=EXAMPLE),
        },
    )
    async def read_by_hand(request: Request) -> Response:
        raw = await params.read_json(request)
        thing, found = params.validate(request, Thing, raw, {"idempotency-key": KEY_ADAPTER, "prefer": None})
        content = {"thing": thing.model_dump(), "key": found["idempotency-key"], "prefer": found["prefer"]}
        return Response(json.dumps(content, separators=(",", ":")), status_code=202, media_type="application/json")

    app.include_router(by_hand)
    return app


JSON = {"content-type": "application/json"}
VALID = json.dumps(EXAMPLE).encode()
REQUESTS: dict[str, tuple[bytes, list[tuple[str, str]]]] = {
    "valid": (VALID, [*JSON.items()]),
    "defaults": (b'{"name": "y"}', [*JSON.items()]),
    "empty body": (b"", [*JSON.items()]),
    "no content type": (VALID, []),
    "text content type": (VALID, [("content-type", "text/plain")]),
    "charset": (VALID, [("content-type", "application/json; charset=utf-8")]),
    "+json": (VALID, [("content-type", "application/vnd.thing+json")]),
    "upper case": (VALID, [("content-type", "Application/JSON")]),
    "invalid JSON": (b'{"name": ', [*JSON.items()]),
    "not UTF-8": (b'{"name": "\xff"}', [*JSON.items()]),
    "UTF-16": (json.dumps(EXAMPLE).encode("utf-16"), [*JSON.items()]),
    "BOM": (b"\xef\xbb\xbf" + VALID, [*JSON.items()]),
    "array": (b"[]", [*JSON.items()]),
    "string": (b'"x"', [*JSON.items()]),
    "null": (b"null", [*JSON.items()]),
    "NaN": (b'{"name": "x", "size": NaN}', [*JSON.items()]),
    "unknown field": (b'{"name": "x", "colour": 1}', [*JSON.items()]),
    "coerced": (b'{"name": "x", "size": "16"}', [*JSON.items()]),
    "two errors": (b'{"name": "", "size": 3}', [*JSON.items()]),
    "nested error": (b'{"name": "x", "inner": {"duration": -1}}', [*JSON.items()]),
    "duplicate keys": (b'{"name": "x", "name": "y"}', [*JSON.items()]),
    "key": (VALID, [*JSON.items(), ("idempotency-key", "k-1")]),
    "bad key": (VALID, [*JSON.items(), ("idempotency-key", "with space")]),
    "long key": (VALID, [*JSON.items(), ("idempotency-key", "k" * 256)]),
    "two keys": (VALID, [*JSON.items(), ("idempotency-key", "k-1"), ("idempotency-key", "bad key")]),
    "bad key and body": (b'{"name": ""}', [*JSON.items(), ("idempotency-key", "with space")]),
    "bad key, invalid JSON": (b"{", [*JSON.items(), ("idempotency-key", "with space")]),
    "bad key, no body": (b"", [*JSON.items(), ("idempotency-key", "with space")]),
    "prefer": (VALID, [*JSON.items(), ("prefer", "wait=5")]),
}


@pytest.mark.parametrize("name", REQUESTS)
def test_by_hand_answers_as_fastapi_does(name: str) -> None:
    body, headers = REQUESTS[name]
    with TestClient(app()) as client:
        resolved = client.post("/resolved", content=body, headers=headers)
        by_hand = client.post("/by-hand", content=body, headers=headers)
    assert (by_hand.status_code, by_hand.json()) == (resolved.status_code, resolved.json())


def test_the_requests_cover_every_answer() -> None:
    """The cases above reach each kind of answer (so the comparison means something)."""
    with TestClient(app()) as client:
        seen = {client.post("/resolved", content=b, headers=h).status_code for b, h in REQUESTS.values()}
    assert seen == {202, 400, 422}


def test_by_hand_is_documented_as_fastapi_documents_it() -> None:
    doc = no_null_parameters(app().openapi())  # as the service's document is (api.openapi)
    resolved, by_hand = doc["paths"]["/resolved"]["post"], doc["paths"]["/by-hand"]["post"]
    assert by_hand["parameters"] == resolved["parameters"]
    assert by_hand["requestBody"] == resolved["requestBody"]
    assert (
        by_hand["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
        in (doc["components"]["schemas"])
    )


def test_invalid_json_is_worded_for_a_person() -> None:
    with TestClient(app()) as client:
        answer = client.post("/by-hand", content=b'{"name": ', headers=JSON).json()["error"]
    assert answer["message"] == "body: not valid JSON at character 9: Expecting value"
    assert answer["details"] == [{"field": "body", "message": "not valid JSON at character 9: Expecting value"}]

"""The client's hand-written models against openapi.yaml, in both directions, so that they cannot drift.

Every schema of ``components.schemas`` has a client model (or, for a string enum, a
``Literal``) of the same name and vice versa; every field exists on both sides with the
same type (after resolving references to enums), the same required-ness and the same
default. Value ranges, patterns and descriptions are the server's business and are not compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic.json_schema import models_json_schema

from client import models
from client.cli import REQUEST_FIELDS_WITHOUT_OPTION, REQUEST_OPTIONS

ROOT = Path(__file__).resolve().parents[2]
DOC = yaml.safe_load((ROOT / "openapi.yaml").read_text())
SCHEMAS: dict[str, Any] = DOC["components"]["schemas"]
NOT_MODELS = {"Body_create_upload_uploads_post"}  # the multipart form of POST /uploads: the client sends a file
PREFIX = "#/components/schemas/"


def client_schemas() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(model, "validation") for model in models.SCHEMAS.values()], ref_template=PREFIX + "{model}"
    )
    schemas: dict[str, Any] = defs["$defs"]
    return schemas


def normalize(spec: dict[str, Any], schemas: dict[str, Any]) -> Any:
    """The type of a property: type, enum values, referenced schema, items, union members, map values, date-time."""
    if "$ref" in spec:
        name = spec["$ref"].removeprefix(PREFIX)
        target = schemas[name]
        return {"enum": sorted(target["enum"])} if "enum" in target else {"ref": name}
    out: dict[str, Any] = {}
    if "enum" in spec:
        out["enum"] = sorted(spec["enum"])
    elif "const" in spec:
        out["enum"] = [spec["const"]]
    elif "type" in spec:
        out["type"] = spec["type"]
    if "anyOf" in spec:
        out["anyOf"] = sorted((normalize(s, schemas) for s in spec["anyOf"]), key=json.dumps)
    if "items" in spec:
        out["items"] = normalize(spec["items"], schemas)
    if "additionalProperties" in spec:
        extra = spec["additionalProperties"]
        out["additionalProperties"] = normalize(extra, schemas) if isinstance(extra, dict) else extra
    if spec.get("format") == "date-time":
        out["format"] = "date-time"
    return out


def describe(name: str, schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": sorted(schema.get("required", [])),
        "additionalProperties": schema.get("additionalProperties"),
        "fields": {
            # A null default is left out of openapi.yaml: absent and null count the same (required-ness is compared)
            field: {"type": normalize(spec, schemas), "default": spec.get("default")}
            for field, spec in schema.get("properties", {}).items()
        },
    }


def test_every_schema_has_a_client_model_and_every_model_a_schema() -> None:
    documented = {name for name, s in SCHEMAS.items() if "enum" not in s} - NOT_MODELS
    assert documented == set(models.SCHEMAS)
    enums = {name for name, s in SCHEMAS.items() if "enum" in s}
    assert enums == set(models.ENUMS)


@pytest.mark.parametrize("name", sorted(n for n, s in SCHEMAS.items() if "enum" in s))
def test_enums_have_the_same_values(name: str) -> None:
    assert sorted(get_args(models.ENUMS[name])) == sorted(SCHEMAS[name]["enum"])


@pytest.mark.parametrize("name", sorted(set(SCHEMAS) - NOT_MODELS - {n for n, s in SCHEMAS.items() if "enum" in s}))
def test_fields_types_and_defaults_match(name: str) -> None:
    ours = client_schemas()
    expected = describe(name, SCHEMAS[name], SCHEMAS)
    actual = describe(name, ours[name], ours)
    assert sorted(actual["fields"]) == sorted(expected["fields"]), "fields differ"
    for field in expected["fields"]:
        assert actual["fields"][field] == expected["fields"][field], f"{name}.{field}"
    assert actual["required"] == expected["required"]
    assert actual["additionalProperties"] == expected["additionalProperties"]


def test_the_scheduler_and_webhook_event_literals_match_the_request_schema() -> None:
    properties = SCHEMAS["AnimationCreate"]["properties"]
    [sampler_ids] = [choice["enum"] for choice in properties["scheduler"]["anyOf"] if "enum" in choice]
    assert sorted(get_args(models.Scheduler)) == sorted(sampler_ids)
    assert sorted(get_args(models.WebhookEvent)) == sorted(properties["webhook_events"]["items"]["enum"])
    assert sorted(get_args(models.DeliveryOutcome)) == sorted(
        SCHEMAS["WebhookDeliveryPublic"]["properties"]["outcome"]["enum"]
    )


def leaf_paths(name: str, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every settable field of a request schema, nested objects expanded."""
    paths: set[tuple[str, ...]] = set()
    for field, spec in SCHEMAS[name]["properties"].items():
        refs = [s["$ref"] for s in [spec, *spec.get("anyOf", [])] if "$ref" in s]
        target = refs[0].removeprefix(PREFIX) if refs else None
        if target is not None and "properties" in SCHEMAS[target]:
            paths |= leaf_paths(target, (*prefix, field))
        else:
            paths.add((*prefix, field))
    return paths


def test_every_request_field_has_a_cli_option() -> None:
    documented = leaf_paths("AnimationCreate")
    # renditions is a list of VideoOptions, set whole by --rendition
    covered = set(REQUEST_OPTIONS.values()) | REQUEST_FIELDS_WITHOUT_OPTION
    assert documented == covered


JOB_ID = "4f0c1a2b3c4d4e5f8a9b0c1d2e3f4a5b"


def job(status: str = "queued", step: int = 0, total: int = 4, **extra: Any) -> dict[str, Any]:
    """A job as the API answers it, with the fields a client needs (also the fake API's answers
    in tests/integration/test_client_http.py)."""
    base = f"http://api.test/animations/{JOB_ID}"
    return {
        "id": JOB_ID,
        "status": status,
        "created_at": "2026-01-02T03:04:05Z",
        "updated_at": "2026-01-02T03:04:05Z",
        "started_at": None,
        "finished_at": None,
        "model": "tiny-sd",
        "seed": 1,
        "progress": {"step": step, "total": total},
        "error": None,
        "video": None,
        "urls": {"get": base, "cancel": f"{base}/cancel", "stream": f"{base}/events"},
        "request": {"prompt": "p", "steps": total},
        **extra,
    }


def test_a_response_parses_and_unknown_fields_are_ignored() -> None:
    example = job("succeeded", step=2, total=2, something_new={"from": "a newer server"})
    parsed = models.AnimationPublic.model_validate(example)
    assert parsed.finished and parsed.request.steps == 2 and parsed.request.width == 512


def test_request_models_refuse_unknown_fields() -> None:
    with pytest.raises(ValueError, match="promt"):
        models.AnimationCreate.model_validate({"prompt": "x", "promt": "typo"})

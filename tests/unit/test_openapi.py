"""openapi.yaml must be exactly what the app serves."""

from pathlib import Path

import yaml

from api.openapi import openapi_dict, openapi_yaml

ROOT = Path(__file__).resolve().parents[2]


def test_openapi_yaml_matches_the_app() -> None:
    committed = (ROOT / "openapi.yaml").read_text()
    assert yaml.safe_load(committed) == openapi_dict(), "openapi.yaml is stale: run `make openapi`"
    assert committed == openapi_yaml()


def test_every_operation_is_described() -> None:
    for path, operations in openapi_dict()["paths"].items():
        for method, operation in operations.items():
            assert operation.get("description") or operation.get("summary"), f"{method.upper()} {path}"


def _leaf(prop: dict) -> bool:  # type: ignore[type-arg]
    """A property that is not (an array of, a nullable) reference to another schema."""
    branches = [prop, prop.get("items") or {}, *prop.get("anyOf", []), *prop.get("allOf", [])]
    return not any("$ref" in b or "$ref" in (b.get("items") or {}) for b in branches)


def test_every_field_has_a_description_and_every_value_an_example() -> None:
    doc = openapi_dict()
    missing = []
    for name, schema in doc["components"]["schemas"].items():
        if "enum" in schema and not schema.get("description"):
            missing.append(f"{name}: description")
        for prop, spec in schema.get("properties", {}).items():
            if not spec.get("description"):
                missing.append(f"{name}.{prop}: description")
            if _leaf(spec) and not (spec.get("examples") or "example" in spec):
                missing.append(f"{name}.{prop}: examples")  # objects are composed of their fields' examples
    assert missing == []


def test_every_operation_is_documented_with_examples() -> None:
    doc = openapi_dict()
    operations = [
        (f"{method.upper()} {path}", op) for path, item in doc["paths"].items() for method, op in item.items()
    ] + [(f"webhook {name}", op) for name, item in doc["webhooks"].items() for op in item.values()]
    for label, op in operations:
        assert op.get("summary") and op.get("description"), label
        for parameter in op.get("parameters", []):
            schema = parameter.get("schema", {})
            assert parameter.get("description") or schema.get("description"), (label, parameter["name"])
            assert parameter.get("examples") or schema.get("examples") or "enum" in schema or "items" in schema, (
                label,
                parameter["name"],
            )
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None and not label.startswith("webhook"):
            assert body.get("example") or body.get("examples"), label
        for status, response in op.get("responses", {}).items():
            assert response.get("description"), (label, status)


def test_errors_have_one_shape_in_the_document_too() -> None:
    doc = openapi_dict()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")) and "content" in response:
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorResponse"), (method, path, status)


def test_webhook_payloads_are_described() -> None:
    doc = openapi_dict()
    animation = ["animation.started", "animation.progress", "animation.succeeded", "animation.failed"]
    grids = ["grid.started", "grid.succeeded", "grid.failed", "grid.canceled"]
    assert sorted(doc["webhooks"]) == sorted([*animation, "animation.canceled", *grids])
    grid = doc["webhooks"]["grid.succeeded"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert grid["$ref"].endswith("/GridWebhookPayload")
    body = doc["webhooks"]["animation.succeeded"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/WebhookPayload")
    headers = {p["name"] for p in doc["webhooks"]["animation.succeeded"]["post"]["parameters"]}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert doc["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"

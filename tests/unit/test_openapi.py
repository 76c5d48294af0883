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

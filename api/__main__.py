"""``python -m api openapi`` prints the OpenAPI document as YAML (what ``openapi.yaml`` holds)."""

from __future__ import annotations

import sys

from api.openapi import openapi_yaml


def main(argv: list[str]) -> int:
    if argv[1:] == ["openapi"]:
        sys.stdout.write(openapi_yaml())
        return 0
    print("usage: python -m api openapi", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

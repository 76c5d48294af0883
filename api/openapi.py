"""The OpenAPI document as YAML, from the app itself (so ``openapi.yaml`` cannot drift)."""

from __future__ import annotations

from typing import Any

import yaml

from stepanim.settings import Settings


def openapi_dict() -> dict[str, Any]:
    from api.app import create_app
    from stepanim.services import Services

    settings = Settings(_env_file=None)
    # Building the document touches no service; the handles are created lazily.
    app = create_app(settings, services=Services.from_settings(settings))
    return app.openapi()


def openapi_yaml() -> str:
    return yaml.safe_dump(openapi_dict(), sort_keys=False, allow_unicode=True, width=100)

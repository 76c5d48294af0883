"""Interactive API docs at ``/docs`` that work offline: Swagger UI served by the API itself.

FastAPI's default ``/docs`` and ``/redoc`` pages load their scripts from a CDN, so they are
blank on a machine without internet access. Here Swagger UI's assets come from the
``swagger-ui-bundle-v2`` distribution (installed with the service, Apache-2.0) under
``/docs/assets``; ReDoc is not offered. Like the web page, none of this is in the OpenAPI
document.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

ASSETS = "/docs/assets"


def install(app: FastAPI) -> None:
    """Serve ``/docs`` (``app`` must be made with ``docs_url=None, redoc_url=None``)."""
    app.mount(ASSETS, StaticFiles(directory=Path(str(swagger_ui_path))), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title}: API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

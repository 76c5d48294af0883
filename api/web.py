"""The web page at ``/``: static HTML, CSS and JavaScript modules from ``api/static``.

No build step and no external URL (the service may run offline). The page talks to the
same API as every client (``Authorization: Bearer`` from a key kept in localStorage, or
none in development mode). Neither ``/`` nor ``/static`` is part of the OpenAPI document:
they are not API operations.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Module scripts must be served as JavaScript; some systems map .js to something else.
mimetypes.add_type("text/javascript", ".js")

# Scripts and styles come from this origin only (no inline code); frames and videos may come
# from the storage's signed URLs (another origin with S3), so images and media may load from anywhere.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src * data: blob:; media-src * blob:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag): a new version of the page is seen at once
}


class _NoSniff:
    """Static assets: ``nosniff`` (a module script must be served as JavaScript) and revalidation."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-content-type-options", b"nosniff"),
                    (b"cache-control", b"no-cache"),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: FastAPI) -> None:
    """Serve the page at ``/`` and its assets under ``/static``."""
    app.mount("/static", _NoSniff(StaticFiles(directory=STATIC_DIR)), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

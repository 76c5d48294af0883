"""Request body size limit (413), as pure ASGI middleware.

A declared ``Content-Length`` above the limit is refused before the body is read; a
body without one (chunked) is counted as it arrives and refused once it passes the
limit. Either way the answer is the one error shape.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_content


def body_limit(path: str, *, max_request_bytes: int, max_upload_bytes: int) -> int:
    """The body limit of a path: uploads and job bodies may carry one init image.

    ``/uploads`` takes an image plus multipart framing; ``/animations`` may hold the
    image inline in base64 (4/3 of its size). Every other body is small.
    """
    if path.rstrip("/") == "/uploads":
        return max_upload_bytes + max_request_bytes
    if path.rstrip("/") == "/animations":
        return -(-max_upload_bytes * 4 // 3) + max_request_bytes
    return max_request_bytes


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int, max_upload_bytes: int = 0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes

    def limit(self, scope: Scope) -> int:
        return body_limit(scope["path"], max_request_bytes=self.max_bytes, max_upload_bytes=self.max_upload_bytes)

    def message(self, limit: int) -> str:
        return f"the request body is larger than this server's limit of {limit} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, limit)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI passes HTTPException through its body parsing to the error handlers.
                    raise HTTPException(413, self.message(limit))
            return message

        await self.app(scope, limited, send)

    async def _refuse(self, send: Send, limit: int) -> None:
        body = json.dumps(error_content("request_too_large", self.message(limit))).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

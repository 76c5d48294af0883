"""``stepanim webhook listen``: a webhook receiver on this machine, for trying webhooks locally.

It answers every POST, checks its Standard Webhooks signature against the key's secrets (the
project's own verifier, ``stepanim.webhook_signing``) and prints one line per delivery:
``<type> <id> <status> (signature valid)``. Answers: 204 to a delivery whose signature
verifies, 401 otherwise (so the service records the failure, as a real receiver's would).
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TextIO

from stepanim.webhook_signing import SignatureError, verify


def describe(body: bytes) -> str:
    """``animation.succeeded 3f2a... succeeded`` from a delivery's body, or what it can read of it."""
    try:
        payload = json.loads(body)
        data = payload.get("data") or {}
        return " ".join(str(v) for v in (payload.get("type"), data.get("id"), data.get("status")) if v)
    except (ValueError, AttributeError):
        return f"{len(body)} bytes that are not a JSON delivery"


def listen(host: str, port: int, secrets: list[str], *, count: int | None, out: TextIO) -> int:
    """Serve until ``count`` deliveries have arrived (for ever when None); the number that did not verify."""
    invalid = 0
    received = 0

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            nonlocal invalid, received
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                verify(secrets, headers, body)
                verdict, status = "signature valid", 204
            except SignatureError as e:
                verdict, status = f"INVALID signature: {e}", 401
                invalid += 1
            received += 1
            out.write(f"{describe(body)} ({verdict})\n")
            out.flush()
            self.send_response(status)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per delivery is printed above

    with HTTPServer((host, port), Receiver) as server:
        out.write(f"listening on http://{host}:{server.server_port}/ for webhooks\n")
        out.flush()
        while count is None or received < count:
            server.handle_request()
    return invalid

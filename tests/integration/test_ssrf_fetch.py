"""The guarded fetch (``ssrf.safe_get``, for img2img init images) against a real HTTP server
on 127.0.0.2, the loopback address the tests allow."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stepanim import ssrf
from tests.conftest import RECEIVER_HOST, QuietHandler, serving

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


@dataclass
class Server:
    base: str
    port: int
    hosts: list[str] = field(default_factory=list)  # Host headers received
    paths: list[str] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = ThreadingHTTPServer((RECEIVER_HOST, 0), BaseHTTPRequestHandler)
    port = httpd.server_address[1]
    state = Server(base=f"http://{RECEIVER_HOST}:{port}", port=port)

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            state.hosts.append(self.headers.get("host", ""))
            state.paths.append(self.path)
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("location", "/image.png")
                self.send_header("content-length", "0")
                self.end_headers()
                return
            if self.path == "/chunked":
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for _ in range(4):
                    self.wfile.write(b"100\r\n" + b"x" * 256 + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            content_type = "text/html" if self.path == "/page" else "image/png; charset=binary"
            self.send_response(200)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

    httpd.RequestHandlerClass = Handler
    with serving(httpd):
        yield state


def get(url: str, **kw: object) -> bytes:
    options: dict[str, object] = {
        "max_bytes": 1000,
        "allowed_content_types": ["image/png"],
        "allow_hosts": [RECEIVER_HOST],
    }
    options.update(kw)
    return ssrf.safe_get(url, **options)  # type: ignore[arg-type]


def test_an_allowed_image_is_fetched(server: Server) -> None:
    assert get(f"{server.base}/image.png") == PNG


def test_refusals(server: Server) -> None:
    cases: list[tuple[str, dict[str, object], str]] = [
        (f"{server.base}/page", {}, "content type 'text/html'"),
        (f"{server.base}/image.png", {"max_bytes": 50}, "above the limit"),
        (f"{server.base}/chunked", {}, "larger than the limit"),
        (f"{server.base}/moved", {}, "HTTP 302"),
        (f"http://127.0.0.1:{server.port}/image.png", {}, "loopback"),  # not on the allow-list
        (f"http://0x7f000002:{server.port}/image.png", {"allow_hosts": []}, "loopback"),
        ("file:///etc/passwd", {}, "scheme"),
    ]
    for url, options, words in cases:
        with pytest.raises(ssrf.FetchError, match=words):
            get(url, **options)
    # The redirect was not followed, and the refused URLs (one of them this very server,
    # as 0x7f000002) never reached it.
    assert server.paths == ["/page", "/image.png", "/chunked", "/moved"]


def test_the_request_goes_to_the_checked_address_with_the_original_host(server: Server) -> None:
    dns = {"images.example.test": [RECEIVER_HOST]}  # a name only the guard's resolver knows

    def resolve(host: str, port: int) -> list[str]:
        return dns[host]

    assert get(f"http://images.example.test:{server.port}/image.png", resolve=resolve) == PNG
    assert server.hosts[-1] == f"images.example.test:{server.port}"
    dns["images.example.test"] = ["10.0.0.8"]  # DNS changed: checked again, refused, nothing sent
    with pytest.raises(ssrf.FetchError, match="private"):
        get(f"http://images.example.test:{server.port}/image.png", resolve=resolve)
    assert len(server.hosts) == 1

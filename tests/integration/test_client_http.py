"""The Python client and CLI against a real local HTTP server that answers as told: retries on 503/429
with Retry-After, Idempotency-Key on retried POSTs, event streams resumed with Last-Event-ID, the
polling fallback, timeouts, and the CLI's one-line errors and exit codes."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from client import ApiError, AsyncClient, Client, Event, RetryPolicy, WaitTimeout, cli
from scripts.devstack import free_port
from tests.conftest import QuietHandler, serving
from tests.unit.test_client_models import JOB_ID, job


def error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": []}}


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON (dict/list), bytes, or None
    headers: dict[str, str] = field(default_factory=dict)
    events: list[str] | None = None  # an event stream: these chunks, sent chunked
    broken: bool = False  # end the stream without its last chunk (a broken connection)
    hold: float = 0.0  # keep the stream open this long after the chunks


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeApi:
    """Routes ``(method, path)`` to replies given in order; the last one repeats."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        api = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                with api.lock:
                    api.seen.append(
                        Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    replies = api.routes.get((self.command, path)) or [Reply(404, error("not_found", "no route"))]
                    reply = replies.pop(0) if len(replies) > 1 else replies[0]
                if reply.events is not None:
                    self.stream(reply)
                    return
                payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("content-type", reply.headers.pop("content-type", "application/json"))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def stream(self, reply: Reply) -> None:
                self.send_response(reply.status)
                self.send_header("content-type", reply.headers.get("content-type", "text/event-stream"))
                self.send_header("transfer-encoding", "chunked")
                self.send_header("connection", "close")
                self.end_headers()
                for chunk in reply.events or []:
                    data = chunk.encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                time.sleep(reply.hold)
                if not reply.broken:
                    self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True

            do_GET = do_POST = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, path)] = list(replies)

    def requests(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path.split("?", 1)[0] == path]


@pytest.fixture
def fake() -> Iterator[FakeApi]:
    api = FakeApi()
    with serving(api.server):
        yield api


EVENTS = f"/animations/{JOB_ID}/events"
GET = f"/animations/{JOB_ID}"


def sse(event_id: str, name: str, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(data)}\n\n"


# Retries


def test_create_retries_503_honouring_retry_after_with_the_same_idempotency_key(fake: FakeApi) -> None:
    fake.add(
        "POST",
        "/animations",
        Reply(503, error("queue_unavailable", "the job queue is unavailable"), {"Retry-After": "1"}),
        Reply(202, job()),
    )
    waits: list[tuple[float, str]] = []
    with Client(fake.url, api_key="sa_test", on_retry=lambda what, s, why: waits.append((s, why))) as api:
        started = time.monotonic()
        created = api.create({"prompt": "p", "steps": 4})
        elapsed = time.monotonic() - started
    assert created.id == JOB_ID and created.status == "queued"
    assert elapsed >= 0.95 and waits == [(1.0, "HTTP 503 queue_unavailable")]
    posts = fake.requests("POST", "/animations")
    keys = {p.headers["idempotency-key"] for p in posts}
    assert len(posts) == 2 and len(keys) == 1 and keys != {""}
    assert all(p.headers["authorization"] == "Bearer sa_test" for p in posts)
    assert json.loads(posts[0].body) == {"prompt": "p", "steps": 4}  # only what was set


def test_429_is_retried_a_bounded_number_of_times(fake: FakeApi) -> None:
    fake.add("GET", GET, Reply(429, error("rate_limited", "more than 600 requests a minute"), {"Retry-After": "0"}))
    with Client(fake.url, retry=RetryPolicy(attempts=3)) as api, pytest.raises(ApiError) as caught:
        api.get(JOB_ID)
    assert (caught.value.status, caught.value.code, caught.value.retry_after) == (429, "rate_limited", 0.0)
    assert len(fake.requests("GET", GET)) == 3


def test_a_retry_after_beyond_the_limit_fails_at_once_and_other_errors_are_not_retried(fake: FakeApi) -> None:
    fake.add("GET", GET, Reply(503, error("store_unavailable", "try again"), {"Retry-After": "3600"}))
    fake.add("POST", f"{GET}/cancel", Reply(409, error("already_finished", "the animation already succeeded")))
    with Client(fake.url) as api:
        with pytest.raises(ApiError) as unavailable:
            api.get(JOB_ID)
        with pytest.raises(ApiError) as finished:
            api.cancel(JOB_ID)
    assert unavailable.value.retry_after == 3600 and len(fake.requests("GET", GET)) == 1
    assert str(finished.value) == "the animation already succeeded (HTTP 409 already_finished)"
    assert len(fake.requests("POST", f"{GET}/cancel")) == 1


def test_the_async_client_retries_too(fake: FakeApi) -> None:
    fake.add(
        "POST", "/animations", Reply(503, error("queue_unavailable", "x"), {"Retry-After": "0"}), Reply(202, job())
    )

    async def run() -> str:
        async with AsyncClient(fake.url) as api:
            return (await api.create({"prompt": "p"})).id

    assert asyncio.run(run()) == JOB_ID
    posts = fake.requests("POST", "/animations")
    assert len(posts) == 2 and posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]


# Events


def two_connections(fake: FakeApi, *, broken: bool) -> None:
    fake.add(
        "GET",
        EVENTS,
        Reply(
            events=["retry: 10\n\n", sse("1-0", "status", {"status": "queued"}), sse("2-0", "progress", {"step": 1})],
            broken=broken,
        ),
        Reply(events=[sse("3-0", "progress", {"step": 2}), sse("4-0", "status", {"status": "succeeded"})]),
    )
    fake.add("GET", GET, Reply(200, job("succeeded", 4)))


@pytest.mark.parametrize("broken", [False, True], ids=["closed", "broken"])
def test_events_resume_with_last_event_id_and_end_after_the_final_status(fake: FakeApi, broken: bool) -> None:
    two_connections(fake, broken=broken)
    with Client(fake.url) as api:
        events = list(api.events(JOB_ID))
    assert [(e.id, e.event) for e in events] == [
        ("1-0", "status"),
        ("2-0", "progress"),
        ("3-0", "progress"),
        ("4-0", "status"),
    ]
    connections = fake.requests("GET", EVENTS)
    assert [c.headers.get("last-event-id") for c in connections] == [None, "2-0"]
    assert connections[0].headers["accept"] == "text/event-stream"


def test_async_events_resume_too(fake: FakeApi) -> None:
    two_connections(fake, broken=True)

    async def run() -> list[str | None]:
        async with AsyncClient(fake.url) as api:
            return [e.id async for e in api.events(JOB_ID)]

    assert asyncio.run(run()) == ["1-0", "2-0", "3-0", "4-0"]
    assert [c.headers.get("last-event-id") for c in fake.requests("GET", EVENTS)] == [None, "2-0"]


def test_wait_follows_the_stream_and_returns_the_fresh_job(fake: FakeApi) -> None:
    two_connections(fake, broken=False)
    seen: list[Event] = []
    with Client(fake.url) as api:
        final = api.wait(JOB_ID, timeout=10, on_event=seen.append)
    assert final.status == "succeeded" and len(seen) == 4 and seen[-1].is_final
    assert len(fake.requests("GET", GET)) == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_wait_falls_back_to_polling_when_there_is_no_event_stream(fake: FakeApi, mode: str) -> None:
    fake.add("GET", EVENTS, Reply(200, b"<html>a proxy</html>", {"content-type": "text/html"}))
    fake.add(
        "GET", GET, Reply(200, job("rendering", 1)), Reply(200, job("rendering", 3)), Reply(200, job("succeeded", 4))
    )
    seen: list[Event] = []
    if mode == "sync":
        with Client(fake.url) as api:
            final = api.wait(JOB_ID, timeout=10, on_event=seen.append, poll_interval=0.05)
    else:

        async def run() -> Any:
            async with AsyncClient(fake.url) as api:
                return await api.wait(JOB_ID, timeout=10, on_event=seen.append, poll_interval=0.05)

        final = asyncio.run(run())
    assert final.status == "succeeded"
    assert [(e.status, e.animation.progress.step if e.animation else None) for e in seen] == [
        ("rendering", 1),
        ("rendering", 3),
    ]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_wait_gives_up_at_its_timeout_even_on_a_silent_stream(fake: FakeApi, mode: str) -> None:
    fake.add("GET", EVENTS, Reply(events=[sse("1-0", "status", {"status": "rendering"})], hold=1.5))
    fake.add("GET", GET, Reply(200, job("rendering", 2)))
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        if mode == "sync":
            with Client(fake.url) as api:
                api.wait(JOB_ID, timeout=0.6, poll_interval=0.05)
        else:

            async def run() -> None:
                async with AsyncClient(fake.url) as api:
                    await api.wait(JOB_ID, timeout=0.6, poll_interval=0.05)

            asyncio.run(run())
    assert time.monotonic() - started < 1.4
    assert f"animation {JOB_ID} did not finish within 0.6s" in str(caught.value)


# The CLI: one line on stderr, an exit code per kind of failure


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_submit_retries_then_prints_the_id(fake: FakeApi) -> None:
    fake.add(
        "POST", "/animations", Reply(503, error("queue_unavailable", "x"), {"Retry-After": "0"}), Reply(202, job())
    )
    code, out, err = run_cli("--url", fake.url, "submit", "a lighthouse", "--steps", "4", "--codec", "gif")
    assert (code, out, err) == (0, JOB_ID + "\n", "")
    assert json.loads(fake.requests("POST", "/animations")[-1].body) == {
        "prompt": "a lighthouse",
        "steps": 4,
        "animation": {"codec": "gif"},
    }


def test_cli_errors_are_one_line_with_distinct_exit_codes(fake: FakeApi) -> None:
    fake.add("POST", "/animations", Reply(422, error("limit_exceeded", "steps: 300 is above this server's limit")))
    failed = job("failed", 2, error={"code": "model_error", "message": "no model 'x'"})
    fake.add("GET", EVENTS, Reply(events=[sse("1-0", "status", {"status": "failed", "animation": failed})]))
    fake.add("GET", GET, Reply(200, failed))
    cases = [
        (("submit", "p", "--steps", "300"), cli.EXIT_API_ERROR, "steps: 300 is above this server's limit (HTTP 422"),
        (("wait", JOB_ID), cli.EXIT_JOB_FAILED, f"animation {JOB_ID} failed: model_error: no model 'x'"),
        (("status", "nope"), cli.EXIT_API_ERROR, "no route (HTTP 404 not_found)"),
    ]
    for argv, expected, message in cases:
        code, _, err = run_cli("--url", fake.url, "-q", *argv)
        assert code == expected, (argv, err)
        assert len(err.splitlines()) == 1 and message in err, (argv, err)
    code, _, err = run_cli("--url", f"http://127.0.0.1:{free_port()}", "status", JOB_ID)
    assert code == cli.EXIT_UNREACHABLE and len(err.splitlines()) == 1 and "cannot reach the API" in err


def test_cli_wait_timeout_exits_5(fake: FakeApi) -> None:
    fake.add("GET", EVENTS, Reply(200, b"no stream", {"content-type": "text/plain"}))
    fake.add("GET", GET, Reply(200, job("rendering", 1)))
    code, out, err = run_cli("--url", fake.url, "wait", JOB_ID, "--timeout", "0.5")
    assert code == cli.EXIT_TIMEOUT and out == ""
    assert (
        err.splitlines()[-1]
        == f"stepanim: animation {JOB_ID} did not finish within 0.5s (still rendering); it keeps running"
    )

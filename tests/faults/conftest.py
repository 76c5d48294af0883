"""Fault tests: the whole service as real processes, with short leases and a fast reconciler
so that a lost worker is noticed in seconds (production: a minute)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from scripts.devstack import UNLIMITED_DEV_SETTINGS, Stack, free_port
from tests.conftest import RECEIVER_HOST, RECEIVER_SETTINGS, QuietHandler, S3Server
from tests.service import TERMINAL, RunningStack

FAST = {
    "STEPANIM_LEASE_SECONDS": "2",
    "STEPANIM_RECONCILE_INTERVAL_SECONDS": "0.5",
    "STEPANIM_WEBHOOK_RETRY_SCHEDULE": json.dumps([0.5] + [1.0] * 30),  # about 30 s of retries
    **UNLIMITED_DEV_SETTINGS,  # development mode, no per-key limits: these tests send many jobs
    **RECEIVER_SETTINGS,
    "STEPANIM_DEFAULT_MODEL": "tiny-sd",
    "STEPANIM_DEVICE": "cpu",
    "HF_HUB_OFFLINE": "1",
}


def body(*, steps: int = 6, **extra: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "prompt": "a fault",
        "steps": steps,
        "width": 64,
        "height": 64,
        "seed": 3,
        "animation": {"duration": 1, "codec": "h264"},
    }
    request.update(extra)
    return request


def wait_for(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, OSError):
            last = check()
            if last:
                return last
        time.sleep(interval)
    raise TimeoutError(f"{what}: not after {timeout:.0f}s (last: {last!r})")


@dataclass
class Service(RunningStack):
    def post(self, request: dict[str, Any]) -> str:
        response = httpx.post(f"{self.url}/animations", json=request, timeout=30)
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    def wait_terminal(self, job_ids: list[str], *, timeout: float = 180) -> dict[str, dict[str, Any]]:
        done: dict[str, dict[str, Any]] = {}

        def all_done() -> bool:
            for job_id in job_ids:
                if job_id not in done:
                    job = self.get(job_id)
                    if job["status"] in TERMINAL:
                        done[job_id] = job
            return len(done) == len(job_ids)

        wait_for(all_done, timeout=timeout, what=f"{len(job_ids) - len(done)} of {len(job_ids)} jobs terminal")
        return done

    def videos(self, job_id: str) -> list[str]:
        return self.stored(f"jobs/{job_id}/videos/")

    def frames(self, job_id: str) -> list[str]:
        return self.stored(f"jobs/{job_id}/frames/")

    def metrics(self) -> dict[str, float]:
        """Samples by ``name{label=value,...}``."""
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return samples

    def log(self, name: str) -> list[dict[str, Any]]:
        """The JSON lines a process wrote (other lines, e.g. Celery's banner, are skipped)."""
        lines = []
        for line in (self.stack.workdir / "logs" / f"{name}.log").read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict):
                    lines.append(data)
        return lines


@pytest.fixture
def make_service(
    models_dir: Path, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Service]]:
    """Start a service: ``make_service(backend="s3", s3_endpoint=None, appendonly=False, **env)``."""
    stacks: list[Stack] = []

    def make(*, backend: str = "s3", s3_endpoint: str | None = None, appendonly: bool = False, **env: str) -> Service:
        workdir = tmp_path_factory.mktemp("faults")
        settings = {**FAST, "STEPANIM_MODELS_DIR": str(models_dir), **env}
        s3 = storage_dir = None
        if backend == "s3":
            s3 = S3Server(endpoint=s3_server.endpoint, bucket=f"f-{uuid.uuid4().hex[:12]}")
            s3.client().create_bucket(Bucket=s3.bucket)
            settings.update(s3.settings())
            if s3_endpoint is not None:
                settings["STEPANIM_S3_ENDPOINT_URL"] = s3_endpoint
        else:
            storage_dir = workdir / "storage"
            settings.update({"STEPANIM_STORAGE_BACKEND": "local", "STEPANIM_LOCAL_STORAGE_DIR": str(storage_dir)})
        stack = Stack(workdir=workdir, settings=settings)
        stacks.append(stack)
        stack.start_redis(appendonly=appendonly)
        stack.start_api()
        for role in ("render", "encode", "stream", "notify"):
            stack.start_worker(role)
        stack.start_reconciler()
        return Service(stack=stack, s3=s3, storage_dir=storage_dir)

    yield make
    for stack in stacks:
        stack.stop()


class TcpProxy:
    """A TCP forwarder we can take down (listener closed, open connections cut) and bring back
    on the same port: a storage outage as the clients see it, while the server keeps its data."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.up()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


@dataclass
class Receiver:
    """A webhook receiver that can be down (nothing listens on its port) and come back."""

    port: int = field(default_factory=free_port)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{RECEIVER_HOST}:{self.port}/hook"

    def up(self) -> None:
        deliveries = self.deliveries

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("content-length", 0)))
                deliveries.append({"headers": dict(self.headers), "body": json.loads(data)})
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer((RECEIVER_HOST, self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

"""Fixtures that start real components: redis-server, moto's S3 server, the tiny model,
and the whole service as separate processes (``scripts.devstack``)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from scripts.devstack import Stack, free_port, spawn, wait_until
from stepanim.settings import Settings

S3_KEY = "testing"

# Webhook receivers listen on 127.0.0.2, the one loopback address the test stacks allow
# the SSRF guard to call: 127.0.0.1, localhost and the rest of the SSRF table stay refused.
RECEIVER_HOST = "127.0.0.2"
RECEIVER_SETTINGS = {
    "STEPANIM_OUTBOUND_ALLOW": json.dumps([RECEIVER_HOST]),
    "STEPANIM_WEBHOOK_RETRY_SCHEDULE": "[0.5, 0.5, 0.5]",  # fast retries in tests
    "STEPANIM_WEBHOOK_RETRY_JITTER": "0",
}


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding ``tiny-sd``, the random-weight pipeline, saved and loaded like a real one."""
    from worker.tiny_model import build_tiny_model

    folder = tmp_path_factory.mktemp("models")
    build_tiny_model(folder / "tiny-sd")
    return folder


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch on one intra-op thread for a module of tiny-model renders: they gain nothing from more,
    and on a shared 2-core machine OpenMP's spinning threads made them 2-3x slower (FINDINGS.md,
    "The machine under several stacks"). Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def family_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with a tiny random-weight model of every family: ``tiny-sd``, ``tiny-sdxl``,
    ``tiny-sd3``, ``tiny-flux`` (FLUX.1-dev's configuration) and ``tiny-flux-schnell``."""
    from worker.tiny_model import build_tiny_model

    folder = tmp_path_factory.mktemp("family-models")
    for family in ("sd", "sdxl", "sd3", "flux"):
        build_tiny_model(folder / f"tiny-{family}", family=family)
    build_tiny_model(folder / "tiny-flux-schnell", family="flux", schnell=True)
    return folder


@pytest.fixture(scope="session")
def redis_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A private redis-server on a free port (never the machine's own)."""
    stack = Stack(workdir=tmp_path_factory.mktemp("redis"), settings={})
    stack.start_redis()
    yield stack
    stack.stop()


@pytest.fixture
def redis_url(redis_stack: Stack) -> str:
    import redis

    redis.Redis.from_url(redis_stack.redis_url).flushall()
    return redis_stack.redis_url


@dataclass
class S3Server:
    endpoint: str
    bucket: str

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_KEY,
        )

    def keys(self) -> list[str]:
        page = self.client().list_objects_v2(Bucket=self.bucket)
        return [o["Key"] for o in page.get("Contents", [])]

    def settings_object(self, **extra: Any) -> Settings:
        return Settings(
            _env_file=None,
            storage_backend="s3",
            s3_endpoint_url=self.endpoint,
            s3_bucket=self.bucket,
            s3_access_key_id=S3_KEY,
            s3_secret_access_key=S3_KEY,
            **extra,
        )

    def settings(self) -> dict[str, str]:
        return {
            "STEPANIM_STORAGE_BACKEND": "s3",
            "STEPANIM_S3_ENDPOINT_URL": self.endpoint,
            "STEPANIM_S3_BUCKET": self.bucket,
            "STEPANIM_S3_ACCESS_KEY_ID": S3_KEY,
            "STEPANIM_S3_SECRET_ACCESS_KEY": S3_KEY,
        }


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's standalone S3 server, a separate process on a free port."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("moto")
    proc = spawn(
        "moto",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**_env(), "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_KEY},
        log_dir=workdir,
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(endpoint, timeout=1).status_code < 500, timeout=60, what="moto", proc=proc)
    yield S3Server(endpoint=endpoint, bucket="stepanim-test")
    proc.stop()


@pytest.fixture
def s3(s3_server: S3Server) -> S3Server:
    """A fresh, empty bucket per test."""
    server = S3Server(endpoint=s3_server.endpoint, bucket=f"t-{uuid.uuid4().hex[:12]}")
    server.client().create_bucket(Bucket=server.bucket)
    return server


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = 0.0  # time.monotonic() when it arrived

    def json(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class WebhookReceiver:
    url: str
    deliveries: list[Delivery] = field(default_factory=list)
    # Responses to give, in order (a status, or a status and headers); then 200.
    statuses: list[int | tuple[int, dict[str, str]]] = field(default_factory=list)
    event: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = 60) -> list[Delivery]:
        with self.event:
            self.event.wait_for(lambda: len(self.deliveries) >= count, timeout)
        return list(self.deliveries)


class QuietHandler(BaseHTTPRequestHandler):
    """The base of the tests' HTTP handlers: no line on stderr for every request."""

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[ThreadingHTTPServer]:
    """``server`` answering on a thread until the block ends; then shut down and closed."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """An HTTP server inside the test that records every POST."""
    server = ThreadingHTTPServer((RECEIVER_HOST, 0), BaseHTTPRequestHandler)
    receiver = WebhookReceiver(url=f"http://{RECEIVER_HOST}:{server.server_address[1]}/hook")

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            answer = receiver.statuses.pop(0) if receiver.statuses else 200
            status, extra = answer if isinstance(answer, tuple) else (answer, {})
            headers = {k.lower(): v for k, v in self.headers.items()}
            with receiver.event:
                receiver.deliveries.append(Delivery(self.path, headers, body, time.monotonic()))
                receiver.event.notify_all()
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()

    server.RequestHandlerClass = Handler
    with serving(server):
        yield receiver


def ffprobe_json(path: Path) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def render_two_steps(folder: Path, prompt: str) -> Any:
    """The pipeline folder a quick training run wrote, loaded as users load it and run for two
    steps at 32²: the image (an array)."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompt, num_inference_steps=2, height=32, width=32, output_type="np").images[0]

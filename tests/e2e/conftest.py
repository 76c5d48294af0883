"""The whole service as separate processes, once per storage backend."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.devstack import ROOT, Stack, running
from tests.conftest import RECEIVER_SETTINGS, S3Server
from tests.service import TERMINAL, RunningStack


@dataclass
class Service(RunningStack):
    backend: str  # "s3" or "local"

    def post(self, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}/animations", json=body, timeout=30, **kwargs)

    def wait(self, job_id: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(job_id)
            if job["status"] in TERMINAL:
                return job
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} not finished after {timeout}s: {job}")

    def redis_keys(self) -> list[Any]:
        import redis

        keys = redis.Redis.from_url(self.stack.redis_url).keys("stepanim:*")
        # Rate-limit counters count every request, a refused one too; everything else is job data.
        return sorted(k for k in keys if b":rate:" not in k)


def dev_settings(workdir: Path, models_dir: Path, default_model: str = "tiny-sd", **more: str) -> dict[str, str]:
    """A development stack's settings (no API key needed) on the CPU, offline, with local storage
    under ``workdir/storage``; ``more`` are further ``STEPANIM_*`` values."""
    return {
        "STEPANIM_MODELS_DIR": str(models_dir),
        "STEPANIM_DEFAULT_MODEL": default_model,
        "STEPANIM_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",  # no hub here: an unknown model must fail fast
        "STEPANIM_ALLOW_ANONYMOUS": "true",
        "STEPANIM_STORAGE_BACKEND": "local",
        "STEPANIM_LOCAL_STORAGE_DIR": str(workdir / "storage"),
        **more,
    }


@pytest.fixture(scope="module", params=["s3", "local"])
def service(
    request: pytest.FixtureRequest, models_dir: Path, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    backend: str = request.param
    workdir = tmp_path_factory.mktemp(f"stack-{backend}")
    settings = dev_settings(workdir, models_dir, **RECEIVER_SETTINGS)
    s3 = None
    storage_dir: Path | None = workdir / "storage"
    if backend == "s3":
        s3 = S3Server(endpoint=s3_server.endpoint, bucket=f"e2e-{uuid.uuid4().hex[:12]}")
        s3.client().create_bucket(Bucket=s3.bucket)
        settings.update(s3.settings())
        storage_dir = None
    stack = Stack(workdir=workdir, settings=settings)
    try:
        stack.start()
        yield Service(stack=stack, backend=backend, storage_dir=storage_dir, s3=s3)
    finally:
        stack.stop()


DIGITS_MODEL = ROOT / "models" / "digits"
EMOJI_MODEL = ROOT / "models" / "emoji"


def committed_model_service(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The whole service on a committed model alone (local storage, development mode)."""
    assert (model / "model_index.json").is_file(), f"the committed model is missing: {model}"
    workdir = tmp_path_factory.mktemp(f"stack-{model.name}")
    storage_dir = workdir / "storage"
    models_dir = workdir / "models"
    models_dir.mkdir()
    (models_dir / model.name).symlink_to(model, target_is_directory=True)
    settings = dev_settings(workdir, models_dir, model.name, **RECEIVER_SETTINGS)
    with running(workdir, settings) as stack:
        service = Service(stack=stack, backend="local", storage_dir=storage_dir, s3=None)
        wait_for_models(service)  # before that, a request gets no model defaults (32x32 here)
        yield service


@pytest.fixture(scope="session")  # one stack for every module that renders with digits
def digits_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The whole service on the committed digits model (local storage, development mode)."""
    yield from committed_model_service(DIGITS_MODEL, tmp_path_factory)


@pytest.fixture(scope="module")
def emoji_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The whole service on the committed emoji model (local storage, development mode)."""
    yield from committed_model_service(EMOJI_MODEL, tmp_path_factory)


def wait_for_models(service: Service, timeout: float = 120) -> None:
    """Until the render worker has published its models (GET /capabilities lists them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{service.url}/capabilities", timeout=10)
        if response.status_code == 200 and response.json()["models"]:
            return
        time.sleep(0.5)
    raise TimeoutError("the render worker published no model")

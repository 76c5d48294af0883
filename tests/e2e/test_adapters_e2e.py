"""A LoRA through the whole service: the render worker publishes its adapters folder, the API lists it
and admits a job naming it, the worker applies it, and the video's metadata names it. A file that
breaks after it was published fails its job only; the worker goes on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.devstack import Stack, running
from tests.conftest import ffprobe_json
from tests.e2e.conftest import dev_settings
from tests.service import TERMINAL
from worker.tiny_model import build_tiny_lora

BASE = {"prompt": "a red cat", "steps": 3, "width": 64, "height": 64, "seed": 7, "animation": {"duration": 1}}


@pytest.fixture(scope="module")
def stack(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack-adapters")
    adapters = workdir / "adapters"
    build_tiny_lora(adapters / "loras" / "style.safetensors", seed=1)
    build_tiny_lora(adapters / "loras" / "fragile.safetensors", seed=2)
    with running(workdir, dev_settings(workdir, models_dir, STEPANIM_ADAPTERS_DIR=str(adapters))) as stack:
        yield stack


def post(stack: Stack, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{stack.api_url}/animations", json=body, timeout=30)


def wait(stack: Stack, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = httpx.get(f"{stack.api_url}/animations/{job_id}", timeout=30).json()
        if job["status"] in TERMINAL:
            return job
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} not finished after {timeout}s")


def published_loras(stack: Stack, timeout: float = 60) -> dict[str, dict[str, Any]]:
    """The LoRAs GET /capabilities lists, once the render worker (and the encoder) have published."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{stack.api_url}/capabilities", timeout=30)
        if response.status_code == 200 and (found := response.json()["adapters"]):
            return {a["name"]: a for a in found if a["kind"] == "lora"}
        time.sleep(0.2)
    raise TimeoutError("no adapters published")


def test_a_job_with_a_lora_becomes_a_video_that_names_it(stack: Stack, tmp_path: Path) -> None:
    loras = published_loras(stack)
    assert loras["style"]["models"] == ["tiny-sd"] and loras["style"]["families"] == ["sd"]

    unknown = post(stack, {**BASE, "loras": [{"name": "nope"}]})
    assert unknown.status_code == 422 and unknown.json()["error"]["details"][0]["field"] == "loras.0.name"

    # A file that breaks after the worker published it: the API admits the job, the worker fails it.
    (Path(stack.settings["STEPANIM_ADAPTERS_DIR"]) / "loras" / "fragile.safetensors").write_bytes(b"\x00" * 32)
    broken = post(stack, {**BASE, "loras": [{"name": "fragile"}]})
    assert broken.status_code == 202, broken.text
    failed = wait(stack, broken.json()["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "adapter_error"
    assert "fragile.safetensors is not a valid LoRA safetensors file" in failed["error"]["message"]

    created = post(stack, {**BASE, "loras": [{"name": "style", "weight": 0.8}]})  # the same worker, next job
    assert created.status_code == 202, created.text
    job = wait(stack, created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["request"]["loras"] == [{"name": "style", "weight": 0.8}]
    path = tmp_path / "video.mp4"
    path.write_bytes(httpx.get(job["video"]["url"], timeout=30).content)
    tags = ffprobe_json(path)["format"]["tags"]
    assert tags["title"].endswith("| <lora:style:0.8>")
    [used] = json.loads(tags["description"])["loras"]
    assert (used["name"], used["weight"], len(used["sha256"])) == ("style", 0.8, 64)

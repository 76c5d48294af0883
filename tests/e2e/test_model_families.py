"""Every model family through the whole service (API -> render worker -> encoder): tiny random-weight
SD 1.x, SDXL, SD3 and Flux models, each published by the render worker with what fits it, rendered
with a sampler and schedule of its own to a playable video; and what does not fit is refused at
create, before anything is stored."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.devstack import running
from tests.conftest import ffprobe_json
from tests.e2e.conftest import Service, dev_settings

pytestmark = pytest.mark.slow

CASES = [
    # model, sampler (a web UI's name), what the worker must have used
    ("tiny-sd", "DPM++ 2M Karras", ("dpmpp_2m", "karras")),
    ("tiny-sdxl", "Euler a", ("euler_a", "default")),
    ("tiny-sd3", "Euler", ("euler", "default")),
    ("tiny-flux", "UniPC", ("unipc", "default")),
    ("tiny-flux-schnell", None, ("euler", "default")),  # none asked: the family's default
]


@pytest.fixture(scope="module")
def families(family_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("stack-families")
    storage_dir = workdir / "storage"
    with running(workdir, dev_settings(workdir, family_models_dir)) as stack:
        yield Service(stack=stack, backend="local", storage_dir=storage_dir, s3=None)


def published(service: Service) -> dict[str, dict[str, Any]]:
    """The models the render worker published, once it has (the API reads them every few seconds)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = httpx.get(f"{service.url}/capabilities", timeout=10)
        if response.status_code == 200 and len(response.json()["models"]) == 5:
            return {m["name"]: m for m in response.json()["models"]}
        time.sleep(0.5)
    raise TimeoutError("the render worker did not publish its models")


def test_every_family_renders_to_a_playable_video(families: Service, tmp_path: Path) -> None:
    models = published(families)
    assert {name: m["family"] for name, m in models.items()} == {
        "tiny-sd": "sd",
        "tiny-sdxl": "sdxl",
        "tiny-sd3": "sd3",
        "tiny-flux": "flux",
        "tiny-flux-schnell": "flux",
    }
    assert "dpmpp_2m" in models["tiny-flux"]["samplers"] and "dpmpp_2m" not in models["tiny-flux-schnell"]["samplers"]
    jobs = {}
    for model, sampler, _ in CASES:
        body: dict[str, object] = {
            "prompt": "a red cat",
            "model": model,
            "steps": 4,
            "seed": 7,
            "width": 64,
            "height": 64,
            "capture": {"decoder": "approx"},
            "animation": {"duration": 1},
        }
        if sampler is not None:
            body["scheduler"] = sampler
        response = families.post(body)
        assert response.status_code == 202, (model, response.text)
        jobs[model] = response.json()["id"]
    for model, _, (sampler_id, schedule) in CASES:
        job = families.wait(jobs[model], timeout=300)
        assert job["status"] == "succeeded", (model, job["error"])
        assert (job["request"]["scheduler"], job["request"]["schedule"]) == (sampler_id, schedule)
        video = tmp_path / f"{model}.mp4"
        video.write_bytes(httpx.get(job["video"]["url"], timeout=60).content)
        probe = ffprobe_json(video)
        assert probe["streams"][0]["codec_name"] == "h264" and int(probe["streams"][0]["nb_read_frames"]) == 30
        description = json.loads({k.lower(): v for k, v in probe["format"]["tags"].items()}["description"])
        assert (description["model"], description["scheduler"], description["schedule"]) == (
            model,
            sampler_id,
            schedule,
        )


def test_what_does_not_fit_a_model_is_refused_before_anything_is_stored(families: Service) -> None:
    published(families)
    before = families.redis_keys()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "tiny-flux", "negative_prompt": "blurry"}, "negative_prompt"),
        ({"model": "tiny-sd3", "width": 72, "height": 64}, "width"),
        ({"model": "tiny-flux", "scheduler": "ddim"}, "scheduler"),
        ({"model": "tiny-sd", "scheduler": "ddim", "schedule": "karras"}, "schedule"),
        ({"model": "tiny-sd", "scheduler": "lcm", "steps": 60}, "steps"),
    ]
    for extra, field in cases:
        response = families.post({"prompt": "x", "steps": 4, **extra})
        assert response.status_code == 422, (extra, response.text)
        assert [d["field"] for d in response.json()["error"]["details"]] == [field], response.json()
    assert families.redis_keys() == before

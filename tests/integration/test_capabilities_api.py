"""Capabilities (probed from a real ffmpeg, published in a real Redis) and the API routes that use
them: GET /capabilities, the 422 for a codec the encoder lacks, and POST .../renditions."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from encoder.capabilities import publish
from stepanim import lifecycle
from stepanim.admission import admit_now
from stepanim.jobs import Job, JobImage, utcnow
from stepanim.model_catalog import scan
from stepanim.queues import ENCODE_QUEUE, make_celery
from stepanim.request import AnimationCreate
from stepanim.samplers import SAMPLER_IDS
from stepanim.services import Services
from stepanim.settings import Settings
from stepanim.storage import LocalStorage
from stepanim.store import JobStore


def services(redis_url: str, tmp_path: Path, **settings: object) -> Services:
    # Development mode: these tests call the API without a key.
    config = Settings(_env_file=None, redis_url=redis_url, allow_anonymous=True, **settings)  # type: ignore[arg-type]
    return Services(
        settings=config,
        store=JobStore.from_url(redis_url),
        storage=LocalStorage(tmp_path / "storage", secret="s" * 16, base_url="http://x", ttl_seconds=60),
        celery=make_celery(config),
    )


@pytest.fixture
def limited_ffmpeg(tmp_path: Path) -> str:
    """The real ffmpeg, as a build without libaom-av1 and without minterpolate would list itself."""
    script = tmp_path / "ffmpeg-without-av1"
    script.write_text('#!/bin/sh\nffmpeg "$@" | grep -v -e libaom-av1 -e minterpolate\n')
    script.chmod(0o755)
    return str(script)


@pytest.fixture
def svc(redis_url: str, tmp_path: Path, limited_ffmpeg: str) -> Services:
    return services(redis_url, tmp_path, ffmpeg_path=limited_ffmpeg)


@pytest.fixture
def client(svc: Services) -> Iterator[TestClient]:
    with TestClient(create_app(svc.settings, services=svc)) as c:
        yield c


def test_the_real_ffmpeg_supports_everything(redis_url: str, tmp_path: Path) -> None:
    caps = publish(services(redis_url, tmp_path))
    assert caps is not None
    assert {c.value for c in caps.codecs} == {"h264", "h265", "vp9", "av1", "prores", "gif"}
    assert {i.value for i in caps.interpolations} == {"none", "blend", "mci"}
    assert caps.ffmpeg_version.startswith("ffmpeg version")


def test_capabilities_lists_what_the_encoder_has(svc: Services, client: TestClient) -> None:
    missing = client.get("/capabilities")
    assert missing.status_code == 503
    assert missing.json()["error"]["code"] == "encoder_unavailable"
    publish(svc)
    body = client.get("/capabilities").json()
    assert body["codecs"] == ["h264", "h265", "vp9", "prores", "gif"]
    assert body["interpolations"] == ["none"]
    assert body["schedulers"] == list(SAMPLER_IDS)
    assert body["default_model"] == svc.settings.default_model
    assert body["missing"] == {
        "av1": "ffmpeg lacks libaom-av1",
        "blend": "ffmpeg lacks minterpolate",
        "mci": "ffmpeg lacks minterpolate",
    }


def test_a_missing_codec_is_refused_before_anything_is_stored(svc: Services, client: TestClient) -> None:
    base = {"prompt": "x", "steps": 4}
    accepted = client.post("/animations", json={**base, "animation": {"codec": "av1"}})
    assert accepted.status_code == 202  # no encoder has reported yet: not refused
    publish(svc)
    before = sorted(svc.store.redis.keys("*"))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"animation": {"codec": "av1"}}, "animation.codec: av1 is not supported by this server's encoder"),
        ({"animation": {"interpolation": "mci"}}, "animation.interpolation: mci is not supported"),
        ({"renditions": [{"codec": "vp9"}, {"codec": "av1"}]}, "renditions.1.codec: av1 is not supported"),
    ]
    for extra, message in cases:
        response = client.post("/animations", json={**base, **extra})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "unsupported"
        assert error["message"].startswith(message), error
    invalid = client.post("/animations", json={**base, "animation": {"codec": "mpeg2"}})
    assert invalid.status_code == 422
    assert invalid.json()["error"]["message"].startswith("animation.codec: Input should be")
    assert sorted(svc.store.redis.keys("*")) == before
    ok = client.post("/animations", json={**base, "animation": {"codec": "vp9"}})
    assert ok.status_code == 202


def finished_job(svc: Services, *, frames: int = 6, **animation: object) -> Job:
    now = utcnow()
    job = Job(
        id=uuid.uuid4().hex,
        request=AnimationCreate.model_validate({"prompt": "p", "steps": frames, "animation": animation}),
        model="m",
        seed=1,
        created_at=now,
        updated_at=now,
    )
    admit_now(svc.store, job)
    lifecycle.start_rendering(svc, job.id)
    keys = [f"jobs/{job.id}/frames/{i}.png" for i in range(frames)]
    lifecycle.start_encoding(svc, job.id, [JobImage(batch_index=0, seed=1, frames=keys)])
    return job


def test_post_a_rendition(svc: Services, client: TestClient) -> None:
    publish(svc)
    rendering = finished_job(svc)
    refused = client.post(f"/animations/{rendering.id}/renditions", json={"codec": "vp9"})
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "not_ready"

    job = finished_job(svc)
    lifecycle.finish_encoding(svc, job.id, videos=None)
    url = f"/animations/{job.id}/renditions"
    assert client.post(url, json={"codec": "av1"}).json()["error"]["code"] == "unsupported"
    too_many = client.post(url, json={"skip_steps": 6})
    assert too_many.status_code == 422
    assert "skip_steps: 6 leaves no frame of the 6" in too_many.json()["error"]["message"]
    assert client.post(url, json={"codec": "vp9", "bogus": 1}).status_code == 422
    assert svc.store.redis.llen(ENCODE_QUEUE) == 0

    created = client.post(url, json={"codec": "vp9", "duration": 2, "fps": 24})
    assert created.status_code == 202, created.text
    rendition = created.json()
    assert rendition["status"] == "queued" and rendition["video"] is None
    assert rendition["options"]["codec"] == "vp9" and rendition["options"]["fps"] == 24
    assert created.headers["location"].endswith(f"{url}/{rendition['id']}")
    assert svc.store.redis.llen(ENCODE_QUEUE) == 1
    assert client.get(f"{url}/{rendition['id']}").json()["id"] == rendition["id"]
    assert client.get(f"{url}/{'0' * 16}").status_code == 404
    assert [r["id"] for r in client.get(f"/animations/{job.id}").json()["renditions"]] == [rendition["id"]]
    assert client.post(f"/animations/{'0' * 32}/renditions", json={}).status_code == 404


def test_no_rendition_once_frames_are_deleted(svc: Services, client: TestClient) -> None:
    job = finished_job(svc, keep_frames=False)
    lifecycle.finish_encoding(svc, job.id, videos=None, frames_deleted=True)
    response = client.post(f"/animations/{job.id}/renditions", json={"codec": "h264"})
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "frames_deleted"
    assert "keep_frames" in error["message"]
    assert svc.store.get(job.id).renditions == []


def publish_models(svc: Services, tmp_path: Path) -> None:
    """What a render worker with a digits-like model and a Flux model publishes."""
    folder = tmp_path / "models"
    for name, class_name, manifest in (
        (
            "digits",
            "StableDiffusionPipeline",
            {
                "defaults": {"width": 32, "height": 32, "steps": 30, "guidance_scale": 3, "capture": {"upscale": 4}},
                "vocabulary": ["a", "handwritten", "7", "seven"],
                "vocabulary_hint": "digits 0-9",
            },
        ),
        ("flux", "FluxPipeline", {}),
    ):
        (folder / name).mkdir(parents=True)
        (folder / name / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
        (folder / name / "stepanim.json").write_text(json.dumps(manifest))
    svc.published.set_models("worker-1", scan(folder), ttl=60)


def test_the_server_applies_the_models_defaults_and_says_what_it_used(
    svc: Services, client: TestClient, tmp_path: Path
) -> None:
    publish(svc)
    publish_models(svc, tmp_path)
    caps = client.get("/capabilities").json()
    assert [m["name"] for m in caps["models"]] == ["digits", "flux"]
    assert caps["models"][1]["family"] == "flux" and caps["models"][1]["negative_prompt"] is False
    assert caps["limits"]["max_steps"] == svc.settings.max_steps and caps["limits"]["min_side"] == 32
    assert {"id": "dpmpp_2m", "label": "DPM++ 2M", "max_steps": None} in caps["samplers"]

    job = client.post("/animations", json={"prompt": "a handwritten 7", "model": "digits"}).json()
    request = job["request"]
    assert (request["width"], request["height"], request["steps"], request["guidance_scale"]) == (32, 32, 30, 3)
    assert (request["capture"]["upscale"], request["scheduler"]) == (4, "euler_a")
    assert job["warnings"] == []
    mine = client.post("/animations", json={"prompt": "a cat", "model": "digits", "steps": 5}).json()
    assert (mine["request"]["steps"], mine["request"]["width"]) == (5, 32)  # the client's own value wins
    assert "'cat'" in mine["warnings"][0] and "digits 0-9" in mine["warnings"][0]


def test_an_unknown_model_or_a_request_that_does_not_fit_its_model_is_refused(
    svc: Services, client: TestClient, tmp_path: Path
) -> None:
    publish(svc)
    publish_models(svc, tmp_path)
    before = sorted(svc.store.redis.keys("*"))
    unknown = client.post("/animations", json={"prompt": "x", "model": "no-such-model"})
    assert unknown.status_code == 422
    message = "model: no model 'no-such-model' on this server's render workers (digits, flux)"
    assert unknown.json()["error"]["message"] == message
    misfit = client.post(
        "/animations",
        json={"prompt": "x", "model": "flux", "width": 520, "negative_prompt": "blur", "scheduler": "DPM++ 2M Karras"},
    )
    assert misfit.status_code == 422
    # (a Flux model without dynamic shifting, as FLUX.1-schnell: DPM-Solver does not fit it at all)
    assert [d["field"] for d in misfit.json()["error"]["details"]] == ["width", "negative_prompt", "scheduler"]
    too_many = client.post("/animations", json={"prompt": "x", "model": "digits", "steps": 900, "batch_size": 8})
    assert too_many.status_code == 422 and too_many.json()["error"]["message"].startswith("steps: 900 is above")
    assert sorted(svc.store.redis.keys("*")) == before  # nothing stored
    hub = client.post("/animations", json={"prompt": "x", "model": "someone/some-model"})
    assert hub.status_code == 202  # a hub id the workers may fetch: not refused here

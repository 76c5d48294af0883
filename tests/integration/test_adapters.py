"""LoRAs and embeddings on the tiny SD model, rendered in this process against a real redis-server and
storage: they change the frames (by their weight), they never reach the next job on the same
worker, a broken file fails its job only; and the API refuses what the workers did not publish."""

from __future__ import annotations

import io
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.numpy import load_file, save_file

import worker.adapters
from api.app import create_app
from api.routes import capabilities as capabilities_route
from encoder.capabilities import publish as publish_encoder
from stepanim import adapter_shapes, adapters, lifecycle, model_catalog
from stepanim.admission import admit_now
from stepanim.failures import AdapterError
from stepanim.jobs import Job, utcnow
from stepanim.naming import manifest_key
from stepanim.request import AnimationCreate
from stepanim.services import Services
from stepanim.settings import Settings
from worker.adapters import adapter_name, lora_enabled
from worker.pipelines import PipelineCache
from worker.render import RenderResult, render
from worker.tiny_model import build_tiny_embedding, build_tiny_lora, build_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 64
PROMPT = "a mystyle cat"  # the embedding's token; only a job that names the embedding gets it


@pytest.fixture(scope="module")
def adapters_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("adapters")
    build_tiny_lora(folder / "loras" / "style.safetensors", seed=1)
    build_tiny_lora(folder / "loras" / "other.safetensors", seed=2)
    build_tiny_embedding(folder / "embeddings" / "mystyle.safetensors", seed=3)
    return folder


def settings_for(models_dir: Path, adapters_dir: Path, **extra: Any) -> Settings:
    return Settings(_env_file=None, models_dir=models_dir, adapters_dir=adapters_dir, device="cpu", **extra)  # type: ignore[call-arg]


@pytest.fixture
def svc(redis_url: str, models_dir: Path, adapters_dir: Path, tmp_path: Path) -> Iterator[Services]:
    settings = settings_for(
        models_dir, adapters_dir, redis_url=redis_url, storage_backend="local", local_storage_dir=tmp_path / "storage"
    )
    services = Services.from_settings(settings)
    yield services
    services.store.redis.close()


@pytest.fixture(scope="module")
def pipes(models_dir: Path, adapters_dir: Path) -> PipelineCache:
    """One worker's pipelines, shared by the module's tests as a worker process shares them between jobs."""
    return PipelineCache(settings_for(models_dir, adapters_dir))


def new_job(svc: Services, **request: Any) -> Job:
    fields = {"prompt": PROMPT, "width": SIZE, "height": SIZE, "steps": 3, "seed": 7, "scheduler": "euler", **request}
    body = AnimationCreate.model_validate(fields)
    now = utcnow()
    job = Job(id=uuid.uuid4().hex, request=body, model="tiny-sd", seed=7, created_at=now, updated_at=now)
    admit_now(svc.store, job)
    return lifecycle.start_rendering(svc, job.id)


def frames(svc: Services, result: RenderResult) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(svc.storage.get_bytes(k)))).astype(int) for k in result.frames[0]]


def rendered(svc: Services, pipes: PipelineCache, **request: Any) -> list[np.ndarray]:
    return frames(svc, render(new_job(svc, **request), svc, pipes))


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.mean(np.abs(a[-1] - b[-1])))


def test_the_tiny_adapters_fit_the_tiny_model(adapters_dir: Path, models_dir: Path) -> None:
    found = adapters.scan(adapters_dir, adapter_shapes.model_shapes(models_dir))
    assert [(a.kind, a.name, a.families, a.models, a.token) for a in found] == [
        ("lora", "other", ["sd"], ["tiny-sd"], None),
        ("lora", "style", ["sd"], ["tiny-sd"], None),
        ("embedding", "mystyle", ["sd"], ["tiny-sd"], "mystyle"),
    ]


def test_a_lora_changes_the_frames_by_its_weight(svc: Services, pipes: PipelineCache) -> None:
    plain = rendered(svc, pipes)
    half = rendered(svc, pipes, loras=[{"name": "style", "weight": 0.5}])
    full_job = new_job(svc, loras=[{"name": "style", "weight": 1.0}])
    full = frames(svc, render(full_job, svc, pipes))
    zero = rendered(svc, pipes, loras=[{"name": "style", "weight": 0.0}])
    assert 0 < distance(plain, half) < distance(plain, full)
    assert same(plain, zero)  # weight 0: the LoRA adds nothing
    manifest = json.loads(svc.storage.get_bytes(manifest_key(full_job.id)))
    [used] = manifest["loras"]
    assert (used["name"], used["weight"], len(used["sha256"])) == ("style", 1.0, 64)
    assert manifest["embeddings"] == []


def test_an_embedding_changes_the_frames_of_its_token(svc: Services, pipes: PipelineCache) -> None:
    job = new_job(svc, embeddings=["mystyle"])
    with_token = frames(svc, render(job, svc, pipes))
    assert not same(with_token, rendered(svc, pipes))
    manifest = json.loads(svc.storage.get_bytes(manifest_key(job.id)))
    assert [(e["name"], e["token"], e["vectors"]) for e in manifest["embeddings"]] == [("mystyle", "mystyle", 2)]


def test_a_jobs_adapters_never_reach_the_next_job(
    svc: Services, pipes: PipelineCache, models_dir: Path, adapters_dir: Path
) -> None:
    """Job A with a LoRA and an embedding, then job B with neither on the same worker: B's frames are
    those of a fresh worker, although B's prompt holds the embedding's token."""
    base = pipes.get("tiny-sd")
    tokens = len(base.tokenizer)
    embedding_module = base.text_encoder.get_input_embeddings()
    with_adapters = rendered(svc, pipes, loras=[{"name": "style", "weight": 0.8}], embeddings=["mystyle"])
    after = rendered(svc, pipes)
    fresh = rendered(svc, PipelineCache(settings_for(models_dir, adapters_dir)))
    assert same(after, fresh)
    assert not same(with_adapters, fresh)
    # The LoRA stays loaded for the next job that asks for it, disabled; the embedding is gone.
    assert pipes.get("tiny-sd") is base
    assert adapter_name("style") in base.get_list_adapters()["unet"]
    assert not lora_enabled(base)
    assert len(base.tokenizer) == tokens and "mystyle" not in base.tokenizer.get_vocab()
    assert base.text_encoder.get_input_embeddings() is embedding_module
    assert base.text_encoder.config.vocab_size == tokens


def test_loras_stay_loaded_in_a_bounded_cache(svc: Services, models_dir: Path, adapters_dir: Path) -> None:
    pipes = PipelineCache(settings_for(models_dir, adapters_dir, lora_cache_size=1))
    first = rendered(svc, pipes, loras=[{"name": "style"}])
    cache = pipes.loras(pipes.get("tiny-sd"))
    assert (cache.loads, cache.names()) == (1, ["style"])
    assert same(rendered(svc, pipes, loras=[{"name": "style"}]), first)
    assert cache.loads == 1  # used again, not loaded again
    rendered(svc, pipes, loras=[{"name": "other"}])
    assert (cache.loads, cache.names()) == (2, ["other"])
    assert pipes.get("tiny-sd").get_list_adapters()["unet"] == [adapter_name("other")]
    both = rendered(svc, pipes, loras=[{"name": "style"}, {"name": "other", "weight": 0.5}])
    assert cache.names() == ["style", "other"]  # a job's own LoRAs stay, over the bound, until another is loaded
    assert not same(both, first)


def test_a_pipeline_whose_adapters_cannot_be_taken_off_is_dropped(
    svc: Services, models_dir: Path, adapters_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipes = PipelineCache(settings_for(models_dir, adapters_dir))
    base = pipes.get("tiny-sd")

    def fails(pipe: Any, entry: Any) -> None:
        raise RuntimeError("cannot unload")

    monkeypatch.setattr(worker.adapters, "_unload_embedding", fails)
    rendered(svc, pipes, embeddings=["mystyle"])  # the job itself is done
    monkeypatch.undo()
    assert pipes.get("tiny-sd") is not base  # loaded afresh: the token stayed in the dropped one
    assert "mystyle" in base.tokenizer.get_vocab()
    fresh = PipelineCache(settings_for(models_dir, adapters_dir))
    assert same(rendered(svc, pipes), rendered(svc, fresh))


@pytest.fixture
def broken_dir(adapters_dir: Path, tmp_path: Path) -> Path:
    """The adapters folder with broken files beside the good ones."""
    folder = tmp_path / "adapters"
    shutil.copytree(adapters_dir, folder)
    (folder / "loras" / "garbage.safetensors").write_bytes(b"\x00" * 64)
    # A valid safetensors file whose LoRA matrices do not fit together: only loading finds out.
    tensors = load_file(str(folder / "loras" / "style.safetensors"))
    key = next(k for k in tensors if k.endswith("lora_B.weight"))
    tensors[key] = np.zeros((tensors[key].shape[0], 3), dtype=tensors[key].dtype)
    save_file(tensors, str(folder / "loras" / "mismatched.safetensors"))
    save_file({"emb_params": np.ones((1, 48), dtype=np.float32)}, str(folder / "embeddings" / "wide.safetensors"))
    return folder


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"loras": [{"name": "garbage"}]}, "loras.0: garbage.safetensors is not a valid LoRA safetensors file"),
        ({"loras": [{"name": "missing"}]}, "loras.0: no LoRA 'missing' in this worker's adapters folder"),
        ({"loras": [{"name": "style"}, {"name": "mismatched"}]}, "LoRA 'mismatched' could not be loaded"),
        ({"embeddings": ["wide"], "prompt": "a wide cat"}, "embeddings.0: embedding 'wide' does not fit model"),
    ],
)
def test_a_broken_adapter_fails_its_job_and_the_worker_goes_on(
    svc: Services,
    models_dir: Path,
    adapters_dir: Path,
    broken_dir: Path,
    request_fields: dict[str, Any],
    message: str,
) -> None:
    pipes = PipelineCache(settings_for(models_dir, broken_dir))
    svc.settings.adapters_dir = broken_dir
    job = new_job(svc, **request_fields)
    with pytest.raises(AdapterError, match=message) as error:
        render(job, svc, pipes)
    assert error.value.code == "adapter_error"
    assert svc.storage.list_keys(f"jobs/{job.id}/") == []  # refused before any frame
    # The same worker renders the next jobs as a fresh one would.
    fresh = PipelineCache(settings_for(models_dir, adapters_dir))
    assert same(rendered(svc, pipes), rendered(svc, fresh))
    assert same(rendered(svc, pipes, loras=[{"name": "style"}]), rendered(svc, fresh, loras=[{"name": "style"}]))


def test_sdxl_adapters_apply_to_both_text_encoders_and_come_off(
    svc: Services, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SDXL: a LoRA, and an embedding in SDXL's format (clip_l and clip_g, one per text encoder)."""
    root = tmp_path_factory.mktemp("sdxl")
    build_tiny_model(root / "models" / "tiny-sdxl", family="sdxl")
    build_tiny_lora(root / "adapters" / "loras" / "xl.safetensors", family="sdxl")
    build_tiny_embedding(root / "adapters" / "embeddings" / "xlstyle.safetensors", family="sdxl")
    svc.settings.models_dir, svc.settings.adapters_dir = root / "models", root / "adapters"
    found = adapters.scan(root / "adapters", adapter_shapes.model_shapes(root / "models"))
    assert [(a.name, a.models) for a in found] == [("xl", ["tiny-sdxl"]), ("xlstyle", ["tiny-sdxl"])]

    def run(pipes: PipelineCache, **request: Any) -> list[np.ndarray]:
        job = new_job(svc, prompt="a xlstyle cat", **request)
        job.model = "tiny-sdxl"
        return frames(svc, render(job, svc, pipes))

    pipes = PipelineCache(svc.settings)
    plain = run(PipelineCache(svc.settings))
    assert not same(run(pipes, embeddings=["xlstyle"]), plain)
    assert not same(run(pipes, loras=[{"name": "xl", "weight": 0.7}]), plain)
    assert same(run(pipes), plain)
    base = pipes.get("tiny-sdxl")
    assert "xlstyle" not in base.tokenizer.get_vocab() and "xlstyle" not in base.tokenizer_2.get_vocab()


# The API: GET /capabilities lists what the render workers published; POST refuses the rest (422).


@pytest.fixture
def api(redis_url: str, models_dir: Path, adapters_dir: Path, tmp_path: Path) -> Iterator[tuple[Services, TestClient]]:
    settings = settings_for(
        models_dir,
        adapters_dir,
        redis_url=redis_url,
        storage_backend="local",
        local_storage_dir=tmp_path / "storage",
        allow_anonymous=True,
        default_model="tiny-sd",
        max_loras=2,
    )
    services = Services.from_settings(settings)
    with TestClient(create_app(settings, services=services)) as client:
        yield services, client
    services.store.redis.close()


def publish_worker(svc: Services) -> None:
    """What a render worker publishes when it starts (worker.tasks.publish_models)."""
    settings = svc.settings
    found = adapters.scan(settings.adapters_path, adapter_shapes.model_shapes(settings.models_dir))
    svc.published.set_models("w1", model_catalog.scan(settings.models_dir), ttl=60, adapters=found)


def test_capabilities_list_the_adapters(api: tuple[Services, TestClient], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capabilities_route, "CACHE_SECONDS", 0)  # read what the workers publish at once
    svc, client = api
    publish_encoder(svc)
    assert client.get("/capabilities").json()["adapters"] == []
    publish_worker(svc)
    listed = client.get("/capabilities").json()["adapters"]
    assert [(a["kind"], a["name"], a["families"], a["models"]) for a in listed] == [
        ("lora", "other", ["sd"], ["tiny-sd"]),
        ("lora", "style", ["sd"], ["tiny-sd"]),
        ("embedding", "mystyle", ["sd"], ["tiny-sd"]),
    ]
    assert listed[2]["token"] == "mystyle" and listed[2]["vectors"] == 2
    svc.published.withdraw_models("w1")
    assert client.get("/capabilities").json()["adapters"] == []


def test_adapters_are_refused_before_anything_is_stored(
    api: tuple[Services, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capabilities_route, "CACHE_SECONDS", 0)  # read what the workers publish at once
    svc, client = api
    base = {"prompt": PROMPT, "steps": 3, "width": SIZE, "height": SIZE}
    unpublished = client.post("/animations", json={**base, "loras": [{"name": "style"}]})
    assert unpublished.status_code == 422  # no render worker has published it (yet)
    publish_worker(svc)
    svc.published.set_models(
        "w2",
        [model_catalog.ModelInfo(name="tiny-xl")],
        ttl=60,
        adapters=[adapters.AdapterInfo(name="xl", kind="lora", families=["sdxl"], models=["tiny-xl"])],
    )
    before = sorted(svc.store.redis.keys("stepanim:job*"))
    cases: list[tuple[dict[str, Any], str, list[dict[str, str]]]] = [
        (
            {"loras": [{"name": "nope"}, {"name": "xl"}]},
            "invalid_request",
            [
                {
                    "field": "loras.0.name",
                    "message": "no LoRA 'nope' on this server (GET /capabilities lists the adapters)",
                },
                {"field": "loras.1.name", "message": "LoRA 'xl' does not fit model 'tiny-sd' (it fits: tiny-xl)"},
            ],
        ),
        ({"embeddings": ["unknown"], "prompt": "an unknown cat"}, "invalid_request", [{"field": "embeddings.0"}]),
        ({"loras": [{"name": "style"}], "model": "org/hub-model"}, "invalid_request", [{"field": "model"}]),
        ({"embeddings": ["mystyle"], "prompt": "a cat"}, "invalid_request", [{"field": "embeddings"}]),
        ({"loras": [{"name": "style"}, {"name": "other"}, {"name": "xl"}]}, "limit_exceeded", [{"field": "loras"}]),
    ]
    for extra, code, details in cases:
        response = client.post("/animations", json={**base, **extra})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == code, error
        for expected, actual in zip(details, error["details"], strict=True):
            assert expected.items() <= actual.items(), (expected, actual)
        if code == "invalid_request" and details and "message" in details[0]:
            assert error["message"] == "; ".join(f"{d['field']}: {d['message']}" for d in details)
    assert sorted(svc.store.redis.keys("stepanim:job*")) == before
    accepted = client.post(
        "/animations", json={**base, "loras": [{"name": "style", "weight": 0.8}], "embeddings": ["mystyle"]}
    )
    assert accepted.status_code == 202, accepted.text
    request = accepted.json()["request"]
    assert request["loras"] == [{"name": "style", "weight": 0.8}] and request["embeddings"] == ["mystyle"]

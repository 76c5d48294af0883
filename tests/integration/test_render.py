"""render() in this process against a real redis-server, real storage and the tiny pipeline:
frames, batches and seeds, img2img, decoders and frame sizes, progress, cancel, clear errors."""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from stepanim import lifecycle
from stepanim.admission import admit_now
from stepanim.events import ProgressEvent
from stepanim.failures import DecoderUnavailable, InvalidInput, ModelError
from stepanim.jobs import Job, JobStatus, utcnow
from stepanim.naming import manifest_key, upload_key
from stepanim.request import AnimationCreate
from stepanim.services import Services
from stepanim.settings import Settings
from stepanim.store import JobStore
from tests.integration.render_support import cancel_at_step, capturing, local_services
from worker.pipelines import PipelineCache, pipeline_for
from worker.render import RenderCanceled, render
from worker.tiny_model import build_tiny_taesd

SIZE = 64


@pytest.fixture(scope="module")
def taesd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_taesd(tmp_path_factory.mktemp("taesd") / "taesd")


@pytest.fixture
def svc(redis_url: str, models_dir: Path, taesd_dir: Path, tmp_path: Path) -> Iterator[Services]:
    with local_services(redis_url, tmp_path, models_dir, taesd_path=taesd_dir) as services:
        yield services


@pytest.fixture(scope="module")
def pipes(models_dir: Path, taesd_dir: Path) -> PipelineCache:
    # Shared by the module's tests (a worker process keeps one); only model-independent settings differ.
    return PipelineCache(Settings(_env_file=None, models_dir=models_dir, device="cpu", taesd_path=taesd_dir))


def new_job(svc: Services, **request: Any) -> Job:
    body = AnimationCreate.model_validate({"prompt": "a red cat", "width": SIZE, "height": SIZE, **request})
    now = utcnow()
    job = Job(
        id=uuid.uuid4().hex,
        request=body,
        model=body.model or "tiny-sd",
        seed=body.seed if body.seed is not None else 1,
        created_at=now,
        updated_at=now,
    )
    admit_now(svc.store, job)
    return lifecycle.start_rendering(svc, job.id)


def png_bytes(size: tuple[int, int] = (80, 48), seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def frame_images(svc: Services, keys: list[str]) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(svc.storage.get_bytes(k)))) for k in keys]


def test_txt2img_writes_one_frame_per_step_and_a_manifest(svc: Services, pipes: PipelineCache) -> None:
    job = new_job(svc, steps=4, seed=11, scheduler="heun")
    result = render(job, svc, pipes)
    assert result.steps_run == result.total == 4
    names = [k.rsplit("/", 1)[1] for k in result.frames[0]]
    assert names == [f"0000{s:03d}-11-a red cat.png" for s in range(1, 5)]
    assert all(image.shape == (SIZE, SIZE, 3) for image in frame_images(svc, result.frames[0]))
    manifest = json.loads(svc.storage.get_bytes(manifest_key(job.id)))
    assert manifest["complete"] is True
    assert manifest["images"] == [{"batch_index": 0, "seed": 11, "frames": result.frames[0]}]
    progress = svc.store.get(job.id).progress
    assert (progress.step, progress.total, progress.latest_frames) == (4, 4, [result.frames[0][-1]])
    assert progress.elapsed_seconds is not None and progress.elapsed_seconds > 0
    assert progress.eta_seconds == 0


def test_progress_follows_the_steps_to_the_end(svc: Services, pipes: PipelineCache) -> None:
    """One record per written batch of steps: every step while the writer keeps up, never backwards."""
    job = new_job(svc, steps=5, seed=3)
    render(job, svc, pipes)
    steps = [e.step for _, e in svc.store.events(job.id) if isinstance(e, ProgressEvent)]
    assert steps == sorted(set(steps))
    assert steps[0] >= 1 and steps[-1] == 5


def test_batch_gives_one_animation_per_image_each_with_its_own_seed(svc: Services, pipes: PipelineCache) -> None:
    job = new_job(svc, steps=3, seed=40, batch_size=2, scheduler="euler_a", capture={"decoder": "approx"})
    result = render(job, svc, pipes)
    assert result.seeds == [40, 41]
    assert [len(f) for f in result.frames] == [3, 3]
    assert result.frames[1][0].rsplit("/", 1)[1] == "0001001-41-a red cat.png"
    manifest = json.loads(svc.storage.get_bytes(manifest_key(job.id)))
    assert [(a["batch_index"], a["seed"]) for a in manifest["images"]] == [(0, 40), (1, 41)]
    assert [i.seed for i in result.images()] == [40, 41]
    first, second = frame_images(svc, [result.frames[0][-1], result.frames[1][-1]])
    assert not np.array_equal(first, second)

    # Image 1 of the batch is the image a single render with seed 41 makes: its seed is real.
    alone = render(new_job(svc, steps=3, seed=41, scheduler="euler_a", capture={"decoder": "approx"}), svc, pipes)
    for batch_frame, single_frame in zip(
        frame_images(svc, result.frames[1]), frame_images(svc, alone.frames[0]), strict=True
    ):
        assert np.abs(batch_frame.astype(int) - single_frame.astype(int)).max() <= 2


@pytest.mark.parametrize(
    ("decoder", "resolution", "side"),
    [
        ("approx", "quarter", SIZE // 4),
        ("approx", "full", SIZE),
        ("full", "quarter", SIZE // 4),
        ("full", "full", SIZE),
        ("taesd", "full", SIZE),
        ("taesd", "quarter", SIZE // 4),
    ],
)
def test_decoders_make_frames_of_the_requested_size(
    svc: Services, pipes: PipelineCache, decoder: str, resolution: str, side: int
) -> None:
    job = new_job(svc, steps=2, width=SIZE, height=SIZE * 2, capture={"decoder": decoder, "resolution": resolution})
    result = render(job, svc, pipes)
    for image in frame_images(svc, result.frames[0]):
        assert image.shape == (side * 2, side, 3)


def test_noisy_source_differs_from_denoised(svc: Services, pipes: PipelineCache) -> None:
    denoised = render(new_job(svc, steps=3, seed=5, scheduler="euler"), svc, pipes)
    noisy = render(new_job(svc, steps=3, seed=5, scheduler="euler", capture={"source": "noisy"}), svc, pipes)
    a, b = frame_images(svc, [denoised.frames[0][0], noisy.frames[0][0]])
    assert not np.array_equal(a, b)


def test_taesd_missing_is_a_clear_error_before_any_frame(svc: Services, models_dir: Path, tmp_path: Path) -> None:
    pipes = PipelineCache(Settings(_env_file=None, models_dir=models_dir, device="cpu", taesd_path=tmp_path / "none"))
    job = new_job(svc, steps=2, capture={"decoder": "taesd"})
    with pytest.raises(DecoderUnavailable, match=r"decoder 'taesd' is not available.*madebyollin/taesd"):
        render(job, svc, pipes)
    assert svc.storage.list_keys(f"jobs/{job.id}/") == []


@pytest.mark.parametrize("form", ["upload", "base64"])
def test_img2img_runs_steps_times_strength_from_the_init_image(svc: Services, pipes: PipelineCache, form: str) -> None:
    data = png_bytes()
    if form == "upload":
        upload_id = uuid.uuid4().hex
        svc.storage.put_bytes(upload_key(upload_id), data, "image/png")
        init: dict[str, str] = {"upload_id": upload_id}
    else:
        init = {"data": "data:image/png;base64," + base64.b64encode(data).decode()}
    job = new_job(svc, steps=10, strength=0.5, init_image=init, batch_size=2, capture={"decoder": "approx"})
    result = render(job, svc, pipes)
    assert result.total == result.steps_run == 5
    assert [len(f) for f in result.frames] == [5, 5]
    assert svc.store.get(job.id).progress.total == 5


def test_img2img_first_frames_start_from_the_init_image(models_dir: Path) -> None:
    """The first denoised frame of a light img2img is near the init image's latents; txt2img's is not."""
    cache = PipelineCache(Settings(_env_file=None, models_dir=models_dir, device="cpu"))
    base = cache.get("tiny-sd")
    image = Image.open(io.BytesIO(png_bytes((SIZE, SIZE), seed=3))).convert("RGB")
    target = base.vae.encode(base.image_processor.preprocess(image)).latent_dist.mean * base.vae.config.scaling_factor

    def first_frame(img2img: bool) -> torch.Tensor:
        scheduler = type(base.scheduler).from_config(base.scheduler.config)
        pipe = pipeline_for(base, scheduler=scheduler, img2img=img2img)
        frames, on_step_end = capturing(scheduler)

        extra: dict[str, Any] = {"image": image, "strength": 0.3} if img2img else {"width": SIZE, "height": SIZE}
        pipe(
            "a cat",
            num_inference_steps=10,
            output_type="latent",
            callback_on_step_end=on_step_end,
            generator=torch.Generator().manual_seed(0),
            **extra,
        )
        return frames[0]

    from_image = (first_frame(True) - target).abs().mean()
    from_noise = (first_frame(False) - target).abs().mean()
    assert from_image < from_noise / 2


def test_missing_upload_fails_clearly(svc: Services, pipes: PipelineCache) -> None:
    job = new_job(svc, steps=2, init_image={"upload_id": "f" * 32})
    with pytest.raises(InvalidInput, match="no upload with id"):
        render(job, svc, pipes)


def test_unknown_model_is_a_model_error(svc: Services, pipes: PipelineCache) -> None:
    job = new_job(svc, steps=2, model="no-such-model")
    with pytest.raises(ModelError, match="no-such-model"):
        render(job, svc, pipes)


def test_cancel_at_step_k_stops_within_one_step(
    svc: Services, pipes: PipelineCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel requested (as the API does: Redis flag and channel) while step k samples stops the render
    after step k: the watcher thread hears it on the channel, the sampling loop reads no Redis per step."""
    k = 8
    job = new_job(svc, steps=20, seed=9)
    cancel_at_step(monkeypatch, svc, job.id, k)
    reads: list[str] = []  # every read of a cancel flag, by job id
    real_cancel_requested = JobStore.cancel_requested

    def cancel_requested(self: JobStore, job_id: str) -> bool:
        reads.append(job_id)
        return real_cancel_requested(self, job_id)

    monkeypatch.setattr(JobStore, "cancel_requested", cancel_requested)
    with pytest.raises(RenderCanceled):
        render(job, svc, pipes)
    # The watcher reads the flag as it subscribes and about once a second after; once per step would be k more.
    assert reads.count(job.id) < k, reads.count(job.id)
    frames = svc.storage.list_keys(f"jobs/{job.id}/frames/")
    assert len(frames) == k
    manifest = json.loads(svc.storage.get_bytes(manifest_key(job.id)))
    assert manifest["complete"] is False
    assert manifest["steps_run"] == k
    assert svc.store.get(job.id).status == JobStatus.rendering  # the task, not render(), marks it canceled

"""render() with the flow-matching families (SD3, Flux) and every family's frame options, against a real
redis-server, local storage and tiny random-weight models saved and loaded like real ones: decoders
(approx, TAESD3/TAEF1, the full VAE) and frame sizes, img2img at a non-square size, batches, cancel,
reproducible SDE samplers, and the refusals that come before any frame."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from stepanim import lifecycle
from stepanim.failures import DecoderUnavailable, InvalidInput
from stepanim.families import FACTS, Family
from stepanim.jobs import Job
from stepanim.naming import manifest_key, upload_key
from stepanim.request import AnimationCreate, CaptureOptions
from stepanim.services import Services
from stepanim.settings import Settings
from tests.integration.job_support import admitted_job
from tests.integration.render_support import cancel_at_step, family_services, record_results  # noqa: F401 (svc)
from worker.capture import latent_family
from worker.pipelines import PipelineCache, pipeline_for
from worker.render import RenderCanceled, make_decoder, render
from worker.schedulers import make_scheduler
from worker.tiny_model import build_tiny_taesd

PROMPT = "a red cat"
MODELS: dict[Family, str] = {"sd": "tiny-sd", "sdxl": "tiny-sdxl", "sd3": "tiny-sd3", "flux": "tiny-flux"}
TAESD_SETTINGS = {"sd": "taesd_path", "sdxl": "taesdxl_path", "sd3": "taesd3_path", "flux": "taef1_path"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def taesd_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[Family, Path]:
    root = tmp_path_factory.mktemp("taesd")
    return {family: build_tiny_taesd(root / TAESD_SETTINGS[family], family=family) for family in MODELS}


@pytest.fixture(scope="module")
def pipes(family_models_dir: Path, taesd_dirs: dict[Family, Path]) -> PipelineCache:
    settings = Settings(
        _env_file=None,
        models_dir=family_models_dir,
        device="cpu",
        pipeline_cache_size=5,
        taesd_path=taesd_dirs["sd"],
        taesdxl_path=taesd_dirs["sdxl"],
        taesd3_path=taesd_dirs["sd3"],
        taef1_path=taesd_dirs["flux"],
    )
    return PipelineCache(settings)


def new_job(svc: Services, model: str, **request: Any) -> Job:
    body = AnimationCreate.model_validate(
        {"prompt": PROMPT, "model": model, "width": 64, "height": 64, "scheduler": "euler", **request}
    )
    job = admitted_job(svc, body, model=model, seed=body.seed if body.seed is not None else 1)
    return lifecycle.start_rendering(svc, job.id)


def images(svc: Services, keys: list[str]) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(svc.storage.get_bytes(k)))) for k in keys]


def upload_png(svc: Services, width: int, height: int) -> str:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = (230, 40, 40)
    pixels[:, width // 2 :] = (30, 60, 220)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    upload_id = uuid.uuid4().hex
    svc.storage.put_bytes(upload_key(upload_id), buffer.getvalue(), "image/png")
    return upload_id


@pytest.mark.parametrize("family", list(MODELS))
@pytest.mark.parametrize("decoder", ["approx", "taesd", "full"])
def test_every_decoder_ends_on_the_decoded_result(
    svc: Services, pipes: PipelineCache, monkeypatch: pytest.MonkeyPatch, family: Family, decoder: str
) -> None:
    """The last frame is the pipeline's own final latents decoded by the same decoder, for every family
    (Flux's latents unpacked first); the frames have the requested size."""
    base = pipes.get(MODELS[family])
    results = record_results(monkeypatch, type(base))
    capture = {"decoder": decoder, "resolution": "full"}
    job = new_job(svc, MODELS[family], steps=3, seed=4, width=64, height=96, scheduler="euler", capture=capture)
    result = render(job, svc, pipes)
    frames = images(svc, result.frames[0])
    assert len(frames) == 3 and all(f.shape == (96, 64, 3) for f in frames)
    (latents,) = results
    decode = make_decoder(pipes, base, CaptureOptions.model_validate(capture), width=64, height=96)
    expected = decode(latents)[0]
    # The frame thread decodes several steps in one batch; a VAE's convolutions round a little
    # differently by batch size.
    tolerance = 0 if decoder == "approx" else 2
    assert np.abs(frames[-1].astype(int) - expected.astype(int)).max() <= tolerance


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_quarter_and_upscaled_frames(svc: Services, pipes: PipelineCache, family: Family) -> None:
    for decoder in ("approx", "taesd", "full"):
        for capture, shape in (
            ({"resolution": "quarter"}, (16, 32, 3)),
            ({"resolution": "quarter", "upscale": 2}, (32, 64, 3)),
        ):
            job = new_job(svc, MODELS[family], steps=2, width=128, height=64, capture={"decoder": decoder, **capture})
            result = render(job, svc, pipes)
            assert [f.shape for f in images(svc, result.frames[0])] == [shape, shape], (decoder, capture)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_noisy_frames_differ_from_denoised_and_end_on_the_result(
    svc: Services, pipes: PipelineCache, family: Family
) -> None:
    denoised = render(new_job(svc, MODELS[family], steps=4, seed=5, capture={"decoder": "approx"}), svc, pipes)
    noisy = render(
        new_job(svc, MODELS[family], steps=4, seed=5, capture={"decoder": "approx", "source": "noisy"}), svc, pipes
    )
    a, b = images(svc, denoised.frames[0]), images(svc, noisy.frames[0])
    assert not np.array_equal(a[0], b[0])
    assert np.array_equal(a[-1], b[-1])  # the last frame is the result in both modes


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_img2img_at_a_non_square_size(
    svc: Services, pipes: PipelineCache, monkeypatch: pytest.MonkeyPatch, family: Family
) -> None:
    base = pipes.get(MODELS[family])
    img2img_class = type(pipeline_for(base, scheduler=base.scheduler, img2img=True))
    assert img2img_class.__name__ == {"sd3": "StableDiffusion3Img2ImgPipeline", "flux": "FluxImg2ImgPipeline"}[family]
    results = record_results(monkeypatch, img2img_class)
    upload_id = upload_png(svc, 96, 64)
    capture = {"decoder": "approx"}
    job = new_job(
        svc,
        MODELS[family],
        steps=10,
        strength=0.5,
        width=96,
        height=64,
        seed=3,
        init_image={"upload_id": upload_id},
        capture=capture,
    )
    result = render(job, svc, pipes)
    assert result.steps_run == result.total == 5
    frames = images(svc, result.frames[0])
    assert [f.shape for f in frames] == [(64, 96, 3)] * 5
    (latents,) = results
    if family == "flux":
        assert latents.shape == (1, (64 // 16) * (96 // 16), 64)  # packed 2x2 tokens of 16 channels
    else:
        assert latents.shape == (1, 16, 64 // 8, 96 // 8)
    expected = make_decoder(pipes, base, CaptureOptions.model_validate(capture), width=96, height=64)(latents)[0]
    assert np.array_equal(frames[-1], expected)
    txt2img = render(new_job(svc, MODELS[family], steps=5, width=96, height=64, seed=3, capture=capture), svc, pipes)
    assert not np.array_equal(frames[0], images(svc, txt2img.frames[0])[0])


@pytest.mark.parametrize("family", list(MODELS))
def test_a_batch_of_two_gives_each_image_its_own_seed(svc: Services, pipes: PipelineCache, family: Family) -> None:
    capture = {"decoder": "approx", "resolution": "quarter"}
    batch = render(new_job(svc, MODELS[family], steps=3, seed=40, batch_size=2, capture=capture), svc, pipes)
    assert batch.seeds == [40, 41]
    assert [len(f) for f in batch.frames] == [3, 3]
    assert batch.frames[1][0].rsplit("/", 1)[1] == f"0001001-41-{PROMPT}.png"
    first, second = images(svc, batch.frames[0]), images(svc, batch.frames[1])
    assert not np.array_equal(first[-1], second[-1])
    alone = render(new_job(svc, MODELS[family], steps=3, seed=41, capture=capture), svc, pipes)
    for in_batch, single in zip(second, images(svc, alone.frames[0]), strict=True):
        assert np.abs(in_batch.astype(int) - single.astype(int)).max() <= 2  # image 1 is seed 41's image


@pytest.mark.parametrize(
    ("model", "sampler"),
    [
        ("tiny-sd", "dpmpp_sde"),
        ("tiny-sdxl", "dpmpp_2m_sde"),
        ("tiny-sd3", "dpmpp_2m_sde"),
        ("tiny-flux", "dpmpp_2m_sde"),
    ],
)
def test_sde_batches_give_each_image_its_own_seed(
    svc: Services, pipes: PipelineCache, model: str, sampler: str
) -> None:
    """Image 1 of a batch is the image a single render with its seed makes, also when the sampler draws
    noise at every step (DPM++ SDE: a Brownian tree per image; the others: the per-image generators)."""
    capture = {"decoder": "approx", "resolution": "quarter"}
    batch = render(new_job(svc, model, steps=3, seed=40, batch_size=2, scheduler=sampler, capture=capture), svc, pipes)
    alone = render(new_job(svc, model, steps=3, seed=41, scheduler=sampler, capture=capture), svc, pipes)
    for in_batch, single in zip(images(svc, batch.frames[1]), images(svc, alone.frames[0]), strict=True):
        assert np.abs(in_batch.astype(int) - single.astype(int)).max() <= 2


@pytest.mark.parametrize(
    ("model", "sampler"), [("tiny-sd", "dpmpp_sde"), ("tiny-sd3", "dpmpp_2m_sde"), ("tiny-flux", "dpmpp_2m_sde")]
)
def test_sde_samplers_give_the_same_frames_for_the_same_request(
    svc: Services, pipes: PipelineCache, model: str, sampler: str
) -> None:
    def frames(seed: int) -> list[bytes]:
        job = new_job(svc, model, steps=4, seed=seed, scheduler=sampler, capture={"decoder": "approx"})
        return [svc.storage.get_bytes(key) for key in render(job, svc, pipes).frames[0]]

    torch.manual_seed(1)  # the global generator must not matter ...
    first = frames(8)
    torch.manual_seed(2)
    assert frames(8) == first
    assert frames(9)[-1] != first[-1]  # ... the job's seed does


@pytest.mark.parametrize(("model", "sampler"), [("tiny-sd3", "euler"), ("tiny-flux", "dpmpp_2m_sde")])
def test_render_gives_the_latents_of_a_plain_run(
    svc: Services, pipes: PipelineCache, monkeypatch: pytest.MonkeyPatch, model: str, sampler: str
) -> None:
    """The pipeline call inside render (capture installed, callback on) computes what a plain call does."""
    base = pipes.get(model)
    family = latent_family(base)
    results = record_results(monkeypatch, type(base))
    render(new_job(svc, model, steps=4, seed=6, scheduler=sampler), svc, pipes)
    generators = [torch.Generator().manual_seed(6)]
    scheduler = make_scheduler(base, sampler, family=family, seed=6, generators=generators)
    extra = {"negative_prompt": None} if FACTS[family].negative_prompt else {}
    pipeline_for(base, scheduler=scheduler, img2img=False)(
        prompt=PROMPT,
        num_inference_steps=4,
        guidance_scale=7.5,
        generator=generators,
        width=64,
        height=64,
        output_type="latent",
        **extra,
    )
    rendered, plain = results
    assert torch.equal(rendered, plain)


def test_flux_ignores_the_negative_prompt(svc: Services, pipes: PipelineCache) -> None:
    """FLUX.1 has no negative prompt: render does not pass one (FluxPipeline uses one only for "true CFG")."""
    capture = {"decoder": "approx"}
    plain = render(new_job(svc, "tiny-flux", steps=2, seed=2, capture=capture), svc, pipes)
    negative = render(new_job(svc, "tiny-flux", steps=2, seed=2, negative_prompt="blurry", capture=capture), svc, pipes)
    assert images(svc, plain.frames[0])[-1].tobytes() == images(svc, negative.frames[0])[-1].tobytes()


def test_cancel_stops_a_flux_render_within_one_step(
    svc: Services, pipes: PipelineCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As tests/integration/test_render.py's SD test: a cancel heard while step k samples stops after step k."""
    k = 3
    job = new_job(svc, "tiny-flux", steps=20, seed=9, capture={"decoder": "approx"})
    cancel_at_step(monkeypatch, svc, job.id, k)
    with pytest.raises(RenderCanceled):
        render(job, svc, pipes)
    assert len(svc.storage.list_keys(f"jobs/{job.id}/frames/")) == k
    manifest = json.loads(svc.storage.get_bytes(manifest_key(job.id)))
    assert (manifest["complete"], manifest["steps_run"]) == (False, k)


@pytest.mark.parametrize(
    ("model", "request_fields", "message"),
    [
        ("tiny-sd3", {"width": 72}, r"width: Stable Diffusion 3/3.5 models need multiples of 16 \(got 72\)"),
        ("tiny-flux", {"height": 40}, r"height: FLUX.1 models need multiples of 16"),
        ("tiny-flux", {"scheduler": "ddim"}, r"scheduler: 'ddim' does not fit flux models \(fits: euler, "),
        ("tiny-flux", {"scheduler": "heun"}, r"scheduler: 'heun' does not fit flux models"),
        ("tiny-sd3", {"scheduler": "euler", "schedule": "sgm_uniform"}, r"schedule: 'sgm_uniform' does not apply"),
        ("tiny-flux-schnell", {"scheduler": "dpmpp_2m"}, r"scheduler: 'dpmpp_2m' does not fit .*dynamic shifting"),
        ("tiny-sd", {"scheduler": "lcm", "steps": 60}, r"steps: 'lcm' takes at most 50 steps"),
    ],
)
def test_what_does_not_fit_the_family_is_refused_before_any_frame(
    svc: Services, pipes: PipelineCache, model: str, request_fields: dict[str, Any], message: str
) -> None:
    job = new_job(svc, model, **{"steps": 2, **request_fields})
    with pytest.raises(InvalidInput, match=message):
        render(job, svc, pipes)
    assert svc.storage.list_keys(f"jobs/{job.id}/") == []


def test_img2img_with_a_text_to_image_only_sampler_is_refused(svc: Services, pipes: PipelineCache) -> None:
    job = new_job(svc, "tiny-sd3", steps=4, scheduler="dpmpp_2m", init_image={"upload_id": upload_png(svc, 64, 64)})
    with pytest.raises(InvalidInput, match=r"scheduler: 'dpmpp_2m' does not fit sd3 image-to-image"):
        render(job, svc, pipes)


@pytest.mark.parametrize(("family", "weights"), [("sd3", "madebyollin/taesd3"), ("flux", "madebyollin/taef1")])
def test_missing_tiny_decoder_is_a_clear_error(
    svc: Services, family_models_dir: Path, tmp_path: Path, family: Family, weights: str
) -> None:
    pipes = PipelineCache(Settings(_env_file=None, models_dir=family_models_dir, device="cpu"))
    job = new_job(svc, MODELS[family], steps=2, capture={"decoder": "taesd"})
    with pytest.raises(DecoderUnavailable, match=rf"decoder 'taesd' is not available.*{weights}"):
        render(job, svc, pipes)
    assert svc.storage.list_keys(f"jobs/{job.id}/") == []

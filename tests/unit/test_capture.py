"""Per-step capture on the tiny random-weight pipeline: one frame per step for every scheduler."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from PIL import Image

from worker.capture import (
    LATENT_RGB,
    CaptureMode,
    LatentFamily,
    StepCapture,
    decode_approx,
    decode_full,
    latent_family,
    unpack_for_decoding,
)
from worker.tiny_model import build_tiny_model

STEPS = 5
SIZE = 64
PROMPT = "a photo of a cat"
pytestmark = pytest.mark.usefixtures("one_torch_thread")
needs_scipy = pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="LMSDiscreteScheduler needs scipy")

SCHEDULERS = [
    pytest.param("EulerDiscreteScheduler", {}, id="euler"),
    pytest.param("EulerAncestralDiscreteScheduler", {}, id="euler-a"),
    pytest.param("DDIMScheduler", {}, id="ddim"),
    pytest.param("PNDMScheduler", {"skip_prk_steps": True}, id="pndm"),
    pytest.param("LMSDiscreteScheduler", {}, id="lms", marks=needs_scipy),
    pytest.param("HeunDiscreteScheduler", {}, id="heun"),
    pytest.param("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}, id="dpm++"),
    pytest.param("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, id="sde-dpm++"),
    pytest.param("UniPCMultistepScheduler", {}, id="unipc"),
]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("capture") / "tiny-sd")


@pytest.fixture(scope="module")
def base(model_path: Path) -> Any:
    return StableDiffusionPipeline.from_pretrained(model_path)


def make_pipe(base: Any, name: str, overrides: dict[str, Any], cls: Any = StableDiffusionPipeline) -> Any:
    scheduler = getattr(diffusers, name).from_config(base.scheduler.config, **overrides)
    pipe = cls(**{**base.components, "scheduler": scheduler}, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def final_latents(pipe: Any, **kwargs: Any) -> torch.Tensor:
    """The pipeline's final latents for PROMPT, STEPS, SIZE and seed 0."""
    return pipe(  # type: ignore[no-any-return]
        PROMPT,
        num_inference_steps=STEPS,
        height=SIZE,
        width=SIZE,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    ).images


def run(pipe: Any, mode: CaptureMode = "denoised", **kwargs: Any) -> tuple[list[torch.Tensor], int, torch.Tensor]:
    """Run with capture installed: (frames, callback calls, final latents)."""
    capture = StepCapture(pipe.scheduler, mode=mode).install()
    frames: list[torch.Tensor] = []
    calls = 0

    def on_step_end(_pipe: Any, _i: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        latents = capture.pop()
        if latents is not None:
            frames.append(latents)
        return tensors

    latents = final_latents(
        pipe, callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"], **kwargs
    )
    return frames, calls, latents


@pytest.mark.parametrize(("name", "overrides"), SCHEDULERS)
def test_one_frame_per_step(base: Any, name: str, overrides: dict[str, Any]) -> None:
    frames, calls, latents = run(make_pipe(base, name, overrides))
    assert len(frames) == STEPS
    assert calls >= STEPS  # Heun and PNDM call the model (and the callback) more often
    for frame in frames:
        assert frame.shape == latents.shape == (1, 4, SIZE // 8, SIZE // 8)
        assert not frame.requires_grad
        assert torch.isfinite(frame).all()


@pytest.mark.parametrize(("name", "overrides"), SCHEDULERS)
def test_img2img_one_frame_per_step_run(base: Any, name: str, overrides: dict[str, Any]) -> None:
    pipe = make_pipe(base, name, overrides, cls=StableDiffusionImg2ImgPipeline)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    frames, _, _ = run(pipe, image=image, strength=0.6)
    assert len(frames) == int(STEPS * 0.6)


@pytest.mark.parametrize(
    ("name", "overrides", "atol"),
    [
        ("EulerDiscreteScheduler", {}, 1e-5),  # the last Euler step lands exactly on x0
        ("HeunDiscreteScheduler", {}, 1e-5),
        ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}, 1e-5),
        ("DDIMScheduler", {"set_alpha_to_one": True}, 1e-5),
        ("DDIMScheduler", {}, 0.1),  # the last step stops at alphas_cumprod[0], not at 1
        ("PNDMScheduler", {}, 0.1),
    ],
)
def test_last_denoised_frame_is_the_result(base: Any, name: str, overrides: dict[str, Any], atol: float) -> None:
    frames, _, latents = run(make_pipe(base, name, overrides))
    torch.testing.assert_close(frames[-1], latents, rtol=0, atol=atol)


@pytest.mark.parametrize(("name", "overrides"), [p for p in SCHEDULERS if p.id in {"ddim", "pndm", "heun"}])
@pytest.mark.parametrize("mode", ["denoised", "noisy"])
def test_last_frame_is_exactly_the_result_in_both_modes(
    base: Any, name: str, overrides: dict[str, Any], mode: CaptureMode
) -> None:
    """Where the last x0 prediction is not the result (DDIM stops at alphas_cumprod[0], PNDM, a noisy
    sample...), the last step's frame is still the final latents: the step's prev_sample."""
    frames, _, latents = run(make_pipe(base, name, overrides), mode=mode)
    assert len(frames) == STEPS
    assert torch.equal(frames[-1], latents)


@pytest.mark.parametrize(("name", "overrides"), [p for p in SCHEDULERS if p.id in {"euler", "pndm", "heun", "dpm++"}])
def test_noisy_mode_one_frame_per_step(base: Any, name: str, overrides: dict[str, Any]) -> None:
    frames, _, latents = run(make_pipe(base, name, overrides), mode="noisy")
    assert len(frames) == STEPS
    if name == "EulerDiscreteScheduler":  # sigma reaches 0: the last noisy sample is the result
        torch.testing.assert_close(frames[-1], latents)


def test_denoised_differs_from_noisy(base: Any) -> None:
    denoised, _, _ = run(make_pipe(base, "EulerDiscreteScheduler", {}))
    noisy, _, _ = run(make_pipe(base, "EulerDiscreteScheduler", {}), mode="noisy")
    assert not torch.allclose(denoised[0], noisy[0])


def test_wrapper_keeps_step_api_and_uninstalls(base: Any) -> None:
    scheduler = diffusers.EulerDiscreteScheduler.from_config(base.scheduler.config)
    scheduler.set_timesteps(STEPS)
    capture = StepCapture(scheduler).install().install()  # installing twice wraps once
    sample, output = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    as_tuple = scheduler.step(output, scheduler.timesteps[0], sample, return_dict=False)
    assert isinstance(as_tuple, tuple)
    assert capture.pop() is not None
    assert capture.pop() is None  # pop clears
    as_dict = scheduler.step(output, scheduler.timesteps[1], sample)
    assert as_dict.prev_sample.shape == sample.shape
    capture.uninstall()
    assert "step" not in vars(scheduler)  # the class's own step again


def test_decode_approx_shapes() -> None:
    families: tuple[LatentFamily, ...] = ("sd", "sdxl", "sd3", "flux")
    for family in families:
        latents = torch.randn(2, len(LATENT_RGB[family][0]), 8, 8)
        images = decode_approx(latents, family=family)
        assert len(images) == 2
        for image in images:
            assert image.shape == (8, 8, 3)
            assert image.dtype == np.uint8


def test_decode_approx_projects_each_latent_channel_and_resizes() -> None:
    for family in ("sd", "sdxl", "sd3", "flux"):
        factors, bias = LATENT_RGB[family]  # type: ignore[index]
        channels = len(factors)
        assert channels == (4 if family in ("sd", "sdxl") else 16) and len(bias) == 3
        for channel in range(channels):
            latents = torch.zeros(1, channels, 8, 8)
            latents[:, channel] = 0.5
            image = decode_approx(latents, family, size=(16, 24))[0]  # type: ignore[arg-type]
            assert image.shape == (16, 24, 3) and image.dtype == np.uint8
            expected = np.clip((0.5 * np.array(factors[channel]) + np.array(bias) + 1) * 127.5, 0, 255)
            assert np.abs(image.astype(float) - expected).max() <= 1  # a flat latent stays flat


def test_flow_preview_factors_are_comfyuis() -> None:
    """Spot checks against comfy/latent_formats.py (classes SD3 and Flux)."""
    sd3, sd3_bias = LATENT_RGB["sd3"]
    flux, flux_bias = LATENT_RGB["flux"]
    assert (sd3[0], sd3[15], sd3_bias) == (
        [-0.0922, -0.0175, 0.0749],
        [-0.1448, -0.1463, -0.1189],
        [0.2394, 0.2135, 0.1925],
    )
    assert (flux[0], flux[15], flux_bias) == (
        [-0.0346, 0.0244, 0.0681],
        [-0.1262, -0.0982, -0.0778],
        [-0.0329, -0.0718, -0.0851],
    )


def test_flux_latents_are_unpacked_with_the_pipelines_helper() -> None:
    latents = torch.randn(2, 16, 8, 12)  # a 64x96 image
    packed = diffusers.FluxPipeline._pack_latents(latents, 2, 16, 8, 12)
    assert packed.shape == (2, 4 * 6, 64)

    class FluxPipeline:  # what unpack_for_decoding reads of a pipeline: its class's helper and VAE scale
        _unpack_latents = staticmethod(diffusers.FluxPipeline._unpack_latents)
        vae_scale_factor = 8

    unpack = unpack_for_decoding(FluxPipeline(), "flux", width=96, height=64)
    assert torch.equal(unpack(packed), latents)
    assert unpack_for_decoding(object(), "sd3", width=96, height=64)(latents) is latents


def test_latent_family_is_told_by_the_pipeline_class_and_checked_against_the_vae() -> None:
    def pipe(class_name: str, channels: int) -> Any:
        vae = type("Vae", (), {"config": type("Config", (), {"latent_channels": channels})()})()
        return type(class_name, (), {"vae": vae})()

    assert latent_family(pipe("StableDiffusionPipeline", 4)) == "sd"
    assert latent_family(pipe("StableDiffusionXLImg2ImgPipeline", 4)) == "sdxl"
    assert latent_family(pipe("StableDiffusion3Pipeline", 16)) == "sd3"
    assert latent_family(pipe("FluxImg2ImgPipeline", 16)) == "flux"
    with pytest.raises(ValueError, match="a flux pipeline with a 4-channel VAE"):
        latent_family(pipe("FluxPipeline", 4))
    with pytest.raises(ValueError, match="not a supported model family"):
        latent_family(pipe("KandinskyPipeline", 4))


def test_decode_approx_resizes_its_8_bit_preview_with_pillow() -> None:
    latents = torch.randn(2, 4, 16, 16)
    at_latent_size = decode_approx(latents)
    for size in ((512, 512), (64, 96)):
        resized = decode_approx(latents, size=size)
        for small, large in zip(at_latent_size, resized, strict=True):
            expected = Image.fromarray(small).resize((size[1], size[0]), Image.Resampling.BICUBIC)
            assert np.array_equal(large, np.asarray(expected))


def test_decode_full_shapes(base: Any) -> None:
    images = decode_full(base.vae, torch.randn(2, 4, SIZE // 8, SIZE // 8))
    assert len(images) == 2
    for image in images:
        assert image.shape == (SIZE, SIZE, 3)
        assert image.dtype == np.uint8


def test_decode_full_matches_pipeline_decode(base: Any) -> None:
    latents = torch.randn(1, 4, SIZE // 8, SIZE // 8)
    expected = base.image_processor.postprocess(
        base.vae.decode(latents / base.vae.config.scaling_factor, return_dict=False)[0].detach(), output_type="np"
    )
    np.testing.assert_allclose(decode_full(base.vae, latents)[0], np.round(expected[0] * 255), atol=1)


def test_tiny_model_reloads_and_rebuild_is_noop(model_path: Path, base: Any) -> None:
    size = sum(f.stat().st_size for f in model_path.rglob("*") if f.is_file())
    assert size < 10 * 2**20
    assert base.safety_checker is None
    assert base.unet.config.sample_size * base.vae_scale_factor == SIZE
    before = {f: f.stat().st_mtime_ns for f in model_path.rglob("*")}
    assert build_tiny_model(model_path) == model_path
    assert {f: f.stat().st_mtime_ns for f in model_path.rglob("*")} == before
    assert [p.name for p in model_path.parent.iterdir()] == [model_path.name]  # no temp folders left
    again = StableDiffusionPipeline.from_pretrained(model_path)
    torch.testing.assert_close(again.unet.state_dict(), base.unet.state_dict())


def test_tiny_model_is_deterministic(model_path: Path, tmp_path: Path) -> None:
    other = build_tiny_model(tmp_path / "again")
    for part in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        assert (other / part).read_bytes() == (model_path / part).read_bytes()


def test_tokenizer_takes_any_prompt(base: Any) -> None:
    prompt = "Ünïcödé 🐱🚀 supercalifragilistic <weird> prompt!!"
    ids = base.tokenizer(prompt, padding="max_length", truncation=True).input_ids
    assert len(ids) == base.tokenizer.model_max_length
    decoded = base.tokenizer.decode(ids, skip_special_tokens=True)  # no byte is lost to an unknown token
    assert decoded.replace(" ", "") == prompt.lower().replace(" ", "")


@pytest.mark.parametrize(("name", "overrides"), [p for p in SCHEDULERS if p.id in {"euler-a", "sde-dpm++"}])
def test_capture_keeps_stochastic_schedulers_seeded(base: Any, name: str, overrides: dict[str, Any]) -> None:
    """Pipelines pass ``generator`` only to a step() whose signature takes it: the wrapper must keep it."""
    _, _, captured = run(make_pipe(base, name, overrides))
    plain = final_latents(make_pipe(base, name, overrides))
    torch.testing.assert_close(captured, plain)

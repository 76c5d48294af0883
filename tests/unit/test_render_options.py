"""The render options of a request (capture, img2img, batch) and their validation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from stepanim.jobs import Job, utcnow
from stepanim.request import AnimationCreate, FrameDecoder, FrameResolution, FrameSource

UPLOAD = "a" * 32


def make(**fields: Any) -> AnimationCreate:
    return AnimationCreate.model_validate({"prompt": "x", **fields})


def error_of(**fields: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        make(**fields)
    return str(caught.value)


def test_defaults_render_full_size_denoised_frames_with_the_vae() -> None:
    body = make()
    assert body.capture.source == FrameSource.denoised
    assert body.capture.decoder == FrameDecoder.full
    assert body.capture.resolution == FrameResolution.full
    assert body.batch_size == 1
    assert body.init_image is None and body.strength is None
    assert body.denoising_steps() == body.steps == 20
    assert body.seeds(7) == [7]


def test_capture_block() -> None:
    body = make(capture={"source": "noisy", "decoder": "approx", "resolution": "quarter"})
    assert (body.capture.source, body.capture.decoder, body.capture.resolution) == ("noisy", "approx", "quarter")
    assert "capture.decoder" in error_of(capture={"decoder": "vae"}).replace("\n", ".")
    assert "capture.bogus" in error_of(capture={"bogus": 1}).replace("\n", ".")


def test_batch_seeds_are_consecutive_and_real() -> None:
    assert make(batch_size=3).seeds(100) == [100, 101, 102]
    assert "batch_size" in error_of(batch_size=0)
    assert "batch_size" in error_of(batch_size=9)


def test_init_image_needs_exactly_one_form() -> None:
    assert make(init_image={"upload_id": UPLOAD}).init_image is not None
    assert make(init_image={"data": "aGVsbG8="}).init_image is not None
    assert make(init_image={"url": "https://example.com/a.png"}).init_image is not None
    assert "exactly one of upload_id, data or url" in error_of(init_image={})
    assert "exactly one of upload_id, data or url" in error_of(init_image={"upload_id": UPLOAD, "data": "aGVsbG8="})
    assert "exactly one of upload_id, data or url" in error_of(init_image={"data": "aGVsbG8=", "url": "https://a.b/"})
    assert "upload_id" in error_of(init_image={"upload_id": "../../etc/passwd"})
    assert "init_image.url" in error_of(init_image={"url": "ftp://example.com/a.png"}).replace("\n", ".")
    assert "init_image.path" in error_of(init_image={"path": "/etc/passwd"}).replace("\n", ".")


def test_img2img_runs_steps_times_strength() -> None:
    body = make(steps=10, strength=0.45, init_image={"upload_id": UPLOAD})
    assert body.denoising_steps() == 4  # int(10 x 0.45), as diffusers
    assert make(steps=10, init_image={"upload_id": UPLOAD}).denoising_steps() == 7  # default strength 0.75
    assert make(steps=10, strength=1, init_image={"upload_id": UPLOAD}).denoising_steps() == 10


def test_img2img_refusals() -> None:
    assert "applies to img2img only" in error_of(strength=0.5)
    assert "must be at least 1" in error_of(steps=2, strength=0.3, init_image={"upload_id": UPLOAD})
    assert "strength" in error_of(strength=0, init_image={"upload_id": UPLOAD})
    assert "strength" in error_of(strength=1.5, init_image={"upload_id": UPLOAD})
    message = error_of(steps=10, strength=0.5, init_image={"upload_id": UPLOAD}, animation={"skip_steps": 5})
    assert "the 5 steps img2img runs" in message


def test_a_stored_job_reads_back() -> None:
    """Every default must survive the record's JSON round trip (the worker re-reads it)."""
    for body in [make(), make(batch_size=2, strength=0.5, init_image={"upload_id": UPLOAD})]:
        now = utcnow()
        job = Job(id="0" * 32, request=body, model="m", seed=1, created_at=now, updated_at=now)
        assert Job.model_validate_json(job.model_dump_json()) == job


def test_small_images_and_upscaled_frames() -> None:
    assert (make(width=32, height=32).width, make(width=32, height=32).height) == (32, 32)
    assert "width" in error_of(width=24)
    assert make(capture={"upscale": 2}).capture.upscale == 2
    assert "capture.upscale" in error_of(capture={"upscale": 5}).replace("\n", ".")
    assert "capture.upscale" in error_of(capture={"upscale": 0}).replace("\n", ".")
    # 2048 x 4 would be a 8192-pixel frame: refused, naming the field and the limit.
    message = error_of(width=2048, capture={"upscale": 4})
    assert "capture.upscale (4) makes 8192-pixel frames; at most 4096" in message


def test_frame_size_applies_resolution_then_upscale() -> None:
    from worker.render import frame_size

    assert frame_size(make().capture, width=64, height=32) == (32, 64)
    assert frame_size(make(capture={"upscale": 2}).capture, width=32, height=32) == (64, 64)
    quarter = make(capture={"resolution": "quarter", "upscale": 4}).capture
    assert frame_size(quarter, width=512, height=256) == (256, 512)


def test_an_eta_comes_once_the_pace_is_known_and_leaves_out_the_first_steps_warm_up() -> None:
    from worker.render import estimate_remaining

    sampled_at = {1: 5.0, 2: 5.5, 3: 6.0, 4: 6.5}  # a slow first step (warm-up), then 0.5 s a step
    assert estimate_remaining(sampled_at, step=2, total=10) is None  # too few steps to tell
    assert estimate_remaining(sampled_at, step=3, total=10) == pytest.approx(3.5)
    assert estimate_remaining(sampled_at, step=4, total=100) is None  # not yet a tenth of the run
    assert estimate_remaining(sampled_at, step=4, total=4) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("steps", "30"), ("steps", 30.0), ("width", "64"), ("seed", "7"), ("batch_size", True)],
)
def test_numbers_are_json_integers_only(field: str, value: object) -> None:
    """A string or float where an integer belongs is refused at its field, never coerced."""
    with pytest.raises(ValidationError) as caught:
        AnimationCreate.model_validate_json(json.dumps({"prompt": "a cat", field: value}))
    assert caught.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize("field", ["keep_frames", "frames_only", "run_on_incomplete"])
def test_switches_are_json_booleans_only(field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AnimationCreate.model_validate_json(json.dumps({"prompt": "a cat", "animation": {field: 0}}))
    assert caught.value.errors()[0]["loc"] == ("animation", field)

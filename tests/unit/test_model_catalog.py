"""Reading the models folder: which models there are, and the request defaults each suggests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from scripts.devstack import ROOT
from stepanim.model_catalog import misfits, read_model, scan, vocabulary_warnings, with_defaults
from stepanim.request import AnimationCreate


def model(folder: Path, manifest: object | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    if manifest is not None:
        (folder / "stepanim.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    return folder


def test_models_with_and_without_defaults(tmp_path: Path) -> None:
    model(tmp_path / "plain")
    model(tmp_path / "small", {"description": "small things", "defaults": {"width": 32, "height": 32}})
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "README.txt").write_text("hello")
    found = scan(tmp_path)
    assert [m.name for m in found] == ["plain", "small"]
    assert found[0].defaults == {} and found[0].description == ""
    assert found[1].defaults == {"width": 32, "height": 32} and found[1].description == "small things"
    assert scan(tmp_path / "missing") == []


@pytest.mark.parametrize(
    "manifest",
    [
        "{not json",
        {"defaults": {"width": 7}},  # not a valid request
        {"defaults": {"bogus": 1}},
        {"defaults": [1, 2]},
    ],
)
def test_a_bad_manifest_is_ignored_with_a_warning(
    tmp_path: Path, manifest: object, caplog: pytest.LogCaptureFixture
) -> None:
    model(tmp_path / "m", manifest)
    (found,) = scan(tmp_path)
    assert found.name == "m" and found.defaults == {}
    assert "ignoring" in caplog.text and "stepanim.json" in caplog.text


def test_the_committed_digits_model_suggests_a_valid_request() -> None:
    (digits,) = [m for m in scan(ROOT / "models") if m.name == "digits"]
    body = AnimationCreate.model_validate({"prompt": digits.example_prompt, **digits.defaults})
    assert (body.width, body.height, body.capture.upscale) == (32, 32, 4)


def diffusers_model(folder: Path, class_name: str, manifest: dict[str, object] | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    if manifest is not None:
        (folder / "stepanim.json").write_text(json.dumps(manifest))
    return folder


def test_each_model_says_its_family_and_what_fits_it(tmp_path: Path) -> None:
    diffusers_model(tmp_path / "sd15", "StableDiffusionPipeline")
    diffusers_model(tmp_path / "flux", "FluxPipeline")
    diffusers_model(tmp_path / "odd", "SomethingElsePipeline")
    sd15, flux, odd = (read_model(tmp_path / name) for name in ("sd15", "flux", "odd"))
    assert (sd15.family, sd15.size_multiple, sd15.negative_prompt, sd15.default_sampler) == ("sd", 8, True, "euler_a")
    assert "ddim" in sd15.samplers and "karras" in sd15.samplers["dpmpp_2m"]
    assert (flux.family, flux.size_multiple, flux.negative_prompt, flux.default_sampler) == ("flux", 16, False, "euler")
    assert "ddim" not in flux.samplers and "euler" in flux.samplers
    assert odd.family is None and odd.samplers == {}


def test_the_server_fills_in_what_a_request_leaves_out_from_the_models_defaults(tmp_path: Path) -> None:
    defaults = {
        "width": 32,
        "height": 32,
        "steps": 30,
        "guidance_scale": 3,
        "capture": {"upscale": 4, "source": "noisy"},
    }
    diffusers_model(tmp_path / "small", "StableDiffusionPipeline", {"defaults": defaults})
    info = read_model(tmp_path / "small")
    body = with_defaults(AnimationCreate.model_validate({"prompt": "a 7", "capture": {"decoder": "approx"}}), info)
    assert (body.width, body.height, body.steps, body.guidance_scale) == (32, 32, 30, 3)
    assert (body.capture.upscale, body.capture.source, body.capture.decoder) == (4, "noisy", "approx")
    assert body.scheduler == "euler_a"  # the family's default sampler
    given = with_defaults(AnimationCreate.model_validate({"prompt": "a 7", "width": 64, "steps": 5}), info)
    assert (given.width, given.height, given.steps) == (64, 32, 5)  # what the client said wins
    with pytest.raises(ValidationError, match="skip_steps"):  # and it must fit with the defaults
        with_defaults(
            AnimationCreate.model_validate({"prompt": "x", "animation": {"skip_steps": 25}}),
            info.model_copy(update={"defaults": {"steps": 20}}),
        )


def test_a_request_that_does_not_fit_its_model_names_every_field(tmp_path: Path) -> None:
    diffusers_model(tmp_path / "flux", "FluxPipeline")
    info = read_model(tmp_path / "flux")
    body = AnimationCreate.model_validate(
        {"prompt": "x", "width": 72, "height": 64, "negative_prompt": "blur", "scheduler": "ddim"}
    )
    assert [field for field, _ in misfits(info, body)] == ["width", "negative_prompt", "scheduler"]
    fine = AnimationCreate.model_validate({"prompt": "x", "width": 64, "height": 64, "scheduler": "euler"})
    assert misfits(info, fine) == []
    wrong_schedule = AnimationCreate.model_validate({"prompt": "x", "scheduler": "euler", "schedule": "sgm_uniform"})
    assert [f for f, _ in misfits(info, wrong_schedule)] == ["schedule"]  # (512 is a multiple of 16)


def test_words_outside_a_small_models_vocabulary_get_a_warning(tmp_path: Path) -> None:
    manifest: dict[str, object] = {"vocabulary": ["a", "handwritten", "7", "seven"], "vocabulary_hint": "digits 0-9"}
    diffusers_model(tmp_path / "digits", "StableDiffusionPipeline", manifest)
    info = read_model(tmp_path / "digits")
    assert vocabulary_warnings(info, "A handwritten 7") == []
    [warning] = vocabulary_warnings(info, "a cat, handwritten")
    assert "'cat'" in warning and "digits 0-9" in warning
    assert vocabulary_warnings(read_model(tmp_path / "digits").model_copy(update={"vocabulary": None}), "a cat") == []

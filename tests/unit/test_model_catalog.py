"""Reading the models folder: which models there are, and the request defaults each suggests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.devstack import ROOT
from stepanim.model_catalog import scan
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

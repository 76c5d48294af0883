"""Request options of the encoder issue: frames, renditions, and their storage keys."""

import pytest
from pydantic import ValidationError

from stepanim.naming import (
    check_rendition_id,
    frames_archive_key,
    new_rendition_id,
    rendition_key,
    upfront_rendition_id,
)
from stepanim.request import AnimationCreate
from stepanim.video_options import MAX_RENDITIONS

JOB = "0123456789abcdef0123456789abcdef"


def test_defaults_keep_frames_and_make_a_video() -> None:
    options = AnimationCreate(prompt="x").animation
    assert options.keep_frames and not options.frames_only and not options.run_on_incomplete


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"animation": {"frames_only": True, "keep_frames": False}}, "frames_only needs keep_frames"),
        ({"steps": 5, "renditions": [{"skip_steps": 5}]}, "renditions.0.skip_steps (5) must be less than steps"),
        ({"animation": {"frames_only": True}, "renditions": [{}]}, "frames_only job makes no video"),
        ({"renditions": [{}] * (MAX_RENDITIONS + 1)}, f"at most {MAX_RENDITIONS} items"),
        ({"renditions": [{"codec": "mpeg2"}]}, "Input should be"),
        ({"renditions": [{"keep_frames": False}]}, "Extra inputs are not permitted"),
    ],
)
def test_bad_combinations_are_refused(body: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AnimationCreate.model_validate({"prompt": "x", **body})


def test_rendition_keys_are_per_job_and_rendition() -> None:
    rid = upfront_rendition_id(JOB, 0)
    assert rid == upfront_rendition_id(JOB, 0) != upfront_rendition_id(JOB, 1)
    assert check_rendition_id(rid) == rid
    assert check_rendition_id(new_rendition_id())
    assert rendition_key(JOB, rid, "7-a cat.webm") == f"jobs/{JOB}/renditions/{rid}/7-a cat.webm"
    assert frames_archive_key(JOB) == f"jobs/{JOB}/frames.zip"
    for bad in ["../x", "", "0123456789ABCDEF", "0123456789abcdef0"]:
        with pytest.raises(ValueError):
            check_rendition_id(bad)

import pytest
from pydantic import ValidationError

from stepanim.jobs import TERMINAL, TRANSITIONS, JobStatus, can_transition
from stepanim.request import AnimationCreate
from stepanim.settings import Settings


def test_terminal_states() -> None:
    assert {s for s in JobStatus if s.is_terminal()} == {JobStatus.succeeded, JobStatus.failed, JobStatus.canceled}
    for status in TERMINAL:
        assert not TRANSITIONS[status]


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        ("queued", "rendering", True),
        ("queued", "canceled", True),
        ("queued", "encoding", False),
        ("rendering", "encoding", True),
        ("rendering", "queued", False),
        ("encoding", "succeeded", True),
        ("encoding", "rendering", False),
        ("succeeded", "failed", False),
        ("canceled", "rendering", False),
        ("failed", "succeeded", False),
    ],
)
def test_transitions(current: str, target: str, allowed: bool) -> None:
    assert can_transition(JobStatus(current), JobStatus(target)) is allowed


def test_every_non_terminal_state_can_fail_and_cancel() -> None:
    for status in JobStatus:
        if not status.is_terminal():
            assert can_transition(status, JobStatus.failed)
            assert can_transition(status, JobStatus.canceled)


def test_defaults() -> None:
    req = AnimationCreate(prompt="x")
    # No sampler asked for: the model's default, filled in at admission (or by the worker for an unknown model).
    assert (req.steps, req.scheduler, req.animation.fps, req.animation.codec) == (20, None, 30, "h264")


def test_web_ui_sampler_names_are_accepted() -> None:
    named = AnimationCreate(prompt="x", scheduler="DPM++ 2M Karras")  # type: ignore[arg-type]
    assert (named.scheduler, named.schedule) == ("dpmpp_2m", "karras")
    assert AnimationCreate(prompt="x", scheduler="Euler a").scheduler == "euler_a"  # type: ignore[arg-type]
    agreeing = AnimationCreate(prompt="x", scheduler="DPM++ 2M Karras", schedule="karras")  # type: ignore[arg-type]
    assert agreeing.schedule == "karras"
    with pytest.raises(ValidationError, match="contradicts"):
        AnimationCreate(prompt="x", scheduler="DPM++ 2M Karras", schedule="beta")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": ""},
        {"prompt": "x", "width": 100},
        {"prompt": "x", "steps": 0},
        {"prompt": "x", "scheduler": "nope"},
        {"prompt": "x", "animation": {"duration": 0.1}},
        {"prompt": "x", "animation": {"duration": 121}},
        {"prompt": "x", "animation": {"codec": "mpeg2"}},
        {"prompt": "x", "steps": 5, "animation": {"skip_steps": 5}},
        {"prompt": "x", "model": "../../etc"},
        {"prompt": "x", "model": "/abs/path"},
        {"prompt": "x", "webhook": "ftp://example.com"},
        {"prompt": "x", "unknown": 1},
    ],
)
def test_bad_requests_are_refused(body: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationError):
        AnimationCreate.model_validate(body)


def test_model_may_be_a_hub_id() -> None:
    assert AnimationCreate(prompt="x", model="runwayml/stable-diffusion-v1-5").model


def test_production_refuses_dev_secrets() -> None:
    with pytest.raises(ValidationError, match="SIGNING_SECRET"):
        Settings(_env_file=None, env="production")  # type: ignore[call-arg]
    Settings(_env_file=None, env="production", signing_secret="s" * 32, webhook_secret="whsec_" + "QUJD" * 8)  # type: ignore[call-arg]

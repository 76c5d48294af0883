"""The client's and CLI's pure logic: Retry-After and retry decisions, SSE decoding, error parsing,
option -> request body mapping, header files, the progress line, and what importing the client pulls in."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from client import _core, calls, cli
from client._core import Event, RetryPolicy, SSEDecoder, parse_retry_after
from client.models import RenditionPublic
from client.progress import ProgressBar, format_duration, render_line
from client.sync import Client

ROOT = Path(__file__).resolve().parents[2]


# Retry-After and the retry policy


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5", 5.0), ("0", 0.0), (" 12 ", 12.0), ("1.5", 1.5), ("-1", None), ("", None), (None, None), ("soon", None)],
)
def test_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_http_date() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(30)
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past, now=now.timestamp()) == 0.0


def test_retry_policy_honours_retry_after_and_bounds_attempts() -> None:
    policy = RetryPolicy(attempts=3, backoff=0.5, max_backoff=2.0, jitter=0.0, max_retry_after=60)
    assert policy.delay(1, 7.0) == 7.0
    assert policy.delay(1, 61.0) is None  # longer than it is willing to wait: give up, the error says Retry-After
    assert [policy.delay(n, None) for n in (1, 2)] == [0.5, 1.0]
    assert policy.delay(3, None) is None and policy.delay(3, 1.0) is None
    capped = RetryPolicy(attempts=10, backoff=1, max_backoff=4, jitter=0)
    assert [capped.delay(n, None) for n in range(1, 6)] == [1, 2, 4, 4, 4]
    jittered = RetryPolicy(backoff=1, jitter=0.2, rand=lambda: 1.0)
    assert jittered.delay(1, None) == pytest.approx(1.2)


def _response(status: int, body: bytes, **headers: str) -> httpx.Response:
    return httpx.Response(status, content=body, headers=headers, request=httpx.Request("GET", "http://x/"))


def test_which_answers_are_retried() -> None:
    policy = RetryPolicy()
    for status in (429, 503):
        assert _core.retryable_response(_response(status, b""), policy, None)
    for status in (400, 404, 422, 500, 502):
        assert not _core.retryable_response(_response(status, b""), policy, None)
    conflict = _response(409, b'{"error": {"code": "idempotency_conflict", "message": "m"}}', **{"retry-after": "1"})
    assert _core.retryable_response(conflict, policy, _core.api_error(conflict))
    finished = _response(409, b'{"error": {"code": "already_finished", "message": "m"}}')
    assert not _core.retryable_response(finished, policy, _core.api_error(finished))
    request = httpx.Request("GET", "http://x/")
    assert _core.retryable_exception(httpx.ConnectError("refused", request=request), idempotent=False)
    assert not _core.retryable_exception(httpx.ReadTimeout("slow", request=request), idempotent=False)
    assert _core.retryable_exception(httpx.ReadTimeout("slow", request=request), idempotent=True)


def test_api_error_reads_the_one_error_shape_and_anything_else() -> None:
    body = b'{"error": {"code": "rate_limited", "message": "too many", "details": [{"field": "x"}]}}'
    error = _core.api_error(_response(429, body, **{"retry-after": "3"}))
    assert (error.status, error.code, error.message, error.retry_after) == (429, "rate_limited", "too many", 3.0)
    assert error.details == [{"field": "x"}]
    assert str(error) == "too many (HTTP 429 rate_limited)"
    proxy = _core.api_error(_response(502, b"<html><body>Bad   gateway</body></html>"))
    assert proxy.code == "http_error" and proxy.status == 502
    assert "\n" not in str(proxy) and "Bad gateway" in str(proxy)


def test_a_call_sends_only_what_it_sets() -> None:
    rendition = calls.create_rendition(calls.grid_path("g1"), {}, "k")
    assert (rendition.method, rendition.path, rendition.answer) == ("POST", "/grids/g1/renditions", RenditionPublic)
    assert rendition.options() == {"json": {}, "headers": {"Idempotency-Key": "k"}}  # an empty body is still sent
    listing = calls.list_animations(["queued", "rendering"], 5, None)
    assert listing.options() == {"params": [("limit", 5), ("status", "queued"), ("status", "rendering")]}
    assert calls.get("a1").options() == {} and calls.get("a1").idempotent
    assert not calls.rotate_webhook_secret().idempotent
    assert calls.create({"prompt": "p"}, None).options()["headers"]["Idempotency-Key"]  # a new UUID


# Server-sent events


def feed(decoder: SSEDecoder, text: str) -> list[Event]:
    events = [decoder.feed(line) for line in text.split("\n")]
    return [e for e in events if e is not None]


def test_sse_decoder_reads_the_servers_stream() -> None:
    decoder = SSEDecoder()
    stream = (
        "retry: 2000\n\n"
        ": keep-alive\n\n"
        'id: 1-0\nevent: status\ndata: {"status": "queued", "animation": null}\n\n'
        'id: 2-0\nevent: progress\ndata: {"step": 1,\ndata: "total": 4}\n\n'
        "event: rendition\n\n"  # no data: not dispatched
        'id: 3-0\nevent: status\ndata:{"status": "succeeded"}\n\n'
    )
    events = feed(decoder, stream)
    assert [(e.id, e.event) for e in events] == [("1-0", "status"), ("2-0", "progress"), ("3-0", "status")]
    assert events[1].data == {"step": 1, "total": 4}  # data lines joined with a newline
    assert decoder.retry == 2000 and decoder.last_event_id == "3-0"
    assert [e.is_final for e in events] == [False, False, True]
    assert events[0].status == "queued" and events[0].animation is None and events[1].status is None


def test_sse_decoder_keeps_the_last_id_and_ignores_what_it_does_not_know() -> None:
    decoder = SSEDecoder(last_event_id="5-0")
    events = feed(decoder, "foo: bar\ndata: not json\n\nid: bad\0id\ndata: [1]\n\n")
    assert [e.data for e in events] == [{"text": "not json"}, {"value": [1]}]
    assert [e.id for e in events] == ["5-0", "5-0"]  # an id with NUL is ignored
    assert [e.event for e in events] == ["message", "message"]


def test_stream_helpers() -> None:
    assert _core.stream_headers("7-1") == {
        "Accept": "text/event-stream",
        "Cache-Control": "no-cache",
        "Last-Event-ID": "7-1",
    }
    assert "Last-Event-ID" not in _core.stream_headers(None)
    assert _core.is_event_stream(_response(200, b"", **{"content-type": "text/event-stream; charset=utf-8"}))
    assert not _core.is_event_stream(_response(200, b"", **{"content-type": "text/html"}))
    assert _core.stream_timeout(None, 5).read == _core.STREAM_READ_TIMEOUT
    assert _core.stream_timeout(2.0, 5).read == 2.0


# The CLI's options -> the request body


def submit_args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["submit", *argv])


def test_only_the_options_given_are_sent() -> None:
    body = _core.create_body(cli.build_request(submit_args("a lighthouse")))
    assert body == {"prompt": "a lighthouse"}


def test_every_option_lands_in_its_field() -> None:
    args = submit_args(
        "a lighthouse",
        *("--negative-prompt", "blurry", "--model", "tiny-sd", "--width", "64", "--height", "72"),
        *("--steps", "4", "--scheduler", "ddim", "--cfg", "5.5", "--seed", "7", "--batch-size", "2"),
        *("--duration", "1.5", "--fps", "12", "--codec", "vp9", "--interpolation", "blend"),
        *("--skip-steps", "1", "--hold-last", "0.5", "--run-on-incomplete", "--no-keep-frames"),
        *("--capture-source", "noisy", "--decoder", "approx", "--capture-resolution", "quarter"),
        *("--init-upload", "9b2f0c1a2b3c4d4e5f8a9b0c1d2e3f4a", "--strength", "0.6"),
        *("--webhook", "https://example.com/h", "--webhook-event", "animation.started"),
        *("--webhook-event", "animation.succeeded", "--rendition", "codec=gif,duration=2"),
        *("--rendition", "fps=24, interpolation=mci"),
        *("--lora", "watercolor:0.8", "--lora", "grain", "--embedding", "mystyle"),
    )
    body = _core.create_body(cli.build_request(args))
    assert body == {
        "prompt": "a lighthouse",
        "negative_prompt": "blurry",
        "model": "tiny-sd",
        "width": 64,
        "height": 72,
        "steps": 4,
        "scheduler": "ddim",
        "guidance_scale": 5.5,
        "seed": 7,
        "batch_size": 2,
        "animation": {
            "duration": 1.5,
            "fps": 12,
            "codec": "vp9",
            "interpolation": "blend",
            "skip_steps": 1,
            "hold_last": 0.5,
            "run_on_incomplete": True,
            "keep_frames": False,
        },
        "capture": {"source": "noisy", "decoder": "approx", "resolution": "quarter"},
        "init_image": {"upload_id": "9b2f0c1a2b3c4d4e5f8a9b0c1d2e3f4a"},
        "strength": 0.6,
        "webhook": "https://example.com/h",
        "webhook_events": ["animation.started", "animation.succeeded"],
        "renditions": [{"codec": "gif", "duration": 2.0}, {"fps": 24, "interpolation": "mci"}],
        "loras": [{"name": "watercolor", "weight": 0.8}, {"name": "grain", "weight": 1.0}],
        "embeddings": ["mystyle"],
    }


def test_lora_options_and_their_errors() -> None:
    assert cli.parse_lora("style") == {"name": "style", "weight": 1.0}
    assert cli.parse_lora("style:-0.5") == {"name": "style", "weight": -0.5}
    with pytest.raises(argparse.ArgumentTypeError, match="expected NAME or NAME:WEIGHT"):
        cli.parse_lora("style:strong")


def test_an_uploaded_init_image_is_sent_by_its_id_and_frames_only_maps() -> None:
    args = submit_args("p", "--init-image", "photo.png", "--frames-only")
    body = _core.create_body(cli.build_request(args, upload_id="ab" * 16))
    assert body == {"prompt": "p", "init_image": {"upload_id": "ab" * 16}, "animation": {"frames_only": True}}


def test_rendition_options_and_their_errors() -> None:
    assert cli.parse_video_options("codec=h265,hold-last=1") == {"codec": "h265", "hold_last": 1.0}
    for bad, message in [("codec", "expected NAME=VALUE"), ("speed=2", "expected NAME=VALUE"), ("codec=x", "codec")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            cli.parse_video_options(bad)
    rerender = cli.build_parser().parse_args(["rerender", "job", "--codec", "gif", "--fps", "10"])
    assert _core.rendition_body(cli.rendition_request(rerender)) == {"codec": "gif", "fps": 10}


def test_usage_errors_are_one_line_with_exit_2() -> None:
    for argv in (["submit", "p", "--steps", "x"], ["submit", "p", "--codec", "mp3"], ["nope"], []):
        err = io.StringIO()
        with pytest.raises(SystemExit) as exit_:
            _parse_with_stderr(argv, err)
        assert exit_.value.code == cli.EXIT_USAGE
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and "error:" in lines[0], lines


def _parse_with_stderr(argv: list[str], err: io.StringIO) -> None:
    saved = sys.stderr
    sys.stderr = err
    try:
        cli.build_parser().parse_args(argv)
    finally:
        sys.stderr = saved


def test_global_options_go_before_or_after_the_command() -> None:
    parser = cli.build_parser()
    before = parser.parse_args(["--url", "http://a", "--json", "status", "x"])
    after = parser.parse_args(["status", "x", "--url", "http://a", "--json"])
    neither = parser.parse_args(["status", "x"])
    assert (before.url, before.json) == (after.url, after.json) == ("http://a", True)
    assert (neither.url, neither.json) == (None, False)


def test_saved_headers_as_json_or_lines() -> None:
    assert cli.parse_headers('{"Webhook-Id": "msg_1", "webhook-timestamp": 5}') == {
        "webhook-id": "msg_1",
        "webhook-timestamp": "5",
    }
    text = "POST /hook HTTP/1.1\r\nWebhook-Id: msg_1\r\nwebhook-signature: v1,abc= v1,def=\r\n\r\n"
    assert cli.parse_headers(text) == {"webhook-id": "msg_1", "webhook-signature": "v1,abc= v1,def="}
    with pytest.raises(cli.UsageError):
        cli.parse_headers("{not json")


# The progress line


def test_progress_line() -> None:
    assert format_duration(7) == "0:07" and format_duration(750) == "12:30" and format_duration(3723) == "1:02:03"
    assert render_line("rendering", 12, 30, 6.4, width=10) == "rendering [####------] 12/30 steps  ETA 0:06"
    assert render_line("rendering", 30, 30, 0.0, width=10) == "rendering [##########] 30/30 steps"
    assert render_line("encoding", 30, 30, None) == "encoding"


def test_progress_bar_off_a_terminal_writes_status_changes_and_the_last_step() -> None:
    now = [0.0]
    out = io.StringIO()
    bar = ProgressBar(out, tty=False, clock=lambda: now[0])
    bar(Event(event="status", data={"status": "queued", "animation": None}))
    for step in (1, 2, 3, 4):
        now[0] += 0.25
        bar(Event(event="progress", data={"step": step, "total": 4, "latest_frame_url": None}))
    bar(Event(event="rendition", data={"id": "r", "status": "queued"}))  # ignored
    bar(Event(event="status", data={"status": "succeeded", "animation": None}))
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "queued"
    assert lines[1].startswith("rendering [") and lines[1].endswith("1/4 steps")  # no pace yet
    assert lines[2].endswith("4/4 steps")  # steps 2 and 3 came within a second: not written
    assert lines[3:] == ["succeeded"]


def test_progress_bar_eta_from_the_pace_of_steps_and_redraws_on_a_terminal() -> None:
    now = [100.0]
    out = io.StringIO()
    bar = ProgressBar(out, tty=True, clock=lambda: now[0])
    bar(Event(event="progress", data={"step": 1, "total": 11}))
    now[0] += 2.0
    bar(Event(event="progress", data={"step": 3, "total": 11}))
    assert bar.eta() == pytest.approx(8.0)  # 1 s a step, 8 steps left
    assert "ETA 0:08" in out.getvalue() and "\n" not in out.getvalue()
    bar.close()
    assert out.getvalue().endswith("\n")


# Packaging and imports


def test_ctrl_c_while_waiting_closes_the_line_and_says_the_job_keeps_running(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = io.StringIO()
    bar = ProgressBar(drawn, tty=True)

    def wait(self: object, job_id: str, **kwargs: object) -> None:
        bar(Event(event="progress", data={"step": 1, "total": 30}))  # a line is on the terminal
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "wait", wait)
    monkeypatch.setattr(cli, "ProgressBar", lambda stream: bar)
    err = io.StringIO()
    assert cli.main(["wait", "abc123"], stdout=io.StringIO(), stderr=err) == cli.EXIT_INTERRUPTED
    assert err.getvalue() == "stepanim: interrupted; animation abc123 keeps running (`stepanim cancel abc123`)\n"
    assert "1/30 steps" in drawn.getvalue() and drawn.getvalue().endswith("\n")  # the bar's line was ended


def test_importing_the_client_and_cli_pulls_in_no_service_code() -> None:
    code = (
        "import sys, client, client.cli, client.aio; "
        "heavy = ('torch', 'diffusers', 'transformers', 'celery', 'redis', 'fastapi', 'stepanim.settings'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "[]"


def test_the_stepanim_command_is_declared_and_the_package_shipped() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    target = project["project"]["scripts"]["stepanim"]
    module, _, function = target.partition(":")
    assert (module, function) == ("client.cli", "main")
    assert "client*" in project["tool"]["setuptools"]["packages"]["find"]["include"]
    result = subprocess.run(
        [sys.executable, "-m", "client", "--help"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert "usage: stepanim" in result.stdout and "exit codes:" in result.stdout

"""JSON log lines and the job id they carry."""

import io
import json
import logging
import sys

import pytest

from stepanim.logs import JsonFormatter, job_id_var, setup_logging


def record(message: str, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("test.logs")
    rec = logger.makeRecord("test.logs", logging.INFO, __file__, 1, message, (), None, extra=extra)
    return rec


def test_a_line_is_one_json_object_with_the_job_id_from_context() -> None:
    token = job_id_var.set("a" * 32)
    try:
        line = JsonFormatter("worker").format(record("rendered %d steps", task="render"))
    finally:
        job_id_var.reset(token)
    data = json.loads(line)
    assert data["service"] == "worker"
    assert data["job_id"] == "a" * 32
    assert data["task"] == "render"
    assert data["level"] == "info"
    assert data["ts"].endswith("Z")


def test_extra_job_id_wins_and_no_job_id_without_one() -> None:
    assert json.loads(JsonFormatter("api").format(record("x", job_id="b" * 32)))["job_id"] == "b" * 32
    assert "job_id" not in json.loads(JsonFormatter("api").format(record("x")))


def test_exceptions_stay_inside_the_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        rec = logging.getLogger("t").makeRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter("encoder").format(rec)
    assert "\n" not in line
    assert "ValueError: bad" in json.loads(line)["exc"]


def test_setup_logging_routes_uvicorn_and_celery_loggers_through_one_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    try:
        logging.getLogger("uvicorn.error").addHandler(logging.StreamHandler(io.StringIO()))
        setup_logging(service="api", level="INFO")
        logging.getLogger("uvicorn.error").info("started")
        logging.getLogger("celery").warning("hello")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["logger"], line["message"]) for line in lines] == [("uvicorn.error", "started"), ("celery", "hello")]

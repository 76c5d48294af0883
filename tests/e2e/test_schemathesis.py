"""Schemathesis against the live API (uvicorn and redis-server as processes): every
default check, on every operation, in all its phases (examples, coverage, fuzzing,
stateful). The run is bounded (examples per operation, request timeout, 1 s event
streams, no `Prefer: wait`) so it takes well under two minutes here.

No workers run: jobs stay queued, which is all the HTTP contract needs. Widen the run
with SCHEMATHESIS_MAX_EXAMPLES=200 when changing the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from scripts.devstack import ROOT, Stack
from stepanim import auth

KEY = "sa_schemathesis_" + "s" * 24


@pytest.mark.slow
def test_schemathesis_finds_no_failure(tmp_path: Path) -> None:
    settings = {
        "STEPANIM_LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
        "STEPANIM_API_KEYS": json.dumps([{"id": "fuzz", "tenant": "fuzz", "sha256": auth.hash_key(KEY)}]),
        # Fuzzing sends thousands of requests and never finishes a job: lift the per-key limits
        # (their own tests are in tests/integration/test_api.py) and keep every request short.
        "STEPANIM_RATE_LIMIT_PER_MINUTE": "1000000",
        "STEPANIM_CREATE_RATE_LIMIT_PER_MINUTE": "1000000",
        "STEPANIM_MAX_ACTIVE_JOBS": "1000000",
        "STEPANIM_MAX_WAIT_SECONDS": "0",
        "STEPANIM_EVENTS_MAX_SECONDS": "1",
    }
    stack = Stack(workdir=tmp_path, settings=settings)
    try:
        stack.start_redis()
        # What an encoder worker publishes when it starts (no worker runs here): without it
        # GET /capabilities answers 503 and renditions cannot be checked.
        from encoder.capabilities import probe_capabilities
        from encoder.ffmpeg import find_binary
        from stepanim.keys import Keys
        from stepanim.published import Published

        caps = probe_capabilities(find_binary("ffmpeg", None))
        Published(redis.Redis.from_url(stack.redis_url), Keys()).set_encoder(caps, ttl=3600)
        stack.start_api()
        command = [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(ROOT / "schemathesis.toml"),
            "run",
            f"{stack.api_url}/openapi.json",
            "--header",
            f"Authorization: Bearer {KEY}",
            "--max-examples",
            os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "15"),
            "--request-timeout",
            "20",
            "--generation-database",
            "none",
            "--no-color",
        ]
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=480, check=False)
    finally:
        stack.stop()
    report = result.stdout[-20000:] + result.stderr[-5000:]
    assert result.returncode == 0, report  # non-zero on any failure or error
    assert " passed" in result.stdout and "Failures:" not in result.stdout and "Errors:" not in result.stdout, report

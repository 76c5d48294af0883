"""API benchmark: POST /animations against a bare endpoint of the same app, same run.

Starts a private redis-server and one uvicorn process (no workers: jobs stay queued;
the encoder's capabilities are published first, as a running encoder would),
then drives each endpoint with keep-alive connections from one asyncio client, in
rounds that alternate the two endpoints (ABBA order). Prints requests per second and
p50/p99 latency of each over all rounds, the ratio POST / bare of those totals, and the
*paired* ratio: the median over rounds of each round's POST / bare, the figure least
disturbed by a machine whose speed drifts from one second to the next, with a 95%
bootstrap interval around it (``bench.stats``, as ``bench.capture`` reports it).

    python -m bench.api [--seconds 10] [--rounds 5] [--connections 32] [--baseline OTHER_CHECKOUT]

The client shares the machine with the server: on a small machine the figures are a
floor, the ratios are the useful numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

from bench.stats import median_interval, paired_ratios
from encoder.capabilities import probe_capabilities
from encoder.ffmpeg import find_binary
from scripts.devstack import UNLIMITED_DEV_SETTINGS, Stack, free_port
from stepanim.keys import Keys
from stepanim.published import Published

BODY = json.dumps(
    {"prompt": "a lighthouse", "steps": 20, "width": 512, "height": 512, "animation": {"duration": 3}}
).encode()


def request_bytes(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: keep-alive\r\n"
    if body:
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    return status


async def drive(port: int, raw: bytes, *, seconds: float, connections: int, expect: int) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    errors = 0

    async def one() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(raw)
            status = await read_response(reader)
            latencies.append(time.perf_counter() - started)
            errors += status != expect
        writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    if errors:
        raise RuntimeError(f"{errors} responses were not {expect}")
    return latencies


def summary(name: str, latencies: list[float], seconds: float) -> dict[str, float]:
    q = statistics.quantiles(latencies, n=100)
    result = {"rps": len(latencies) / seconds, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000}
    print(f"{name:22s} {result['rps']:8.0f} req/s   p50 {result['p50_ms']:6.1f} ms   p99 {result['p99_ms']:6.1f} ms")
    return result


def start_baseline(stack: Stack, checkout: Path, port: int) -> subprocess.Popen[bytes]:
    """The API of another checkout (``checkout``, e.g. a git worktree of an older commit) on the same Redis."""
    env = {**stack.env(), "PYTHONPATH": str(checkout), "STEPANIM_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
    args = [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--port", str(port)]
    args += ["--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(args, cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the baseline API in {checkout} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per endpoint, alternating (ABBA)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. `git worktree add /tmp/before <commit>`) whose API is measured in the same "
        "rounds, on the same Redis: before and after in one run",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        stack = Stack(
            workdir=Path(tmp),
            settings={
                **UNLIMITED_DEV_SETTINGS,  # no API key, no per-key limits
                "STEPANIM_STORAGE_BACKEND": "local",
                "STEPANIM_LOCAL_STORAGE_DIR": f"{tmp}/storage",
                "STEPANIM_LOG_LEVEL": "WARNING",
            },
        )
        baseline: subprocess.Popen[bytes] | None = None
        try:
            stack.start_redis()
            # As in production, an encoder has published what its ffmpeg can do (the API reads it).
            caps = probe_capabilities(find_binary("ffmpeg", None))
            Published(redis.Redis.from_url(stack.redis_url), Keys()).set_encoder(caps, ttl=3600)
            stack.start_api()
            apis = {"": stack.api_port}
            if args.baseline is not None:
                port = free_port()
                baseline = start_baseline(stack, args.baseline.resolve(), port)
                apis["baseline "] = port
            get, post = request_bytes("GET", "/healthz"), request_bytes("POST", "/animations", BODY)
            # Warm up both paths (connection pools, imports), then measure.
            for port in apis.values():
                asyncio.run(drive(port, get, seconds=1, connections=4, expect=200))
                asyncio.run(drive(port, post, seconds=1, connections=4, expect=202))
            # ABBA rounds: a machine that speeds up or slows down favours no endpoint and no checkout.
            share = args.seconds / args.rounds
            order = [(label, name) for label in apis for name in ("bare", "post")]
            latencies: dict[tuple[str, str], list[list[float]]] = {key: [] for key in order}
            for n in range(args.rounds):
                for label, name in order if n % 2 == 0 else reversed(order):
                    raw, expect = (get, 200) if name == "bare" else (post, 202)
                    port = apis[label]
                    latencies[label, name].append(
                        asyncio.run(drive(port, raw, seconds=share, connections=args.connections, expect=expect))
                    )
            for label in apis:
                bare_rounds, post_rounds = latencies[label, "bare"], latencies[label, "post"]
                bare = summary(f"{label}GET /healthz", [x for r in bare_rounds for x in r], args.seconds)
                real = summary(f"{label}POST /animations", [x for r in post_rounds for x in r], args.seconds)
                paired = median_interval(paired_ratios([len(p) for p in post_rounds], [len(b) for b in bare_rounds]))
                print(
                    f"{label}ratio POST / bare: {real['rps'] / bare['rps']:.2f}x, paired {paired} "
                    f"({args.connections} connections, {args.rounds} rounds)"
                )
        finally:
            if baseline is not None:
                baseline.kill()
                baseline.wait()
            stack.stop()


if __name__ == "__main__":
    main()

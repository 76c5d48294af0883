"""API benchmark: POST /animations against a bare endpoint of the same app, same run.

Starts a private redis-server and one uvicorn process (no workers: jobs stay queued;
the encoder's capabilities are published first, as a running encoder would),
then drives each endpoint with keep-alive connections from one asyncio client, in
rounds that alternate the two endpoints (ABBA order). Prints requests per second and
p50/p99 latency of each over all rounds, the ratio POST / bare of those totals, and the
*paired* ratio: the median over rounds of each round's POST / bare, the figure least
disturbed by a machine whose speed drifts from one second to the next, with a 95%
bootstrap interval around it (``bench.stats``, as ``bench.capture`` reports it).

    python -m bench.api [--seconds 10] [--rounds 5] [--connections 32]

The client shares the machine with the server: on a small machine the figures are a
floor, the ratios are the useful numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import redis

from bench.stats import median_interval, paired_ratios
from encoder.capabilities import probe_capabilities
from encoder.ffmpeg import find_binary
from scripts.devstack import UNLIMITED_DEV_SETTINGS, Stack
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per endpoint, alternating (ABBA)")
    parser.add_argument("--connections", type=int, default=32)
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
        try:
            stack.start_redis()
            # As in production, an encoder has published what its ffmpeg can do (the API reads it).
            caps = probe_capabilities(find_binary("ffmpeg", None))
            Published(redis.Redis.from_url(stack.redis_url), Keys()).set_encoder(caps, ttl=3600)
            stack.start_api()
            get, post = request_bytes("GET", "/healthz"), request_bytes("POST", "/animations", BODY)
            # Warm up both paths (connection pools, imports), then measure.
            asyncio.run(drive(stack.api_port, get, seconds=1, connections=4, expect=200))
            asyncio.run(drive(stack.api_port, post, seconds=1, connections=4, expect=202))
            # ABBA rounds: a machine that speeds up or slows down favours neither endpoint.
            share = args.seconds / args.rounds
            latencies: dict[str, list[list[float]]] = {"bare": [], "post": []}
            for n in range(args.rounds):
                for name in ("bare", "post") if n % 2 == 0 else ("post", "bare"):
                    raw, expect = (get, 200) if name == "bare" else (post, 202)
                    latencies[name].append(
                        asyncio.run(
                            drive(stack.api_port, raw, seconds=share, connections=args.connections, expect=expect)
                        )
                    )
            bare = summary("GET /healthz (bare)", [x for r in latencies["bare"] for x in r], args.seconds)
            real = summary("POST /animations", [x for r in latencies["post"] for x in r], args.seconds)
            paired = median_interval(
                paired_ratios([len(p) for p in latencies["post"]], [len(b) for b in latencies["bare"]])
            )
            print(
                f"ratio POST / bare: {real['rps'] / bare['rps']:.2f}x, paired {paired} "
                f"({args.connections} connections, {args.rounds} rounds)"
            )
        finally:
            stack.stop()


if __name__ == "__main__":
    main()

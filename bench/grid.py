"""A grid's wall time with one render worker and with two: how a grid's cells spread over workers.

Each configuration starts its own stack (the tiny model on the CPU, each render worker limited to
one torch thread so that two workers have a core each), renders ``--grids`` 2x2 grids (four
cells: two samplers by two seeds) one after the other, and reports the median time from
``created_at`` to ``finished_at`` (what the client waits: render, compose, publish). On a GPU host
each worker has its own GPU, so the cells' render time divides by the number of workers while the
compose step stays; docs/scaling.md works that out for N hosts.

    python -m bench.grid [--grids 3] [--steps 20] [--size 64]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from bench.stack import tiny_stack

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def grid_seconds(api: str, n: int, *, steps: int, size: int) -> float:
    body = {
        "base": {
            "prompt": f"grid bench {n}",
            "steps": steps,
            "width": size,
            "height": size,
            "animation": {"duration": 2, "codec": "h264"},
        },
        "x": {"field": "scheduler", "values": ["euler_a", "dpmpp_2m"]},
        "y": {"field": "seed", "values": [n, n + 1000]},
    }
    response = httpx.post(f"{api}/grids", json=body, timeout=30)
    response.raise_for_status()
    grid_id = response.json()["id"]
    while (grid := httpx.get(f"{api}/grids/{grid_id}", timeout=30).json())["status"] not in (
        "succeeded",
        "failed",
        "canceled",
    ):
        time.sleep(0.05)
    assert grid["status"] == "succeeded", grid.get("error")
    return (datetime.fromisoformat(grid["finished_at"]) - datetime.fromisoformat(grid["created_at"])).total_seconds()


def run(workers: int, *, grids: int, steps: int, size: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="bench-grid-") as tmp:
        stack = tiny_stack(Path(tmp))
        try:
            stack.start_redis()
            stack.start_api()
            for n in range(workers):
                proc = stack.start_worker("render", env=ONE_THREAD)
                stack.procs[f"render-{n}"] = proc  # start_worker files each under "render": keep them all
            for role in ("encode", "notify"):
                stack.start_worker(role)
            grid_seconds(stack.api_url, 0, steps=steps, size=size)  # warms every worker's pipeline cache
            times = [grid_seconds(stack.api_url, n, steps=steps, size=size) for n in range(1, grids + 1)]
        finally:
            stack.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    medians = {}
    for workers in (1, 2):
        times = run(workers, grids=args.grids, steps=args.steps, size=args.size)
        medians[workers] = statistics.median(times)
        print(f"{workers} render worker(s): " + "  ".join(f"{t:.2f}s" for t in times))
    print(
        f"2x2 grid of {args.steps} steps at {args.size}px: median {medians[1]:.2f}s with 1 render worker, "
        f"{medians[2]:.2f}s with 2: {medians[1] / medians[2]:.2f}x faster"
    )


if __name__ == "__main__":
    main()

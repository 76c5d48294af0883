"""End-to-end queue overhead: total job time over the time spent rendering and encoding.

For each small job, total = finished_at - created_at (what the client waits), work =
the render time (``stepanim_render_step_seconds_sum``) plus the encode time
(``stepanim_encode_seconds_sum``) it added to /metrics. The rest is queueing and
hand-off: API → render queue → encode queue → done.

    python -m bench.e2e [--jobs 5] [--steps 20]
    python -m bench.e2e --tail [--jobs 10] [--interpolation none] ...   # see bench.tail
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.stack import tiny_stack


def metric(api: str, name: str) -> float:
    """The value of one sample of /metrics (0 when absent)."""
    for family in text_string_to_metric_families(httpx.get(f"{api}/metrics", timeout=30).text):
        for s in family.samples:
            if s.name == name:
                return float(s.value)
    return 0.0


def work_seconds(api: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{api}/metrics", timeout=30).text):
        for s in family.samples:
            if s.name in ("stepanim_render_step_seconds_sum", "stepanim_encode_seconds_sum"):
                total += s.value
    return total


def main() -> None:
    if "--tail" in sys.argv:  # last frame stored -> video URL, streaming against post hoc (bench.tail)
        from bench.tail import main as tail

        sys.argv.remove("--tail")
        tail()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        stack = tiny_stack(Path(tmp))
        try:
            stack.start()
            api = stack.api_url
            ratios = []
            for n in range(args.jobs + 1):  # the first one warms the pipeline cache up
                before = work_seconds(api)
                body = {
                    "prompt": f"overhead {n}",
                    "steps": args.steps,
                    "width": 64,
                    "height": 64,
                    "seed": n,
                    "animation": {"duration": 2, "codec": "h264"},
                }
                job_id = httpx.post(f"{api}/animations", json=body, timeout=30).json()["id"]
                while (job := httpx.get(f"{api}/animations/{job_id}", timeout=30).json())["status"] not in (
                    "succeeded",
                    "failed",
                ):
                    time.sleep(0.02)
                assert job["status"] == "succeeded", job["error"]
                total = (
                    datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["created_at"])
                ).total_seconds()
                work = work_seconds(api) - before
                if n == 0:
                    continue
                ratios.append(total / work)
                print(f"job {n}: total {total:.3f}s  render+encode {work:.3f}s  overhead {total / work:.3f}x")
            print(f"median overhead: {statistics.median(ratios):.3f}x over {args.jobs} jobs of {args.steps} steps")
        finally:
            stack.stop()


if __name__ == "__main__":
    main()

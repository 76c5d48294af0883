"""Load benchmark: many jobs submitted at once to the tiny model; all accepted, all
terminal, none lost. Prints wall time and throughput per render worker.

Starts a private redis-server, the API, N render workers (one process each), one
encoder, the notify worker and the reconciler, with local storage and the tiny
random-weight model (built into a temporary folder).

    python -m bench.load [--jobs 200] [--render-workers 1] [--clients 50]

``--jobs 1000`` is the issue's figure; 200 is the default. On a small machine the API,
the workers, redis and this client share the cores. "Lost" means accepted (202) and not
terminal at the end, or a terminal job without its video.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.stack import tiny_stack

TERMINAL = {"succeeded", "failed", "canceled"}


def job_body(n: int) -> dict[str, object]:
    return {
        "prompt": f"load {n}",
        "steps": 4,
        "width": 64,
        "height": 64,
        "seed": n,
        "animation": {"duration": 1, "fps": 10, "codec": "h264"},
    }


def any_open(client: httpx.Client, api: str) -> bool:
    """Whether any job is still queued, rendering or encoding (the listing, a page at a time)."""
    params: dict[str, object] = {"status": ["queued", "rendering", "encoding"], "limit": 1}
    while True:
        page = client.get(f"{api}/animations", params=params).json()  # type: ignore[arg-type]
        if page["data"]:
            return True
        if page["next_cursor"] is None:
            return False
        params["cursor"] = page["next_cursor"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--render-workers", type=int, default=1)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        stack = tiny_stack(Path(tmp), STEPANIM_LOG_LEVEL="WARNING")
        try:
            stack.start_redis()
            stack.start_api()
            for n in range(args.render_workers):
                proc = stack.start_worker("render")
                stack.procs[f"render{n}"] = stack.procs.pop("render")
                del proc
            stack.start_worker("encode")
            stack.start_worker("notify")
            stack.start_reconciler()
            api = stack.api_url

            with httpx.Client(timeout=60) as client:
                # One warm-up job so that model loading is not counted.
                warm = client.post(f"{api}/animations", json=job_body(100_000)).json()["id"]
                while client.get(f"{api}/animations/{warm}").json()["status"] not in TERMINAL:
                    time.sleep(0.2)

                started = time.perf_counter()
                with ThreadPoolExecutor(args.clients) as pool:
                    responses = list(
                        pool.map(lambda n: client.post(f"{api}/animations", json=job_body(n)), range(args.jobs))
                    )
                submitted = time.perf_counter() - started
                statuses = Counter(r.status_code for r in responses)
                ids = [r.json()["id"] for r in responses if r.status_code == 202]

                # Wait without loading the two cores with polls: one listing request every 2 s
                # says whether any job is still open; then every job is read once.
                deadline = time.monotonic() + args.timeout
                while time.monotonic() < deadline and any_open(client, api):
                    time.sleep(2)
                elapsed = time.perf_counter() - started
                jobs = [client.get(f"{api}/animations/{job_id}").json() for job_id in ids]
                final = {job["id"]: job for job in jobs if job["status"] in TERMINAL}
                total_render = sum(float(job["progress"].get("elapsed_seconds") or 0) for job in final.values())

            outcome = Counter(str(job["status"]) for job in final.values())
            lost = len(ids) - len(final)
            without_video = sum(1 for job in final.values() if job["status"] == "succeeded" and not job["video"])
            report = {
                "jobs": args.jobs,
                "accepted": statuses.get(202, 0),
                "http_statuses": dict(statuses),
                "submit_seconds": round(submitted, 2),
                "terminal": dict(outcome),
                "lost": lost,
                "succeeded_without_video": without_video,
                "seconds": round(elapsed, 1),
                "jobs_per_second": round(len(final) / elapsed, 2),
                "render_workers": args.render_workers,
                "jobs_per_second_per_render_worker": round(len(final) / elapsed / args.render_workers, 2),
                "mean_sampling_seconds_per_job": round(total_render / max(len(final), 1), 3),
            }
            print(json.dumps(report, indent=2))
        finally:
            stack.stop()


if __name__ == "__main__":
    main()

"""The tail of a job, streaming against post hoc: last frame stored -> signed video URL published.

    python -m bench.tail [--jobs 10] [--steps 30] [--interpolation none] [--duration 3]
                         [--size 128 --upscale 4] [--step-seconds 0.1] [--rounds 1]

One stack with the tiny model (local storage) runs the same jobs twice in one run: with
``STEPANIM_STREAMING`` off (the encode starts when the render has ended) and on (the stream
task encodes while the frames arrive). For each job, from its event stream (Redis stream
ids are millisecond times): *tail* = the ``succeeded`` status event - the last ``progress``
event (written once that step's frames are stored); *total* = ``finished_at - created_at``;
*encode* = the seconds the encode added to ``stepanim_encode_seconds_sum`` (post hoc: the
whole encode of the same frames); *CPU* = the CPU seconds of the encode and stream workers'
process trees (ffmpeg included) during the job. ``--step-seconds`` makes every denoiser call
that much longer outside the interpreter lock (``bench.slow_render``), as a real model's GPU
step; ``--upscale`` makes 512² frames of the tiny model's 128² image. Medians over the jobs,
after one warm-up job per mode and stack. ``--rounds 2`` runs post hoc, streaming, then
streaming, post hoc (and so on), each with ``--jobs`` jobs: a machine whose speed drifts
during the run then favours neither mode.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import redis

from bench.e2e import metric
from bench.stack import tiny_stack
from stepanim.events import ProgressEvent, StatusEvent, parse_event
from stepanim.keys import Keys

TICKS = 100  # os.sysconf("SC_CLK_TCK") on Linux


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and every live process below it, with their reaped children's."""
    table: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / TICKS)
    found, frontier = {root}, {root}
    while frontier:
        frontier = {pid for pid, (parent, _) in table.items() if parent in frontier} - found
        found |= frontier
    return sum(table[pid][1] for pid in found if pid in table)


def tail_seconds(client: redis.Redis, keys: Keys, job_id: str) -> float:
    last_progress = succeeded = 0
    entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(keys.events(job_id))  # type: ignore[assignment]
    for eid, fields in entries:
        millis = int(eid.decode().split("-")[0])
        event = parse_event(fields[b"data"])
        if isinstance(event, ProgressEvent):
            last_progress = millis
        elif isinstance(event, StatusEvent) and event.status == "succeeded":
            succeeded = millis
    return (succeeded - last_progress) / 1000


def run_mode(args: argparse.Namespace, streaming: bool) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="bench-tail-") as tmp:
        stack = tiny_stack(Path(tmp), STEPANIM_STREAMING="true" if streaming else "false")
        stack.start_redis()
        stack.start_api()
        slow = {"BENCH_STEP_SECONDS": str(args.step_seconds)}
        stack.start_worker("render", app="bench.slow_render", env=slow)
        workers = [stack.start_worker(role) for role in ("encode", "stream", "notify")]
        rows = []
        try:
            api = stack.api_url
            client = redis.Redis.from_url(stack.redis_url)
            keys = Keys("stepanim")
            for n in range(args.jobs + 1):
                encode_before = metric(api, "stepanim_encode_seconds_sum")
                cpu_before = sum(tree_cpu_seconds(w.popen.pid) for w in workers[:2])
                body = {
                    "prompt": f"tail {n}",
                    "steps": args.steps,
                    "width": args.size,
                    "height": args.size,
                    "seed": n,
                    "capture": {"upscale": args.upscale},
                    "animation": {"duration": args.duration, "codec": "h264", "interpolation": args.interpolation},
                }
                job_id = httpx.post(f"{api}/animations", json=body, timeout=30).json()["id"]
                while (job := httpx.get(f"{api}/animations/{job_id}", timeout=30).json())["status"] not in (
                    "succeeded",
                    "failed",
                    "canceled",
                ):
                    time.sleep(0.05)
                assert job["status"] == "succeeded", job["error"]
                time.sleep(0.5)  # the encoder's last CPU (a duplicate encode task returning) lands
                if n == 0:
                    continue
                total = (
                    datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["created_at"])
                ).total_seconds()
                row = {
                    "tail": tail_seconds(client, keys, job_id),
                    "total": total,
                    "encode": metric(api, "stepanim_encode_seconds_sum") - encode_before,
                    "cpu": sum(tree_cpu_seconds(w.popen.pid) for w in workers[:2]) - cpu_before,
                }
                rows.append(row)
                mode = "stream " if streaming else "post-hoc"
                print(
                    f"{mode} job {n}: tail {row['tail']:.3f}s total {row['total']:.3f}s"
                    f" encode {row['encode']:.3f}s encoder CPU {row['cpu']:.2f}s",
                    flush=True,
                )
        finally:
            stack.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--interpolation", choices=["none", "blend", "mci"], default="none")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--upscale", type=int, default=4)
    parser.add_argument("--step-seconds", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of both modes, each other round streaming first")
    args = parser.parse_args()
    post_hoc: list[dict[str, float]] = []
    stream: list[dict[str, float]] = []
    for n in range(args.rounds):
        for streaming in (False, True) if n % 2 == 0 else (True, False):
            (stream if streaming else post_hoc).extend(run_mode(args, streaming=streaming))

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print(
        f"\n{args.jobs * args.rounds} jobs a mode, {args.steps} steps, {args.size * args.upscale}² frames,"
        f" h264 {args.interpolation}, {args.duration:g} s, step {args.step_seconds} s (medians)"
    )
    print("| mode | last frame -> URL | total job | encode (metric) | encoder CPU |")
    for name, rows in (("post hoc", post_hoc), ("streaming", stream)):
        print(
            f"| {name} | {med(rows, 'tail'):.3f} s | {med(rows, 'total'):.3f} s | {med(rows, 'encode'):.3f} s"
            f" | {med(rows, 'cpu'):.2f} s |"
        )
    print(
        f"tail streaming / post-hoc encode: {med(stream, 'tail') / med(post_hoc, 'encode'):.3f}x;"
        f" total: {med(stream, 'total') / med(post_hoc, 'total'):.3f}x;"
        f" encoder CPU: {med(stream, 'cpu') / med(post_hoc, 'cpu'):.3f}x"
    )


if __name__ == "__main__":
    main()

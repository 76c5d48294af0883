"""``make demo``: run the whole service locally, render one animation through the HTTP
API, and print the path of the finished video as the last line of output."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

from stepanim.devstack import ROOT, running
from worker.tiny_model import build_tiny_model

MODELS = ROOT / ".cache" / "models"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompt", default="a lighthouse on a cliff at dawn")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=ROOT / "out")
    args = parser.parse_args()

    print("building the tiny offline model (random weights) ...", flush=True)
    build_tiny_model(MODELS / "tiny-sd")
    workdir = Path(tempfile.mkdtemp(prefix="stepanim-demo-"))
    settings = {
        "STEPANIM_STORAGE_BACKEND": "local",
        "STEPANIM_LOCAL_STORAGE_DIR": str(workdir / "storage"),
        "STEPANIM_MODELS_DIR": str(MODELS),
        "STEPANIM_ALLOW_ANONYMOUS": "true",  # development mode: no API key needed
        "STEPANIM_DEFAULT_MODEL": "tiny-sd",
    }
    print(f"starting redis, api and workers (logs in {workdir / 'logs'}) ...", flush=True)
    with running(workdir, settings) as stack:
        body = {
            "prompt": args.prompt,
            "steps": args.steps,
            "width": args.size,
            "height": args.size,
            "seed": 42,
            "animation": {"duration": args.duration, "codec": "h264"},
        }
        response = httpx.post(f"{stack.api_url}/animations", json=body, timeout=30)
        response.raise_for_status()
        job = response.json()
        print(f"POST /animations -> {response.status_code}, job {job['id']}", flush=True)
        deadline = time.monotonic() + 600
        last = None
        while job["status"] not in ("succeeded", "failed", "canceled"):
            if time.monotonic() > deadline:
                print("timed out waiting for the job", file=sys.stderr)
                return 1
            time.sleep(0.2)
            job = httpx.get(job["urls"]["get"], timeout=30).json()
            line = f"  {job['status']:<9} step {job['progress']['step']}/{job['progress']['total']}"
            if line != last:
                print(line, flush=True)
                last = line
        if job["status"] != "succeeded":
            print(f"job ended {job['status']}: {job['error']}", file=sys.stderr)
            return 1
        video = job["video"]
        args.out.mkdir(parents=True, exist_ok=True)
        target = args.out / video["filename"]
        with httpx.stream("GET", video["url"], timeout=60) as download:
            download.raise_for_status()
            with target.open("wb") as f:
                for chunk in download.iter_bytes():
                    f.write(chunk)
        print(
            f"video: {video['codec']}, {video['duration']:.2f}s, {video['frames']} frames, {video['size_bytes']} bytes",
            flush=True,
        )
    print(target.resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

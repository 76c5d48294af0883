"""``make demo``: run the whole service locally, render one animation through the HTTP
API, and print the path of the finished video as the last line of output.

The default model is the committed emoji model (``models/emoji``, see ``emoji/``): it draws
400 emoji at 32x32, upscaled 4x, so ``--prompt "a rocket"`` shows noise turning into a rocket.
``--model digits`` uses the small digits model (``--prompt "the number 3"``), ``--model tiny-sd``
the random-weight test model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from scripts.devstack import ROOT, demo_models, running

# Small committed models: their size, guidance and enlargement (as in their stepanim.json).
SMALL = {"emoji": (32, 4.0, 4), "digits": (32, 3.0, 4)}


def frame_strip(frames: list[Path], out: Path, *, count: int = 8) -> Path:
    """``count`` frames from first to last, side by side, as one PNG (the README's picture)."""
    picks = sorted({round(i * (len(frames) - 1) / (count - 1)) for i in range(count)})
    images = [np.asarray(Image.open(frames[i]).convert("RGB")) for i in picks]
    gap = np.full((images[0].shape[0], 4, 3), 255, dtype=np.uint8)
    row = np.concatenate([part for image in images for part in (image, gap)][:-1], axis=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(row).save(out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompt", default="a rocket")
    parser.add_argument("--model", default="emoji", help="emoji (the default), digits or tiny-sd (random weights)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, help="image side in pixels (default: 32 for emoji and digits, else 128)")
    parser.add_argument("--upscale", type=int, help="frame enlargement (default: 4 for emoji and digits, else 1)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--source",
        choices=("denoised", "noisy"),
        default="noisy",
        help="what a frame shows: the noisy sample (noise turning into the image; the default here) or the "
        "model's denoised prediction at that step (the service's default)",
    )
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=ROOT / "out")
    parser.add_argument("--strip", type=Path, help="also write a strip of frames, first to last, to this PNG")
    args = parser.parse_args()
    size, guidance, upscale = SMALL.get(args.model, (128, 7.5, 1))

    print("preparing the offline models ...", flush=True)
    models = demo_models()
    workdir = Path(tempfile.mkdtemp(prefix="stepanim-demo-"))
    storage = workdir / "storage"
    settings = {
        "STEPANIM_STORAGE_BACKEND": "local",
        "STEPANIM_LOCAL_STORAGE_DIR": str(storage),
        "STEPANIM_MODELS_DIR": str(models),
        "STEPANIM_ALLOW_ANONYMOUS": "true",  # development mode: no API key needed
        "STEPANIM_DEFAULT_MODEL": args.model,
    }
    print(f"starting redis, api and workers (logs in {workdir / 'logs'}) ...", flush=True)
    with running(workdir, settings) as stack:
        size = args.size or size
        body = {
            "prompt": args.prompt,
            "steps": args.steps,
            "width": size,
            "height": size,
            "seed": args.seed,
            "guidance_scale": guidance,  # the small models were trained for low guidance
            "capture": {"upscale": args.upscale or upscale, "source": args.source},
            "animation": {"duration": args.duration, "codec": "h264"},
        }
        response = httpx.post(f"{stack.api_url}/animations", json=body, timeout=30)
        response.raise_for_status()
        job = response.json()
        print(f"POST /animations -> {response.status_code}, job {job['id']}", flush=True)
        for warning in job.get("warnings") or []:
            print(f"warning: {warning}", flush=True)
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
        if args.strip:
            manifest = json.loads((storage / "jobs" / job["id"] / "manifest.json").read_text())
            frames = [storage / key for key in manifest["images"][0]["frames"]]
            print(f"frame strip: {frame_strip(frames, args.strip)}", flush=True)
    print(target.resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The committed digits model, through the whole service: does the animation show the digit asked for?

API -> render worker -> encoder on the trained model in ``models/digits``. For each digit a
classifier trained on the same data (``digits.classifier``) reads the last frame and the
last frame of the video; its confidence in the requested digit must rise from the first
frames to the last, so the animation really shows the digit emerging from noise.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from digits.classifier import predict_proba
from digits.data import NAMES
from tests.e2e.conftest import Service

WORDINGS = ("the number {w}", "a handwritten {d}", "digit {d}", "a {w}")  # wordings of the training data
STEPS = 20


def read_frames(service: Service, job_id: str) -> np.ndarray:
    assert service.storage_dir is not None
    manifest = json.loads((service.storage_dir / "jobs" / job_id / "manifest.json").read_text())
    keys = manifest["images"][0]["frames"]
    return np.stack([np.asarray(Image.open(service.storage_dir / key).convert("RGB")) for key in keys])


def last_video_frame(url: str, tmp_path: Path) -> np.ndarray:
    video = tmp_path / "video.mp4"
    video.write_bytes(httpx.get(url, timeout=60).content)
    png = tmp_path / "last.png"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-sseof", "-0.1", "-i", str(video), "-frames:v", "1", "-y", str(png)], check=True
    )
    return np.asarray(Image.open(png).convert("RGB"))[None]


@pytest.mark.slow
def test_every_digit_emerges_from_noise(digits_service: Service, tmp_path: Path) -> None:
    jobs = {}
    for digit in range(10):
        prompt = WORDINGS[digit % len(WORDINGS)].format(d=digit, w=NAMES[digit])
        body = {
            "prompt": prompt,
            "width": 32,
            "height": 32,
            "steps": STEPS,
            "scheduler": "euler_a",
            "guidance_scale": 3,
            "seed": 100 + digit,
            "capture": {"upscale": 2, "source": "noisy"},  # noise turning into the digit
            "animation": {"duration": 1},
        }
        response = digits_service.post(body)
        assert response.status_code == 202, response.text
        jobs[digit] = response.json()["id"]

    correct, first, last = [], [], []
    for digit, job_id in jobs.items():
        job = digits_service.wait(job_id, timeout=300)
        assert job["status"] == "succeeded", job["error"]
        frames = read_frames(digits_service, job_id)
        assert frames.shape == (STEPS, 64, 64, 3)  # 32x32 drawn, upscaled 2x
        probs = predict_proba(frames)
        video_last = predict_proba(last_video_frame(job["video"]["url"], tmp_path))[0]
        correct.append(probs[-1].argmax() == digit and video_last.argmax() == digit)
        first.append(float(probs[:3, digit].mean()))
        last.append(float(probs[-3:, digit].mean()))
    report = [
        f"{d}: {f:.2f} -> {la:.2f}{'' if ok else ' (wrong digit)'}"
        for d, (f, la, ok) in enumerate(zip(first, last, correct, strict=True))
    ]
    assert sum(correct) >= 9, f"{sum(correct)}/10 digits drawn as asked: {report}"
    # Noise first, the digit last: confidence in the asked-for digit rises over the run, on average and
    # for most digits one by one (a classifier reads some noise images as a digit with confidence).
    assert np.mean(last) - np.mean(first) >= 0.4, report
    assert sum(la > f + 0.1 for f, la in zip(first, last, strict=True)) >= 7, report

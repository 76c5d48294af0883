"""The committed emoji model, through the whole service: does the animation show the emoji asked for?

API -> render worker -> encoder on the trained model in ``models/emoji``, with the model's own
defaults (32x32 upscaled 4x, noisy-sample frames, from its stepanim.json). Each frame is judged
as ``emoji.evaluate`` judges it: the nearest of the model's training glyphs (``emoji.json``),
so the last frame and the video's last frame must show the asked-for emoji (top-5 at least,
top-1 for most), and its rank must fall from the first frames (noise) to the last.
A prompt with a word the model never saw is accepted with a warning that names the word.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from emoji.evaluate import Judge, TrainingSet
from tests.e2e.conftest import EMOJI_MODEL, Service
from tests.e2e.test_digits_quality import last_video_frame, read_frames

PROMPTS = {
    "a rocket": "rocket",
    "cat face": "cat face",
    "an apple, red": "red apple",
    "the slice of pizza": "slice of pizza",
    "sunflower": "sunflower",
    "a ghost": "ghost",
}
STEPS = 20


@pytest.mark.slow
def test_emoji_emerge_from_noise(emoji_service: Service, tmp_path: Path) -> None:
    training = TrainingSet.of(EMOJI_MODEL)
    judge = Judge(training)
    capabilities = httpx.get(f"{emoji_service.url}/capabilities", timeout=10).json()
    [model] = [m for m in capabilities["models"] if m["name"] == "emoji"]
    assert model["vocabulary_hint"] and "rocket" in model["vocabulary"]

    jobs = {}
    for i, (prompt, name) in enumerate(PROMPTS.items()):
        body = {"prompt": prompt, "steps": STEPS, "scheduler": "euler_a", "seed": 200 + i, "animation": {"duration": 1}}
        response = emoji_service.post(body)
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["warnings"] == [], job["warnings"]
        jobs[prompt] = (job["id"], training.names.index(name))

    top1, top5, first, last = 0, 0, [], []
    for job_id, label in jobs.values():
        job = emoji_service.wait(job_id, timeout=300)
        assert job["status"] == "succeeded", job["error"]
        frames = read_frames(emoji_service, job_id)
        assert frames.shape == (STEPS, 128, 128, 3)  # 32x32 drawn, upscaled 4x (the model's defaults)
        ranks = judge.ranks(frames, np.full(len(frames), label))
        video_rank = judge.ranks(last_video_frame(job["video"]["url"], tmp_path), np.array([label]))[0]
        top1 += int(ranks[-1] == 0 and video_rank == 0)
        top5 += int(ranks[-1] < 5 and video_rank < 5)
        first.append(float(ranks[:3].mean()))
        last.append(float(ranks[-1]))
    report = {p: (f, la) for p, f, la in zip(PROMPTS, first, last, strict=True)}
    assert top5 >= len(PROMPTS) - 1, f"{top5}/{len(PROMPTS)} in the top 5: {report}"
    assert top1 >= len(PROMPTS) - 2, f"{top1}/{len(PROMPTS)} drawn as asked: {report}"
    # Noise first (ranked among hundreds of training glyphs), the asked-for emoji last.
    assert np.median(first) > 20 and np.median(last) <= 1, report


@pytest.mark.slow
def test_unknown_words_get_a_warning(emoji_service: Service) -> None:
    response = emoji_service.post({"prompt": "a bulldozer", "steps": 2, "animation": {"duration": 1}})
    assert response.status_code == 202, response.text
    [warning] = response.json()["warnings"]
    assert "'bulldozer'" in warning and "emoji" in warning
    assert emoji_service.wait(response.json()["id"], timeout=300)["status"] == "succeeded"

"""Encoding one job: fetch its frames, encode, check, publish. Plain code for the task."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from encoder.encode import encode_sequence, sequence_path
from encoder.ffmpeg import CODECS, find_binary
from stepanim.jobs import Job, VideoInfo
from stepanim.naming import manifest_key, video_key, video_name
from stepanim.services import Services


def load_manifest(job_id: str, svc: Services) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(svc.storage.get_bytes(manifest_key(job_id)))
    return data


def encode_job(job: Job, svc: Services) -> VideoInfo:
    settings = svc.settings
    options = job.request.animation
    manifest = load_manifest(job.id, svc)
    animation = manifest["animations"][0]
    frames: list[str] = animation["frames"]
    spec = CODECS[options.codec]
    name = video_name(seed=animation["seed"], prompt=job.request.prompt, ext=spec.ext)
    params = {k: v for k, v in manifest.items() if k != "animations"}
    params["seed"] = animation["seed"]
    params["animation"] = options.model_dump(mode="json")
    with tempfile.TemporaryDirectory(prefix=f"encode-{job.id[:8]}-") as tmp:
        folder = Path(tmp)
        for index, key in enumerate(frames, start=1):
            if index > options.skip_steps:
                svc.storage.download(key, sequence_path(folder, index))
        encoded = encode_sequence(
            folder,
            len(frames),
            options=options,
            output=folder / f"video.{spec.ext}",
            params=params,
            ffmpeg=find_binary("ffmpeg", settings.ffmpeg_path),
            ffprobe=find_binary("ffprobe", settings.ffprobe_path),
            timeout=settings.encode_timeout_seconds,
        )
        key = video_key(job.id, name)
        svc.storage.put_file(key, encoded.path, spec.content_type)
        size = encoded.path.stat().st_size
    return VideoInfo(
        key=key,
        filename=name,
        content_type=spec.content_type,
        codec=options.codec,
        size_bytes=size,
        duration=encoded.probe.duration,
        frames=encoded.probe.frames,
    )

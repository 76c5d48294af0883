"""File names (the extension's scheme) and the storage key layout. Pure functions.

Frames:  ``<batch-count:02><batch-index:02><step:03>-<seed>-<prompt>.<ext>``
Video:   ``<seed>-<prompt>.<ext>``
Keys:    ``jobs/<job-id>/frames/<frame>``, ``jobs/<job-id>/manifest.json``,
         ``jobs/<job-id>/videos/<video>``, ``jobs/<job-id>/renditions/<rendition-id>/<video>``,
         ``jobs/<job-id>/frames.zip``, ``uploads/<upload-id>`` (init images).
         This module is the only place that knows them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata

PROMPT_CHARS = 96
# Names must also fit a file system's 255-byte limit once seed, step and extension
# are added, so the prompt part is cut to this many UTF-8 bytes as well.
PROMPT_BYTES = 200

_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f\x7f]')
_WHITESPACE = re.compile(r"\s+")
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_RENDITION_ID = re.compile(r"^[0-9a-f]{16}$")


def safe_prompt(prompt: str) -> str:
    """Make a prompt safe as part of a file name on any common file system.

    Keeps letters of every script (and emoji), removes path separators, quotes,
    wildcard and control characters, folds white space (newlines included) into one
    space, and cuts to 96 characters and 200 UTF-8 bytes.
    """
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", prompt))
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn"))
    text = _WHITESPACE.sub(" ", _UNSAFE.sub("", text)).strip()
    text = text[:PROMPT_CHARS]
    while len(text.encode("utf-8")) > PROMPT_BYTES:
        text = text[:-1]
    text = text.strip(" .")  # no trailing dots/spaces (Windows), no hidden-file dot
    return text or "untitled"


def frame_name(*, batch_count: int, batch_index: int, step: int, seed: int, prompt: str, ext: str = "png") -> str:
    """``<batch-count:02><batch-index:02><step:03>-<seed>-<prompt>.<ext>``; steps count from 1."""
    return f"{batch_count:02d}{batch_index:02d}{step:03d}-{seed}-{safe_prompt(prompt)}.{ext}"


def video_name(*, seed: int, prompt: str, ext: str) -> str:
    return f"{seed}-{safe_prompt(prompt)}.{ext}"


def check_job_id(job_id: str) -> str:
    if not _JOB_ID.match(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return job_id


def job_prefix(job_id: str) -> str:
    return f"jobs/{check_job_id(job_id)}/"


def frame_key(job_id: str, name: str) -> str:
    return f"{job_prefix(job_id)}frames/{name}"


def manifest_key(job_id: str) -> str:
    return f"{job_prefix(job_id)}manifest.json"


def video_key(job_id: str, name: str) -> str:
    return f"{job_prefix(job_id)}videos/{name}"


def check_upload_id(upload_id: str) -> str:
    if not _JOB_ID.match(upload_id):  # the same form: 32 lowercase hex digits
        raise ValueError(f"not an upload id: {upload_id!r}")
    return upload_id


def upload_key(upload_id: str) -> str:
    """Where an init image (POST /uploads, or base64 in a job) is stored."""
    return f"uploads/{check_upload_id(upload_id)}"


def check_rendition_id(rendition_id: str) -> str:
    if not _RENDITION_ID.match(rendition_id):
        raise ValueError(f"not a rendition id: {rendition_id!r}")
    return rendition_id


def new_rendition_id() -> str:
    return secrets.token_hex(8)


def upfront_rendition_id(job_id: str, index: int) -> str:
    """The id of the ``index``-th rendition asked for at creation: the same on every retry."""
    return hashlib.sha256(f"{check_job_id(job_id)}/rendition/{index}".encode()).hexdigest()[:16]


def rendition_key(job_id: str, rendition_id: str, name: str) -> str:
    return f"{job_prefix(job_id)}renditions/{check_rendition_id(rendition_id)}/{name}"


def frames_archive_name(*, seed: int, prompt: str) -> str:
    return f"{seed}-{safe_prompt(prompt)}-frames.zip"


def frames_archive_key(job_id: str) -> str:
    return f"{job_prefix(job_id)}frames.zip"

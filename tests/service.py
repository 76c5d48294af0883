"""A running stack as the end-to-end and fault tests see it: its API, its records and its stored files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from scripts.devstack import Stack
from tests.conftest import S3Server

TERMINAL = {"succeeded", "failed", "canceled"}


@dataclass
class RunningStack:
    stack: Stack
    storage_dir: Path | None  # the local storage backend's folder
    s3: S3Server | None  # or the S3 server it stores to

    @property
    def url(self) -> str:
        return self.stack.api_url

    def get(self, job_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/animations/{job_id}", timeout=30)
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def stored(self, folder: str = "") -> list[str]:
        """The stored keys under ``folder`` (e.g. ``jobs/<id>/frames/``), sorted."""
        if self.s3 is not None:
            keys = self.s3.keys()
            return [k for k in keys if k.startswith(folder)]
        assert self.storage_dir is not None
        root = self.storage_dir / folder
        return sorted(p.relative_to(self.storage_dir).as_posix() for p in root.rglob("*") if p.is_file())

"""The API in-process (Starlette's TestClient) against a real redis-server, with three keys:
alice and alice2 of tenant acme, bob of tenant globex. No workers: tests drive the job
through ``stepanim.lifecycle`` as the workers would."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api.app import create_app
from stepanim import auth
from stepanim.services import Services
from stepanim.settings import ApiKeyConfig, Settings

KEYS = {"alice": ("acme-1", "acme"), "alice2": ("acme-2", "acme"), "bob": ("globex-1", "globex")}


def token(name: str) -> str:
    return f"sa_test_{name}_" + "x" * 24


def headers(name: str = "alice", **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token(name)}", **{k.replace("_", "-"): v for k, v in extra.items()}}


@dataclass
class Api:
    client: TestClient
    svc: Services

    def post(self, body: dict[str, Any], who: str = "alice", **extra: str) -> Any:
        return self.client.post("/animations", json=body, headers=headers(who, **extra))

    def get(self, path: str, who: str = "alice", **extra: str) -> Any:
        return self.client.get(path, headers=headers(who, **extra))

    def render_queue_length(self) -> int:
        """Render tasks in the queue, once the API's task sender has sent what it was handed."""
        assert self.client.app.state.task_sender.flush()  # type: ignore[attr-defined]
        return int(self.svc.store.redis.llen("render"))

    def job_keys(self) -> list[bytes]:
        """Every key but the rate-limit counters (which count refused requests too)."""
        keys: list[bytes] = self.svc.store.redis.keys("stepanim:*")  # type: ignore[assignment]
        return sorted(k for k in keys if b":rate:" not in k)


def api_settings(redis_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    keys = [
        ApiKeyConfig(id=kid, tenant=tenant, sha256=auth.hash_key(token(name))) for name, (kid, tenant) in KEYS.items()
    ]
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "local_storage_dir": tmp_path / "storage",
        "api_keys": keys,
        "public_base_url": "http://testserver",
        **overrides,
    }
    return Settings(_env_file=None, **values)


@contextlib.contextmanager
def running_api(redis_url: str, tmp_path: Path, **overrides: Any) -> Iterator[Api]:
    settings = api_settings(redis_url, tmp_path, **overrides)
    app = create_app(settings)
    with TestClient(app) as client:
        yield Api(client=client, svc=app.state.services)

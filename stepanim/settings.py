"""One typed settings object for every process (api, render worker, encoder, notify).

Values come from environment variables prefixed ``STEPANIM_`` (or a ``.env`` file).
Nothing reads the environment at import time: call :func:`get_settings` (cached) or
build ``Settings(...)`` explicitly, as the tests do.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-insecure-signing-secret"  # noqa: S105 (refused in production)
DEV_WEBHOOK_SECRET = "whsec_ZGV2LWluc2VjdXJlLXdlYmhvb2stc2VjcmV0"  # noqa: S105 (refused in production)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STEPANIM_", env_file=".env", extra="ignore")

    env: Literal["development", "production"] = Field(
        "development", description="'production' refuses unsafe defaults such as the dev signing secret."
    )

    # Redis: Celery broker and job store.
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field("stepanim", description="Prefix of every Redis key this service writes.")
    job_ttl_seconds: int = Field(7 * 24 * 3600, ge=3600, description="How long finished jobs are kept.")
    visibility_timeout: int = Field(
        3 * 3600, ge=60, description="Seconds before Redis redelivers an unacknowledged task; above the longest job."
    )

    # Object storage.
    storage_backend: Literal["local", "s3"] = "local"
    local_storage_dir: Path = Path("data/storage")
    s3_bucket: str = "stepanim"
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, R2...); None for AWS.")
    s3_public_endpoint_url: str | None = Field(
        None, description="Endpoint used in presigned URLs when clients reach storage by another address."
    )
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None

    # Signed download links.
    signing_secret: str = Field(DEV_SECRET, min_length=16, description="HMAC secret for local download links.")
    public_base_url: str = Field("http://127.0.0.1:8000", description="Base URL clients use to reach the API.")
    url_ttl_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600, description="Lifetime of signed download URLs.")

    # Rendering.
    models_dir: Path = Field(Path(".cache/models"), description="Folder of local models, one sub-folder each.")
    default_model: str = Field(
        "tiny-sd", description="Model used when a request names none: a name in models_dir, a path, or a hub id."
    )
    device: Literal["auto", "cuda", "cpu", "mps"] = "auto"
    pipeline_cache_size: int = Field(2, ge=1, description="Pipelines kept loaded per render worker process.")
    frame_queue_size: int = Field(8, ge=1, description="Captured steps waiting for decode/upload (backpressure).")

    # Encoding.
    ffmpeg_path: str | None = Field(None, description="Explicit ffmpeg binary; else PATH.")
    ffprobe_path: str | None = Field(None, description="Explicit ffprobe binary; else PATH.")
    encode_timeout_seconds: int = Field(1800, ge=10)
    encode_parallelism: int = Field(
        0, ge=0, description="ffmpeg processes one motion-interpolated encode may run at once; 0 = CPU count."
    )

    # Webhooks.
    webhook_secret: str = Field(DEV_WEBHOOK_SECRET, description="Standard Webhooks signing secret (whsec_...).")
    webhook_timeout_seconds: float = Field(10.0, gt=0)
    webhook_max_attempts: int = Field(5, ge=1)

    # Request limits.
    max_steps: int = Field(200, ge=1, le=999, description="Frame names hold three step digits.")
    max_pixels: int = Field(1024 * 1024, ge=64 * 64)
    max_prompt_chars: int = Field(2000, ge=1)

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.env == "production" and self.signing_secret == DEV_SECRET:
            raise ValueError("STEPANIM_SIGNING_SECRET must be set to a private value when STEPANIM_ENV=production")
        if self.env == "production" and self.webhook_secret == DEV_WEBHOOK_SECRET:
            raise ValueError("STEPANIM_WEBHOOK_SECRET must be set to a private value when STEPANIM_ENV=production")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()

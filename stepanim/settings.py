"""One typed settings object for every process (api, render worker, encoder, notify).

Values come from environment variables prefixed ``STEPANIM_`` (or a ``.env`` file).
Nothing reads the environment at import time: call :func:`get_settings` (cached) or
build ``Settings(...)`` explicitly, as the tests do.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-insecure-signing-secret"  # noqa: S105 (refused in production)
DEV_WEBHOOK_SECRET = "whsec_ZGV2LWluc2VjdXJlLXdlYmhvb2stc2VjcmV0"  # noqa: S105 (refused in production)
ANONYMOUS_KEY_ID = "dev"  # the key id and tenant of requests without a key, in development mode only

# Standard Webhooks' suggested schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about 27.6 h in all).
DEFAULT_WEBHOOK_RETRY_SCHEDULE = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


class ApiKeyConfig(BaseModel):
    """One API key, as configured: only the SHA-256 of the key is kept (``python -m stepanim.auth new-key``)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Public name of the key (in logs).")
    tenant: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Owner of the key's jobs.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the secret key.")
    webhook_secret: str | None = Field(
        None, description="Initial whsec_ secret that signs this key's webhooks; generated on first use when unset."
    )

    @model_validator(mode="after")
    def _not_reserved(self) -> ApiKeyConfig:
        if self.id == ANONYMOUS_KEY_ID:
            raise ValueError(f"API key id {ANONYMOUS_KEY_ID!r} is reserved for development mode")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STEPANIM_", env_file=".env", extra="ignore")

    env: Literal["development", "production"] = Field(
        "development", description="'production' refuses unsafe defaults such as the dev signing secret."
    )

    # Redis: the job store, and Celery's broker unless broker_url says otherwise.
    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str | None = Field(
        None, description="Celery's broker (redis://..., amqp://...); the job store's Redis when unset."
    )
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
    progress_interval_seconds: float = Field(
        0.25,
        ge=0,
        description="Longest a written frame waits before the job shows it: the render worker writes progress "
        "once per interval (one Redis transaction, an event per step), not once per step.",
    )
    adapters_dir: Path | None = Field(
        None,
        description="Folder of LoRAs (loras/*.safetensors) and textual-inversion embeddings "
        "(embeddings/*.safetensors); default: 'adapters' beside models_dir.",
    )
    max_loras: int = Field(4, ge=0, le=8, description="Most LoRAs one request may name (0: none).")
    max_grid_cells: int = Field(64, ge=1, le=256, description="Most cells (X values x Y values) in one grid.")
    lora_cache_size: int = Field(
        8, ge=1, description="LoRAs kept loaded per pipeline per render worker process (least recently used go)."
    )
    taesd_path: Path | None = Field(
        None,
        description="Folder of the TAESD weights (AutoencoderTiny, madebyollin/taesd) for SD 1.x/2.x latents; "
        "default <models_dir>/taesd.",
    )
    taesdxl_path: Path | None = Field(
        None,
        description="Folder of the TAESDXL weights (madebyollin/taesdxl) for SDXL latents; "
        "default <models_dir>/taesdxl.",
    )
    taesd3_path: Path | None = Field(
        None,
        description="Folder of the TAESD3 weights (madebyollin/taesd3) for SD3/SD3.5 latents; "
        "default <models_dir>/taesd3.",
    )
    taef1_path: Path | None = Field(
        None,
        description="Folder of the TAEF1 weights (madebyollin/taef1) for FLUX.1 latents; default <models_dir>/taef1.",
    )

    # Encoding.
    ffmpeg_path: str | None = Field(None, description="Explicit ffmpeg binary; else PATH.")
    ffprobe_path: str | None = Field(None, description="Explicit ffprobe binary; else PATH.")
    encode_timeout_seconds: int = Field(1800, ge=10)
    encode_parallelism: int = Field(
        0, ge=0, description="ffmpeg processes one motion-interpolated encode may run at once; 0 = CPU count."
    )
    streaming: bool = Field(
        True,
        description="Encode while the frames arrive: a job's stream task (queue 'stream') starts with its render, "
        "so only the tail is left at the last step; off: every video is encoded after its render.",
    )

    # Webhooks.
    webhook_secret: str = Field(DEV_WEBHOOK_SECRET, description="Standard Webhooks signing secret (whsec_...).")
    webhook_timeout_seconds: float = Field(10.0, gt=0)
    webhook_retry_schedule: list[float] = Field(
        default_factory=lambda: list(DEFAULT_WEBHOOK_RETRY_SCHEDULE),
        description="Seconds before each retry of a terminal event (the Standard Webhooks schedule: ~27.6 h).",
    )
    webhook_retry_jitter: float = Field(0.2, ge=0, le=1, description="Each delay is stretched by up to this share.")
    webhook_max_retry_after: float = Field(
        24 * 3600.0, gt=0, description="Longest Retry-After of a receiver that is honoured."
    )
    webhook_progress_interval_seconds: float = Field(
        2.0, ge=0, description="At most one animation.progress webhook per job in this many seconds."
    )
    webhook_secret_grace_seconds: int = Field(
        24 * 3600, ge=0, description="After a rotation, the old secret also signs deliveries for this long."
    )

    # Outbound calls (webhooks, init images): the SSRF guard's allow-list.
    outbound_allow: list[str] = Field(
        default_factory=list,
        description="Hosts, addresses or networks (CIDR) that may be called although not public (development, tests).",
    )
    init_image_fetch_timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="Time limit for fetching an init_image.url when a job is created."
    )

    # API keys and tenants.
    api_keys: list[ApiKeyConfig] = Field(default_factory=list, description="Bearer API keys (JSON list).")
    allow_anonymous: bool = Field(
        False, description="Development mode: requests without a key act as tenant 'dev'. Refused in production."
    )

    # Per-key rate limit and quota; request size; synchronous wait; idempotency.
    rate_limit_per_minute: int = Field(600, ge=1, description="Requests per API key per minute.")
    create_rate_limit_per_minute: int = Field(60, ge=1, description="POST /animations per API key per minute.")
    max_active_jobs: int = Field(10, ge=1, description="Unfinished jobs per API key.")
    max_request_bytes: int = Field(64 * 1024, ge=1024, description="Largest request body (413 above).")
    max_wait_seconds: int = Field(60, ge=0, le=300, description="Longest `Prefer: wait=N` that is honoured.")
    events_max_seconds: float = Field(
        600.0, gt=0, description="Longest life of one live-events connection; clients resume with Last-Event-ID."
    )
    idempotency_ttl_seconds: int = Field(
        24 * 3600, ge=24 * 3600, description="How long an Idempotency-Key is remembered."
    )

    # Request limits.
    max_steps: int = Field(200, ge=1, le=999, description="Frame names hold three step digits.")
    max_pixels: int = Field(1024 * 1024, ge=64 * 64)
    max_prompt_chars: int = Field(2000, ge=1)
    max_upload_bytes: int = Field(10 * 2**20, ge=1024, description="Largest init image file accepted.")
    max_upload_pixels: int = Field(4096 * 4096, ge=64 * 64, description="Largest init image (width x height).")

    # Fault tolerance (stepanim/reconcile.py) and shutdown; see docs/scaling.md.
    lease_seconds: int = Field(
        60, ge=1, description="A working render/encode task renews its job's lease; a lease this old means it died."
    )
    reconcile_interval_seconds: float = Field(15.0, gt=0, description="How often the reconciler looks for lost jobs.")
    reconcile_max_requeues: int = Field(
        3, ge=1, description="A job re-enqueued this many times after losing its worker fails as 'lost'."
    )
    task_time_limit_seconds: int = Field(
        3600, ge=10, description="Soft time limit of one render or encode task; keep it below visibility_timeout."
    )
    shutdown_timeout_seconds: float = Field(
        240.0, ge=0, description="On SIGTERM a worker lets its current job finish for this long, then hands it back."
    )

    # What workers publish for the API (stepanim/published.py).
    publish_interval_seconds: float = Field(
        30.0,
        gt=0,
        description="How often workers re-publish their capabilities and models (they expire a little after; a "
        "missing value is published again within a second, e.g. after a Redis restart).",
    )

    # Logs.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = Field("json", description="One JSON object per line, with job_id.")
    max_duration_seconds: float = Field(120.0, gt=0, description="Longest animation.duration accepted.")
    max_batch_size: int = Field(8, ge=1, le=8, description="Most images per job (batch_size), one animation each.")

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.env == "production" and self.signing_secret == DEV_SECRET:
            raise ValueError("STEPANIM_SIGNING_SECRET must be set to a private value when STEPANIM_ENV=production")
        if self.env == "production" and self.webhook_secret == DEV_WEBHOOK_SECRET:
            raise ValueError("STEPANIM_WEBHOOK_SECRET must be set to a private value when STEPANIM_ENV=production")
        if self.visibility_timeout <= self.task_time_limit_seconds + 60:
            # Redis redelivers an unacknowledged task after visibility_timeout: a task allowed to run
            # longer would be delivered twice while it still runs.
            raise ValueError(
                f"STEPANIM_VISIBILITY_TIMEOUT ({self.visibility_timeout}) must exceed "
                f"STEPANIM_TASK_TIME_LIMIT_SECONDS ({self.task_time_limit_seconds}) by more than 60 seconds"
            )
        if self.env == "production" and self.allow_anonymous:
            raise ValueError("STEPANIM_ALLOW_ANONYMOUS (development mode without keys) is refused in production")
        if any(d < 0 for d in self.webhook_retry_schedule):
            raise ValueError("webhook_retry_schedule: delays must not be negative")
        return self

    @property
    def adapters_path(self) -> Path:
        """The adapters folder: ``adapters_dir``, else ``adapters`` beside ``models_dir``."""
        return self.adapters_dir or self.models_dir.parent / "adapters"

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or self.redis_url


@lru_cache
def get_settings() -> Settings:
    return Settings()

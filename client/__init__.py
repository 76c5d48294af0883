"""Python client of the Steps Animation Service, and the ``stepanim`` command line (``client.cli``).

Needs only httpx and pydantic: importing it never imports torch, diffusers or Celery.

    from client import Client

    with Client("http://127.0.0.1:8000", api_key="sa_...") as api:
        job = api.create({"prompt": "a lighthouse on a cliff at dawn", "steps": 30})
        job = api.wait(job.id, timeout=600, on_event=print)
        if job.video is not None:
            api.download(job.video.url, "lighthouse.mp4")

A grid (every combination of an X and a Y axis's values, one video of them all):

        grid = api.create_grid({"prompt": "a lighthouse", "steps": 20}, ("scheduler", ["euler_a", "ddim"]))
        grid = api.wait_grid(grid.id, timeout=900)
        api.download_grid(grid, "grid.mp4")

``AsyncClient`` has the same methods for asyncio.
"""

from client._core import DEFAULT_URL, Event, RetryPolicy, SSEDecoder, parse_retry_after
from client.aio import AsyncClient
from client.errors import ApiError, ConnectionFailed, EventStreamUnavailable, StepanimError, WaitTimeout
from client.models import (
    Animation,
    AnimationCreate,
    AnimationList,
    AnimationOptions,
    AnimationPublic,
    CaptureOptions,
    Grid,
    GridAxis,
    GridCreate,
    GridPublic,
    InitImage,
    RenditionPublic,
    UploadPublic,
    VideoOptions,
    WebhookPayload,
)
from client.sync import Client

__all__ = [
    "DEFAULT_URL",
    "Animation",
    "AnimationCreate",
    "AnimationList",
    "AnimationOptions",
    "AnimationPublic",
    "ApiError",
    "AsyncClient",
    "CaptureOptions",
    "Client",
    "ConnectionFailed",
    "Event",
    "EventStreamUnavailable",
    "Grid",
    "GridAxis",
    "GridCreate",
    "GridPublic",
    "InitImage",
    "RenditionPublic",
    "RetryPolicy",
    "SSEDecoder",
    "StepanimError",
    "UploadPublic",
    "VideoOptions",
    "WaitTimeout",
    "WebhookPayload",
    "parse_retry_after",
]

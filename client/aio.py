"""``AsyncClient``: the asyncio client (httpx); the same methods as ``Client``, awaitable."""

from __future__ import annotations

import asyncio
import builtins
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from client import _core
from client._core import Event, RetryPolicy
from client.errors import ApiError, ConnectionFailed, EventStreamUnavailable, StepanimError, WaitTimeout
from client.models import (
    AnimationCreate,
    AnimationList,
    AnimationPublic,
    CapabilitiesPublic,
    FramesPublic,
    GridPublic,
    RenditionPublic,
    UploadPublic,
    VideoOptions,
    WebhookSecrets,
)

EventCallback = Callable[[Event], Awaitable[None] | None]


class AsyncClient:
    """The asyncio twin of ``client.Client``: same arguments, same methods, same retries and errors.

    >>> async with AsyncClient("http://127.0.0.1:8000") as api:  # doctest: +SKIP
    ...     job = await api.create({"prompt": "a lighthouse"})
    ...     async for event in api.events(job.id):
    ...         print(event.event, event.data)
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        on_retry: _core.OnRetry | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("STEPANIM_URL") or _core.DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("STEPANIM_API_KEY") or None
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry
        self._http = httpx.AsyncClient(
            timeout=timeout, headers={"User-Agent": _core.USER_AGENT}, transport=transport, follow_redirects=False
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # Plumbing

    async def _send(
        self,
        method: str,
        path_or_url: str,
        *,
        idempotent: bool,
        auth: bool = True,
        stream: bool = False,
        timeout: httpx.Timeout | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        url = path_or_url if "://" in path_or_url else f"{self.url}{path_or_url}"
        headers = {**(_core.auth_headers(self.api_key) if auth else {}), **kwargs.pop("headers", {})}
        tries = 0
        while True:
            tries += 1
            request = self._http.build_request(
                method, url, headers=headers, timeout=timeout or httpx.USE_CLIENT_DEFAULT, **kwargs
            )
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as e:
                delay = self.retry.delay(tries, None) if _core.retryable_exception(e, idempotent=idempotent) else None
                if delay is None:
                    raise ConnectionFailed(f"{method} {url}: {type(e).__name__}: {e}") from e
                await self._wait_retry(f"{method} {url}", delay, type(e).__name__)
                continue
            if response.status_code < 400:
                return response
            await response.aread()
            await response.aclose()
            error = _core.api_error(response)
            retryable = _core.retryable_response(response, self.retry, error)
            delay = self.retry.delay(tries, error.retry_after) if retryable else None
            if delay is None:
                raise error
            await self._wait_retry(f"{method} {url}", delay, f"HTTP {response.status_code} {error.code}")

    async def _wait_retry(self, what: str, delay: float, why: str) -> None:
        if self.on_retry is not None:
            self.on_retry(what, delay, why)
        await asyncio.sleep(delay)

    async def _json(self, method: str, path: str, *, idempotent: bool, **kwargs: Any) -> Any:
        response = await self._send(method, path, idempotent=idempotent, **kwargs)
        return response.json()

    # Animations

    async def create(
        self, request: AnimationCreate | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> AnimationPublic:
        """POST /animations with an ``Idempotency-Key`` (a new UUID unless given): retries never start a second job."""
        key = idempotency_key or str(uuid.uuid4())
        body = _core.create_body(request)
        data = await self._json("POST", "/animations", idempotent=True, json=body, headers={"Idempotency-Key": key})
        return AnimationPublic.model_validate(data)

    submit = create

    async def get(self, animation_id: str) -> AnimationPublic:
        return AnimationPublic.model_validate(await self._json("GET", f"/animations/{animation_id}", idempotent=True))

    async def cancel(self, animation_id: str) -> AnimationPublic:
        data = await self._json("POST", f"/animations/{animation_id}/cancel", idempotent=True)
        return AnimationPublic.model_validate(data)

    async def create_rendition(
        self, animation_id: str, options: VideoOptions | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> RenditionPublic:
        """POST /animations/{id}/renditions with an ``Idempotency-Key``: retries never make a second video."""
        body = _core.rendition_body(options)
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        path = f"/animations/{animation_id}/renditions"
        data = await self._json("POST", path, idempotent=True, json=body, headers=headers)
        return RenditionPublic.model_validate(data)

    async def get_rendition(self, animation_id: str, rendition_id: str) -> RenditionPublic:
        return await self._get_rendition(f"/animations/{animation_id}", rendition_id)

    async def _get_rendition(self, owner: str, rendition_id: str) -> RenditionPublic:
        data = await self._json("GET", f"{owner}/renditions/{rendition_id}", idempotent=True)
        return RenditionPublic.model_validate(data)

    async def wait_rendition(
        self, animation_id: str, rendition_id: str, *, timeout: float | None = None, poll_interval: float = 1.0
    ) -> RenditionPublic:
        return await self._wait_rendition(f"/animations/{animation_id}", rendition_id, timeout, poll_interval)

    async def _wait_rendition(
        self, owner: str, rendition_id: str, timeout: float | None, poll_interval: float
    ) -> RenditionPublic:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            rendition = await self._get_rendition(owner, rendition_id)
            if rendition.finished:
                return rendition
            if deadline is not None and time.monotonic() + poll_interval > deadline:
                raise WaitTimeout(rendition_id, timeout or 0, what="rendition")
            await asyncio.sleep(poll_interval)

    async def upload(
        self, file: str | os.PathLike[str] | bytes, *, filename: str | None = None, content_type: str | None = None
    ) -> UploadPublic:
        if isinstance(file, bytes):
            data, name = file, filename or "image"
        else:
            path = Path(file)
            data, name = path.read_bytes(), filename or path.name
        files = {"file": (name, data, content_type or "application/octet-stream")}
        return UploadPublic.model_validate(await self._json("POST", "/uploads", idempotent=True, files=files))

    async def capabilities(self) -> CapabilitiesPublic:
        return CapabilitiesPublic.model_validate(await self._json("GET", "/capabilities", idempotent=True))

    async def webhook_secrets(self) -> WebhookSecrets:
        return WebhookSecrets.model_validate(await self._json("GET", "/webhooks/secret", idempotent=True))

    async def rotate_webhook_secret(self) -> WebhookSecrets:
        return WebhookSecrets.model_validate(await self._json("POST", "/webhooks/secret/rotate", idempotent=False))

    async def frames(self, animation_id: str, *, image: int = 0) -> FramesPublic:
        """GET /animations/{id}/frames: every frame of one image stored so far, with signed URLs."""
        data = await self._json("GET", f"/animations/{animation_id}/frames", idempotent=True, params={"image": image})
        return FramesPublic.model_validate(data)

    async def download_frames(self, animation_id: str, path: str | os.PathLike[str]) -> Path:
        """Save every frame of every image of the job as one zip (GET /animations/{id}/frames.zip)."""
        return await self.download(f"/animations/{animation_id}/frames.zip", path, auth=True)

    async def download_videos(self, job: AnimationPublic, path: str | os.PathLike[str]) -> list[Path]:
        """Save every image's video of a succeeded job: to ``path`` for a single image; for a batch,
        one file per image beside it, named ``<stem>-<seed><suffix>``. Returns the paths in batch order."""
        videos = _core.job_videos(job)
        paths = _core.output_paths(path, [seed for seed, _ in videos])
        return [await self.download(video.url, target) for (_, video), target in zip(videos, paths, strict=True)]

    async def download(self, url: str, path: str | os.PathLike[str], *, auth: bool = False) -> Path:
        """Save a signed URL to ``path`` (no API key is sent with it, unless ``auth``: an API path)."""
        target = Path(path)
        partial = target.with_name(f".{target.name}.part")
        response = await self._send("GET", url, idempotent=True, auth=auth, stream=True)
        try:
            with partial.open("wb") as out:
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
        except httpx.TransportError as e:
            partial.unlink(missing_ok=True)
            raise ConnectionFailed(f"download of {url} broke: {type(e).__name__}: {e}") from e
        finally:
            await response.aclose()
        partial.replace(target)
        return target

    # Events and waiting

    async def events(self, animation_id: str, *, last_event_id: str | None = None) -> AsyncIterator[Event]:
        """The job's server-sent events to its final status, resumed with ``Last-Event-ID`` after a break."""

        async def finished() -> bool:
            return (await self.get(animation_id)).finished

        async for event in self._events(f"/animations/{animation_id}/events", finished, last_event_id):
            yield event

    async def _events(
        self, path: str, finished: Callable[[], Awaitable[bool]], last_event_id: str | None
    ) -> AsyncIterator[Event]:
        decoder = _core.SSEDecoder(last_event_id)
        broken = 0
        while True:
            received = False
            try:
                response = await self._send(
                    "GET",
                    path,
                    idempotent=True,
                    stream=True,
                    headers=_core.stream_headers(decoder.last_event_id),
                    timeout=_core.stream_timeout(None, self.timeout),
                )
                try:
                    if not _core.is_event_stream(response):
                        ctype = response.headers.get("content-type")
                        raise EventStreamUnavailable(f"{path} answered {ctype!r}, not {_core.EVENT_STREAM}")
                    async for line in response.aiter_lines():
                        event = decoder.feed(line)
                        if event is None:
                            continue
                        received, broken = True, 0
                        yield event
                        if event.is_final:
                            return
                finally:
                    await response.aclose()
            except httpx.TransportError as e:
                broken += 1
                if broken >= self.retry.attempts:
                    raise ConnectionFailed(f"event stream {path} broke: {e}") from e
            else:
                if not received and await finished():
                    return
            delay = (decoder.retry or 1000) / 1000 if broken == 0 else self.retry.backoff_delay(broken)
            await asyncio.sleep(delay)

    async def wait(
        self,
        animation_id: str,
        *,
        timeout: float | None = None,
        on_event: EventCallback | None = None,
        poll_interval: float = 1.0,
    ) -> AnimationPublic:
        """Until the job is finished: the event stream, else polling; ``WaitTimeout`` after ``timeout`` seconds.

        ``on_event`` may be a plain function or a coroutine function.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        last: list[AnimationPublic] = []

        async def notify(event: Event) -> None:
            if on_event is not None:
                result = on_event(event)
                if result is not None:
                    await result

        async def follow() -> AnimationPublic:
            try:
                async for event in self.events(animation_id):
                    await notify(event)
                    if event.is_final:
                        break
            except (EventStreamUnavailable, ConnectionFailed):
                pass
            except ApiError as e:
                if e.status < 500 and e.status not in self.retry.statuses:
                    raise
            previous: AnimationPublic | None = None
            while True:
                job = await self.get(animation_id)
                last[:] = [job]
                if job.finished:
                    return job
                if _core.changed(previous, job):
                    await notify(_core.polled_event(job))
                previous = job
                await asyncio.sleep(poll_interval)

        try:
            async with asyncio.timeout_at(deadline):
                return await follow()
        except TimeoutError as e:
            raise WaitTimeout(animation_id, timeout or 0, last[0] if last else None) from e

    # Grids

    async def create_grid(
        self,
        base: AnimationCreate | Mapping[str, Any],
        x: _core.AxisLike,
        y: _core.AxisLike | None = None,
        *,
        allow_partial: bool = False,
        idempotency_key: str | None = None,
    ) -> GridPublic:
        """POST /grids (see ``Client.create_grid``); retries never start a second grid."""
        body = _core.grid_body(base, x, y, allow_partial=allow_partial)
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        data = await self._json("POST", "/grids", idempotent=True, json=body, headers=headers)
        return GridPublic.model_validate(data)

    async def get_grid(self, grid_id: str) -> GridPublic:
        return GridPublic.model_validate(await self._json("GET", f"/grids/{grid_id}", idempotent=True))

    async def cancel_grid(self, grid_id: str) -> GridPublic:
        return GridPublic.model_validate(await self._json("POST", f"/grids/{grid_id}/cancel", idempotent=True))

    async def grid_events(self, grid_id: str, *, last_event_id: str | None = None) -> AsyncIterator[Event]:
        """The grid's server-sent events (``status`` and ``cell``, with ``event.grid``) to its final status."""

        async def finished() -> bool:
            return (await self.get_grid(grid_id)).finished

        async for event in self._events(f"/grids/{grid_id}/events", finished, last_event_id):
            yield event

    async def wait_grid(
        self,
        grid_id: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[GridPublic], Awaitable[None] | None] | None = None,
        poll_interval: float = 1.0,
    ) -> GridPublic:
        """Poll until the grid is finished (see ``Client.wait_grid``); ``on_progress`` may be a coroutine function."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        last: list[GridPublic] = []

        async def follow() -> GridPublic:
            previous: GridPublic | None = None
            while True:
                grid = await self.get_grid(grid_id)
                last[:] = [grid]
                if on_progress is not None and _core.grid_changed(previous, grid):
                    result = on_progress(grid)
                    if result is not None:
                        await result
                if grid.finished:
                    return grid
                previous = grid
                await asyncio.sleep(poll_interval)

        try:
            async with asyncio.timeout_at(deadline):
                return await follow()
        except TimeoutError as e:
            raise WaitTimeout(grid_id, timeout or 0, last[0] if last else None, what="grid") from e

    async def create_grid_rendition(
        self, grid_id: str, options: VideoOptions | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> RenditionPublic:
        """POST /grids/{id}/renditions with an ``Idempotency-Key``: retries never make a second video."""
        body = _core.rendition_body(options)
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        data = await self._json("POST", f"/grids/{grid_id}/renditions", idempotent=True, json=body, headers=headers)
        return RenditionPublic.model_validate(data)

    async def get_grid_rendition(self, grid_id: str, rendition_id: str) -> RenditionPublic:
        return await self._get_rendition(f"/grids/{grid_id}", rendition_id)

    async def wait_grid_rendition(
        self, grid_id: str, rendition_id: str, *, timeout: float | None = None, poll_interval: float = 1.0
    ) -> RenditionPublic:
        return await self._wait_rendition(f"/grids/{grid_id}", rendition_id, timeout, poll_interval)

    async def download_grid(self, grid: GridPublic, path: str | os.PathLike[str]) -> Path:
        """Save a succeeded grid's video to ``path``."""
        if grid.video is None:
            raise StepanimError(f"grid {grid.id} has no video ({grid.status})")
        return await self.download(grid.video.url, path)

    # Listing (last: the method's name shadows the builtin in the class body)

    async def list(
        self, *, status: Iterable[str] | None = None, limit: int = 20, cursor: str | None = None
    ) -> AnimationList:
        params: builtins.list[tuple[str, str | int]] = [("limit", limit)]
        params += [("status", s) for s in status or ()]
        if cursor:
            params.append(("cursor", cursor))
        return AnimationList.model_validate(await self._json("GET", "/animations", idempotent=True, params=params))

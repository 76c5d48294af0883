"""``AsyncClient``: the asyncio client (httpx); the same methods as ``Client``, awaitable."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from client import _core, calls
from client._core import Event, RetryPolicy
from client.calls import AnswerT, Call, RecordT
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


class AsyncClient(_core.ClientBase):
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
        super().__init__(url, api_key=api_key, timeout=timeout, retry=retry, on_retry=on_retry)
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
        url, headers = self._target(path_or_url, auth=auth, headers=kwargs.pop("headers", {}))
        what = f"{method} {url}"
        tries = 0
        while True:
            tries += 1
            request = self._http.build_request(
                method, url, headers=headers, timeout=timeout or httpx.USE_CLIENT_DEFAULT, **kwargs
            )
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as e:
                delay = _core.transport_retry(self.retry, tries, e, idempotent=idempotent, what=what)
                await self._wait_retry(what, delay, type(e).__name__)
                continue
            if response.status_code < 400:
                return response
            await response.aread()
            await response.aclose()
            await self._wait_retry(what, *_core.response_retry(self.retry, tries, response))

    async def _wait_retry(self, what: str, delay: float, why: str) -> None:
        if self.on_retry is not None:
            self.on_retry(what, delay, why)
        await asyncio.sleep(delay)

    async def _call(self, call: Call[AnswerT]) -> AnswerT:
        response = await self._send(call.method, call.path, idempotent=call.idempotent, **call.options())
        return call.parse(response.json())

    # Animations

    async def create(
        self, request: AnimationCreate | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> AnimationPublic:
        """POST /animations with an ``Idempotency-Key`` (a new UUID unless given): retries never start a second job."""
        return await self._call(calls.create(request, idempotency_key))

    submit = create

    async def get(self, animation_id: str) -> AnimationPublic:
        return await self._call(calls.get(animation_id))

    async def cancel(self, animation_id: str) -> AnimationPublic:
        return await self._call(calls.cancel(animation_id))

    async def create_rendition(
        self, animation_id: str, options: VideoOptions | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> RenditionPublic:
        """POST /animations/{id}/renditions with an ``Idempotency-Key``: retries never make a second video."""
        return await self._call(calls.create_rendition(calls.animation_path(animation_id), options, idempotency_key))

    async def get_rendition(self, animation_id: str, rendition_id: str) -> RenditionPublic:
        return await self._call(calls.get_rendition(calls.animation_path(animation_id), rendition_id))

    async def wait_rendition(
        self, animation_id: str, rendition_id: str, *, timeout: float | None = None, poll_interval: float = 1.0
    ) -> RenditionPublic:
        return await self._wait_rendition(calls.animation_path(animation_id), rendition_id, timeout, poll_interval)

    async def _wait_rendition(
        self, owner: str, rendition_id: str, timeout: float | None, poll_interval: float
    ) -> RenditionPublic:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            rendition = await self._call(calls.get_rendition(owner, rendition_id))
            if rendition.finished:
                return rendition
            if deadline is not None and time.monotonic() + poll_interval > deadline:
                raise WaitTimeout(rendition_id, timeout or 0, what="rendition")
            await asyncio.sleep(poll_interval)

    async def upload(
        self, file: str | os.PathLike[str] | bytes, *, filename: str | None = None, content_type: str | None = None
    ) -> UploadPublic:
        return await self._call(calls.upload(file, filename, content_type))

    async def capabilities(self) -> CapabilitiesPublic:
        return await self._call(calls.capabilities())

    async def webhook_secrets(self) -> WebhookSecrets:
        return await self._call(calls.webhook_secrets())

    async def rotate_webhook_secret(self) -> WebhookSecrets:
        return await self._call(calls.rotate_webhook_secret())

    async def frames(self, animation_id: str, *, image: int = 0) -> FramesPublic:
        """GET /animations/{id}/frames: every frame of one image stored so far, with signed URLs."""
        return await self._call(calls.frames(animation_id, image))

    async def download_frames(self, animation_id: str, path: str | os.PathLike[str]) -> Path:
        """Save every frame of every image of the job as one zip (GET /animations/{id}/frames.zip)."""
        return await self.download(f"{calls.animation_path(animation_id)}/frames.zip", path, auth=True)

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
        async for event in self._events(calls.get(animation_id), last_event_id):
            yield event

    async def _events(self, owner: Call[RecordT], last_event_id: str | None) -> AsyncIterator[Event]:
        """The events of ``owner``'s job (or grid), which also says whether it is over when a stream ends
        without the final event."""
        stream = _core.EventStream(f"{owner.path}/events", last_event_id, self.retry)
        while True:
            try:
                options = stream.request(None, self.timeout)
                response = await self._send("GET", stream.path, idempotent=True, stream=True, **options)
                try:
                    stream.check(response)
                    async for line in response.aiter_lines():
                        event = stream.feed(line)
                        if event is None:
                            continue
                        yield event
                        if event.is_final:
                            return
                finally:
                    await response.aclose()
            except httpx.TransportError as e:
                stream.broke(e)
            else:
                if not stream.received and (await self._call(owner)).finished:
                    return
            await asyncio.sleep(stream.pause())

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
        call = calls.create_grid(base, x, y, allow_partial=allow_partial, idempotency_key=idempotency_key)
        return await self._call(call)

    async def get_grid(self, grid_id: str) -> GridPublic:
        return await self._call(calls.get_grid(grid_id))

    async def cancel_grid(self, grid_id: str) -> GridPublic:
        return await self._call(calls.cancel_grid(grid_id))

    async def grid_events(self, grid_id: str, *, last_event_id: str | None = None) -> AsyncIterator[Event]:
        """The grid's server-sent events (``status`` and ``cell``, with ``event.grid``) to its final status."""
        async for event in self._events(calls.get_grid(grid_id), last_event_id):
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
        return await self._call(calls.create_rendition(calls.grid_path(grid_id), options, idempotency_key))

    async def get_grid_rendition(self, grid_id: str, rendition_id: str) -> RenditionPublic:
        return await self._call(calls.get_rendition(calls.grid_path(grid_id), rendition_id))

    async def wait_grid_rendition(
        self, grid_id: str, rendition_id: str, *, timeout: float | None = None, poll_interval: float = 1.0
    ) -> RenditionPublic:
        return await self._wait_rendition(calls.grid_path(grid_id), rendition_id, timeout, poll_interval)

    async def download_grid(self, grid: GridPublic, path: str | os.PathLike[str]) -> Path:
        """Save a succeeded grid's video to ``path``."""
        if grid.video is None:
            raise StepanimError(f"grid {grid.id} has no video ({grid.status})")
        return await self.download(grid.video.url, path)

    # Listing (last: the method's name shadows the builtin in the class body)

    async def list(
        self, *, status: Iterable[str] | None = None, limit: int = 20, cursor: str | None = None
    ) -> AnimationList:
        return await self._call(calls.list_animations(status, limit, cursor))

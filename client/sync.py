"""``Client``: the blocking client (httpx)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
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


class Client(_core.ClientBase):
    """A client of the Steps Animation Service.

    >>> with Client("http://127.0.0.1:8000", api_key="sa_...") as api:  # doctest: +SKIP
    ...     job = api.create({"prompt": "a lighthouse", "steps": 20})
    ...     job = api.wait(job.id, timeout=600)
    ...     api.download(job.video.url, "lighthouse.mp4")

    Calls answered 429 or 503 are retried as ``retry`` says, honouring ``Retry-After``;
    ``create`` sends an ``Idempotency-Key``, so a retried POST never starts a second render.
    Errors raise ``ApiError`` (status, code, message); an unreachable API ``ConnectionFailed``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        on_retry: _core.OnRetry | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key=api_key, timeout=timeout, retry=retry, on_retry=on_retry)
        self._http = httpx.Client(
            timeout=timeout, headers={"User-Agent": _core.USER_AGENT}, transport=transport, follow_redirects=False
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # Plumbing

    def _send(
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
        """One call, retried on 429/503 (and broken connections when ``idempotent``); raises ApiError on errors."""
        url, headers = self._target(path_or_url, auth=auth, headers=kwargs.pop("headers", {}))
        what = f"{method} {url}"
        tries = 0
        while True:
            tries += 1
            request = self._http.build_request(
                method, url, headers=headers, timeout=timeout or httpx.USE_CLIENT_DEFAULT, **kwargs
            )
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as e:
                delay = _core.transport_retry(self.retry, tries, e, idempotent=idempotent, what=what)
                self._wait_retry(what, delay, type(e).__name__)
                continue
            if response.status_code < 400:
                return response
            response.read()
            response.close()
            self._wait_retry(what, *_core.response_retry(self.retry, tries, response))

    def _wait_retry(self, what: str, delay: float, why: str) -> None:
        if self.on_retry is not None:
            self.on_retry(what, delay, why)
        time.sleep(delay)

    def _call(self, call: Call[AnswerT]) -> AnswerT:
        return call.parse(self._send(call.method, call.path, idempotent=call.idempotent, **call.options()).json())

    # Animations

    def create(
        self, request: AnimationCreate | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> AnimationPublic:
        """POST /animations: accept a job (queued). An ``Idempotency-Key`` (a new UUID unless given) makes
        retries safe: the server returns the same job for the same key and body."""
        return self._call(calls.create(request, idempotency_key))

    submit = create

    def get(self, animation_id: str) -> AnimationPublic:
        """GET /animations/{id}: status, progress, error, signed video URL, renditions."""
        return self._call(calls.get(animation_id))

    def cancel(self, animation_id: str) -> AnimationPublic:
        """POST /animations/{id}/cancel (safe to repeat); a finished job raises ApiError 409 ``already_finished``."""
        return self._call(calls.cancel(animation_id))

    def create_rendition(
        self, animation_id: str, options: VideoOptions | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> RenditionPublic:
        """POST /animations/{id}/renditions: another video of a succeeded job's frames. An ``Idempotency-Key``
        (a new UUID unless given) makes retries safe: they never make a second video."""
        return self._call(calls.create_rendition(calls.animation_path(animation_id), options, idempotency_key))

    def get_rendition(self, animation_id: str, rendition_id: str) -> RenditionPublic:
        return self._call(calls.get_rendition(calls.animation_path(animation_id), rendition_id))

    def wait_rendition(
        self, animation_id: str, rendition_id: str, *, timeout: float | None = None, poll_interval: float = 1.0
    ) -> RenditionPublic:
        """Poll a rendition until it succeeded or failed; ``WaitTimeout`` after ``timeout`` seconds."""
        return self._wait_rendition(calls.animation_path(animation_id), rendition_id, timeout, poll_interval)

    def _wait_rendition(
        self, owner: str, rendition_id: str, timeout: float | None, poll_interval: float
    ) -> RenditionPublic:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            rendition = self._call(calls.get_rendition(owner, rendition_id))
            if rendition.finished:
                return rendition
            if deadline is not None and time.monotonic() + poll_interval > deadline:
                raise WaitTimeout(rendition_id, timeout or 0, what="rendition")
            time.sleep(poll_interval)

    def upload(
        self, file: str | os.PathLike[str] | bytes, *, filename: str | None = None, content_type: str | None = None
    ) -> UploadPublic:
        """POST /uploads: store an init image; use its ``id`` as ``init_image.upload_id``."""
        return self._call(calls.upload(file, filename, content_type))

    def capabilities(self) -> CapabilitiesPublic:
        return self._call(calls.capabilities())

    def webhook_secrets(self) -> WebhookSecrets:
        """GET /webhooks/secret: the secret(s) that sign this key's webhooks."""
        return self._call(calls.webhook_secrets())

    def rotate_webhook_secret(self) -> WebhookSecrets:
        return self._call(calls.rotate_webhook_secret())

    def frames(self, animation_id: str, *, image: int = 0) -> FramesPublic:
        """GET /animations/{id}/frames: every frame of one image stored so far, with signed URLs."""
        return self._call(calls.frames(animation_id, image))

    def download_frames(self, animation_id: str, path: str | os.PathLike[str]) -> Path:
        """Save every frame of every image of the job as one zip (GET /animations/{id}/frames.zip)."""
        return self.download(f"{calls.animation_path(animation_id)}/frames.zip", path, auth=True)

    def download_videos(self, job: AnimationPublic, path: str | os.PathLike[str]) -> list[Path]:
        """Save every image's video of a succeeded job: to ``path`` for a single image; for a batch,
        one file per image beside it, named ``<stem>-<seed><suffix>``. Returns the paths in batch order."""
        videos = _core.job_videos(job)
        paths = _core.output_paths(path, [seed for seed, _ in videos])
        return [self.download(video.url, target) for (_, video), target in zip(videos, paths, strict=True)]

    def download(self, url: str, path: str | os.PathLike[str], *, auth: bool = False) -> Path:
        """Save a signed URL (a video, a frame, a zip) to ``path``, via a temporary file beside it.

        Signed URLs carry their own authorization: no API key is sent with them (``auth``: an
        API path that needs the key, such as a job's frames zip).
        """
        target = Path(path)
        partial = target.with_name(f".{target.name}.part")
        response = self._send("GET", url, idempotent=True, auth=auth, stream=True)
        try:
            with partial.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        except httpx.TransportError as e:
            partial.unlink(missing_ok=True)
            raise ConnectionFailed(f"download of {url} broke: {type(e).__name__}: {e}") from e
        finally:
            response.close()
        partial.replace(target)
        return target

    # Events and waiting

    def events(self, animation_id: str, *, last_event_id: str | None = None) -> Iterator[Event]:
        """The job's server-sent events, from its start (or after ``last_event_id``) to its final status.

        A broken or closed connection is resumed with ``Last-Event-ID``, so no event is lost
        or repeated; the iteration ends after the final status event.
        """
        for event in self._events(calls.get(animation_id), last_event_id=last_event_id, deadline=None):
            if event is not None:
                yield event

    def _events(
        self, owner: Call[RecordT], *, last_event_id: str | None, deadline: float | None
    ) -> Iterator[Event | None]:
        """The events of ``owner``'s job (or grid), and None on every other line, keep-alives included (so a
        caller with a deadline gets control back); ``owner`` also says whether it is over, when a stream
        ends without the final event."""
        stream = _core.EventStream(f"{owner.path}/events", last_event_id, self.retry)
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            try:
                options = stream.request(remaining, self.timeout)
                response = self._send("GET", stream.path, idempotent=True, stream=True, **options)
                try:
                    stream.check(response)
                    for line in response.iter_lines():
                        event = stream.feed(line)
                        yield event
                        if event is not None and event.is_final:
                            return
                finally:
                    response.close()
            except httpx.TransportError as e:
                stream.broke(e)
            else:
                # A clean end without the final event: the connection's time limit, or a stream
                # that expired. Nothing more will come when the job is already finished.
                if not stream.received and self._call(owner).finished:
                    return
            delay = stream.pause()
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - time.monotonic()))
            time.sleep(delay)

    def wait(
        self,
        animation_id: str,
        *,
        timeout: float | None = None,
        on_event: Callable[[Event], None] | None = None,
        poll_interval: float = 1.0,
    ) -> AnimationPublic:
        """Block until the job is finished and return it (fresh, with signed URLs).

        Follows the event stream (``on_event`` sees every event); when the stream cannot be
        used it polls ``GET /animations/{id}`` every ``poll_interval`` seconds instead, and
        ``on_event`` gets a ``status`` event whenever the job changed. Raises ``WaitTimeout``
        after ``timeout`` seconds. The job is returned whatever its final status.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for event in self._events(calls.get(animation_id), last_event_id=None, deadline=deadline):
                if event is not None and on_event is not None:
                    on_event(event)
                if event is not None and event.is_final:
                    break
        except (EventStreamUnavailable, ConnectionFailed):
            pass  # poll below
        except ApiError as e:
            if e.status < 500 and e.status not in self.retry.statuses:
                raise
        return self._poll(animation_id, deadline, timeout, on_event, poll_interval)

    def _poll(
        self,
        animation_id: str,
        deadline: float | None,
        timeout: float | None,
        on_event: Callable[[Event], None] | None,
        poll_interval: float,
    ) -> AnimationPublic:
        previous: AnimationPublic | None = None
        while True:
            job = self.get(animation_id)
            if job.finished:
                return job
            if on_event is not None and _core.changed(previous, job):
                on_event(_core.polled_event(job))
            previous = job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(animation_id, timeout or 0, job)
            pause = poll_interval if deadline is None else min(poll_interval, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)

    # Grids

    def create_grid(
        self,
        base: AnimationCreate | Mapping[str, Any],
        x: _core.AxisLike,
        y: _core.AxisLike | None = None,
        *,
        allow_partial: bool = False,
        idempotency_key: str | None = None,
    ) -> GridPublic:
        """POST /grids: every combination of the ``x`` (and ``y``) values applied to ``base`` is a cell,
        an animation job of its own; once all are done the grid video shows them side by side.

        An axis is ``("scheduler", ["euler_a", "ddim"])``, its JSON or a ``GridAxis``. One invalid cell
        refuses the grid: ``ApiError`` 422 whose ``details`` name it (``cells[x,y].field``). An
        ``Idempotency-Key`` (a new UUID unless given) makes retries safe: they never start a second grid.
        """
        return self._call(calls.create_grid(base, x, y, allow_partial=allow_partial, idempotency_key=idempotency_key))

    def get_grid(self, grid_id: str) -> GridPublic:
        """GET /grids/{id}: status, progress (cells and steps done), every cell, the grid video's signed URL."""
        return self._call(calls.get_grid(grid_id))

    def cancel_grid(self, grid_id: str) -> GridPublic:
        """POST /grids/{id}/cancel: the grid and its unfinished cells (safe to repeat); a grid that already
        succeeded or failed raises ApiError 409 ``already_finished``."""
        return self._call(calls.cancel_grid(grid_id))

    def grid_events(self, grid_id: str, *, last_event_id: str | None = None) -> Iterator[Event]:
        """The grid's server-sent events to its final status: ``status`` and ``cell`` events (each with the
        grid as ``event.grid``) and ``rendition`` updates, resumed with ``Last-Event-ID`` after a break."""
        for event in self._events(calls.get_grid(grid_id), last_event_id=last_event_id, deadline=None):
            if event is not None:
                yield event

    def wait_grid(
        self,
        grid_id: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[GridPublic], None] | None = None,
        poll_interval: float = 1.0,
    ) -> GridPublic:
        """Poll the grid until it is finished and return it (whatever its final status).

        ``on_progress`` gets the grid whenever its status, cells done or steps done changed
        (the steps of every cell: its events say only when a cell changes status). Raises
        ``WaitTimeout`` after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        previous: GridPublic | None = None
        while True:
            grid = self.get_grid(grid_id)
            if on_progress is not None and _core.grid_changed(previous, grid):
                on_progress(grid)
            if grid.finished:
                return grid
            previous = grid
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(grid_id, timeout or 0, grid, what="grid")
            pause = poll_interval if deadline is None else min(poll_interval, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)

    def create_grid_rendition(
        self, grid_id: str, options: VideoOptions | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> RenditionPublic:
        """POST /grids/{id}/renditions: another video of a succeeded grid, composed again from its cells' frames."""
        return self._call(calls.create_rendition(calls.grid_path(grid_id), options, idempotency_key))

    def get_grid_rendition(self, grid_id: str, rendition_id: str) -> RenditionPublic:
        return self._call(calls.get_rendition(calls.grid_path(grid_id), rendition_id))

    def wait_grid_rendition(
        self, grid_id: str, rendition_id: str, *, timeout: float | None = None, poll_interval: float = 1.0
    ) -> RenditionPublic:
        """Poll a grid's rendition until it succeeded or failed; ``WaitTimeout`` after ``timeout`` seconds."""
        return self._wait_rendition(calls.grid_path(grid_id), rendition_id, timeout, poll_interval)

    def download_grid(self, grid: GridPublic, path: str | os.PathLike[str]) -> Path:
        """Save a succeeded grid's video to ``path``."""
        if grid.video is None:
            raise StepanimError(f"grid {grid.id} has no video ({grid.status})")
        return self.download(grid.video.url, path)

    # Listing (last: the method's name shadows the builtin in the class body)

    def list(self, *, status: Iterable[str] | None = None, limit: int = 20, cursor: str | None = None) -> AnimationList:
        """GET /animations: this key's tenant's jobs, newest first, a page at a time."""
        return self._call(calls.list_animations(status, limit, cursor))

"""What the sync and the async client share: no I/O here.

Retry decisions (429 and 503 honouring ``Retry-After``, bounded attempts, exponential
backoff with jitter), error parsing, the server-sent events decoder, and request
building.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

from client.errors import ApiError, ConnectionFailed, EventStreamUnavailable
from client.models import (
    TERMINAL_STATUSES,
    AnimationCreate,
    AnimationPublic,
    GridAxis,
    GridCreate,
    GridPublic,
    Limits,
    VideoOptions,
    VideoPublic,
)

DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = "stepanim-client/0.1.0"
EVENT_STREAM = "text/event-stream"
# The server sends a keep-alive comment every 15 s; a read that waits longer means a dead connection.
STREAM_READ_TIMEOUT = 45.0


def job_videos(job: AnimationPublic) -> list[tuple[int, VideoPublic]]:
    """(seed, video) of every image of a succeeded job, in batch order."""
    if job.images and all(image.video is not None for image in job.images):
        return [(image.seed, image.video) for image in job.images if image.video is not None]
    return [(job.seed, job.video)] if job.video is not None else []


def output_paths(output: str | os.PathLike[str], seeds: Sequence[int]) -> list[Path]:
    """Where the videos of ``seeds`` (one per image of a batch) go when asked for ``output``:
    ``output`` itself for one image; for several, ``<stem>-<seed><suffix>`` beside it."""
    target = Path(output)
    if len(seeds) == 1:
        return [target]
    return [target.with_name(f"{target.stem}-{seed}{target.suffix}") for seed in seeds]


def limit_problems(request: AnimationCreate, limits: Limits) -> list[tuple[tuple[str, ...], str]]:
    """What ``request`` sets above a server's limits (``GET /capabilities``), as (field path, why).
    Fields it leaves out get the model's defaults on the server, which fit."""
    given = request.model_dump(exclude_unset=True)
    problems: list[tuple[tuple[str, ...], str]] = []

    def value(*path: str) -> Any:
        found: Any = given
        for part in path:
            found = found.get(part) if isinstance(found, dict) else None
        return found

    for path, limit in (
        (("steps",), limits.max_steps),
        (("batch_size",), limits.max_batch_size),
        (("animation", "duration"), limits.max_duration_seconds),
        (("animation", "fps"), limits.max_fps),
        (("capture", "upscale"), limits.max_upscale),
    ):
        if (set_to := value(*path)) is not None and set_to > limit:
            problems.append((path, f"{set_to:g} is above this server's limit of {limit:g}"))
    for name in ("width", "height"):
        if (side := value(name)) is not None and not limits.min_side <= side <= limits.max_side:
            problems.append(((name,), f"{side} is outside {limits.min_side}-{limits.max_side} pixels"))
    if len(request.prompt) > limits.max_prompt_chars:
        problems.append((("prompt",), f"longer than this server's limit of {limits.max_prompt_chars} characters"))
    return problems


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; None if absent or invalid."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None  # RFC 9110 dates are GMT; a date without a zone is not one
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a request again.

    ``attempts`` bounds the tries of one call (the first included). A ``Retry-After`` is
    honoured exactly; one longer than ``max_retry_after`` ends the retries at once (the
    error carries it). Without one, waits grow from ``backoff`` (doubling, up to
    ``max_backoff``), stretched by up to ``jitter`` at random.
    """

    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    jitter: float = 0.2
    max_retry_after: float = 60.0
    statuses: frozenset[int] = frozenset({429, 503})
    rand: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def backoff_delay(self, tries: int) -> float:
        base: float = min(self.max_backoff, self.backoff * 2 ** max(0, tries - 1))
        return base * (1 + self.jitter * self.rand())

    def delay(self, tries: int, retry_after: float | None) -> float | None:
        """Seconds before the next try after ``tries`` tries, or None to give up."""
        if tries >= self.attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        return self.backoff_delay(tries)


NO_RETRIES = RetryPolicy(attempts=1)

OnRetry = Callable[[str, float, str], None]  # (what, seconds, why): called before each wait


class ClientBase:
    """What ``Client`` and ``AsyncClient`` hold alike (the API, the key, the timeout, the retry
    policy), and where a request goes with which headers."""

    def __init__(
        self,
        url: str | None,
        *,
        api_key: str | None,
        timeout: float,
        retry: RetryPolicy | None,
        on_retry: OnRetry | None,
    ) -> None:
        self.url = (url or os.environ.get("STEPANIM_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("STEPANIM_API_KEY") or None
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry

    def _target(self, path_or_url: str, *, auth: bool, headers: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """The URL of an API path (a full URL stays as it is) and the headers: the API key first when ``auth``."""
        url = path_or_url if "://" in path_or_url else f"{self.url}{path_or_url}"
        return url, {**(auth_headers(self.api_key) if auth else {}), **headers}


def retryable_response(response: httpx.Response, policy: RetryPolicy, error: ApiError | None) -> bool:
    if response.status_code in policy.statuses:
        return True
    # A repeat of an Idempotency-Key whose first request is still being processed: 409 with Retry-After.
    return response.status_code == 409 and error is not None and error.code == "idempotency_conflict"


def retryable_exception(exc: httpx.TransportError, *, idempotent: bool) -> bool:
    """A failed connection sent nothing and is always worth a retry; a broken one only when repeating is safe."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True
    return idempotent


def transport_retry(
    policy: RetryPolicy, tries: int, exc: httpx.TransportError, *, idempotent: bool, what: str
) -> float:
    """Seconds to wait before the next try of ``what`` after its connection failed; ``ConnectionFailed`` if none."""
    delay = policy.delay(tries, None) if retryable_exception(exc, idempotent=idempotent) else None
    if delay is None:
        raise ConnectionFailed(f"{what}: {type(exc).__name__}: {exc}") from exc
    return delay


def response_retry(policy: RetryPolicy, tries: int, response: httpx.Response) -> tuple[float, str]:
    """(seconds to wait, why) before the next try after an error response (read already); its ``ApiError`` if none."""
    error = api_error(response)
    delay = policy.delay(tries, error.retry_after) if retryable_response(response, policy, error) else None
    if delay is None:
        raise error
    return delay, f"HTTP {response.status_code} {error.code}"


def api_error(response: httpx.Response) -> ApiError:
    """The ``ApiError`` of an error response (the API's one shape, or whatever a proxy sent)."""
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    request_id = response.headers.get("x-request-id")
    try:
        body = json.loads(response.content)
        error = body["error"]
        return ApiError(
            response.status_code,
            str(error["code"]),
            str(error["message"]),
            details=list(error.get("details") or []),
            retry_after=retry_after,
            request_id=request_id,
        )
    except (ValueError, KeyError, TypeError):
        text = " ".join(response.text.split())[:200]
        reason = response.reason_phrase or "error"
        return ApiError(
            response.status_code,
            "http_error",
            f"{reason}: {text}" if text else reason,
            retry_after=retry_after,
            request_id=request_id,
        )


def create_body(request: AnimationCreate | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON of POST /animations: only the fields that were set (the server fills in its defaults)."""
    model = request if isinstance(request, AnimationCreate) else AnimationCreate.model_validate(request)
    return model.model_dump(mode="json", exclude_unset=True)


def rendition_body(options: VideoOptions | Mapping[str, Any]) -> dict[str, Any]:
    model = options if isinstance(options, VideoOptions) else VideoOptions.model_validate(options)
    return model.model_dump(mode="json", exclude_unset=True)


AxisLike = GridAxis | Mapping[str, Any] | tuple[str, Sequence[str | int | float]]
"""An axis of a grid: a ``GridAxis``, its JSON, or ``(field, values)``."""


def grid_axis(axis: AxisLike) -> GridAxis:
    if isinstance(axis, GridAxis):
        return axis
    if isinstance(axis, tuple):
        field_name, values = axis
        return GridAxis.model_validate({"field": field_name, "values": list(values)})
    return GridAxis.model_validate(axis)


def grid_body(
    base: AnimationCreate | Mapping[str, Any], x: AxisLike, y: AxisLike | None = None, *, allow_partial: bool = False
) -> dict[str, Any]:
    """The JSON of POST /grids: the base request's fields that were set, the axes, and
    ``allow_partial`` when true (checked by the client's models first: a typo fails here)."""
    body: dict[str, Any] = {"base": create_body(base), "x": grid_axis(x).model_dump(mode="json")}
    if y is not None:
        body["y"] = grid_axis(y).model_dump(mode="json")
    if allow_partial:
        body["allow_partial"] = True
    GridCreate.model_validate(body)
    return body


def grid_changed(previous: GridPublic | None, grid: GridPublic) -> bool:
    """Whether a polled grid moved on: its status, cells done or steps done."""
    if previous is None:
        return True
    before, now = previous.progress, grid.progress
    return (previous.status, before.cells_done, before.steps_done, before.steps_total) != (
        grid.status,
        now.cells_done,
        now.steps_done,
        now.steps_total,
    )


# Server-sent events


@dataclass(frozen=True)
class Event:
    """One server-sent event of ``/animations/{id}/events`` (or ``/grids/{id}/events``); ``data`` is its JSON."""

    event: str
    data: dict[str, Any]
    id: str | None = None

    @property
    def status(self) -> str | None:
        """The new status, for ``status`` events."""
        value = self.data.get("status") if self.event == "status" else None
        return str(value) if value is not None else None

    @property
    def animation(self) -> AnimationPublic | None:
        """The job as of this event, for ``status`` events."""
        raw = self.data.get("animation") if self.event == "status" else None
        return AnimationPublic.model_validate(raw) if isinstance(raw, dict) else None

    @property
    def grid(self) -> GridPublic | None:
        """The grid as of this event, for a grid's ``status`` and ``cell`` events."""
        raw = self.data.get("grid") if self.event in ("status", "cell") else None
        return GridPublic.model_validate(raw) if isinstance(raw, dict) else None

    @property
    def is_final(self) -> bool:
        """The job's (or grid's) last event: a status event with succeeded, failed or canceled."""
        return self.status in TERMINAL_STATUSES


class SSEDecoder:
    """Decodes ``text/event-stream`` lines (without their line ends) into events, as the HTML standard says.

    ``feed`` returns an event when a blank line ends one; ``last_event_id`` and ``retry``
    (milliseconds) keep the latest values the stream set.
    """

    def __init__(self, last_event_id: str | None = None) -> None:
        self.last_event_id = last_event_id
        self.retry: int | None = None
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the server's keep-alive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value or None
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None  # unknown fields are ignored

    def _dispatch(self) -> Event | None:
        data, name = "\n".join(self._data), self._event or "message"
        had_data = bool(self._data)
        self._data, self._event = [], ""
        if not had_data:
            return None
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = {"text": data}
        if not isinstance(parsed, dict):
            parsed = {"value": parsed}
        return Event(event=name, data=parsed, id=self.last_event_id)


def polled_event(job: AnimationPublic) -> Event:
    """A ``status`` event made from a polled job, so that ``on_event`` sees the same shape either way."""
    return Event(event="status", data={"status": job.status, "animation": job.model_dump(mode="json")})


def changed(previous: AnimationPublic | None, job: AnimationPublic) -> bool:
    if previous is None:
        return True
    before = (previous.status, previous.progress.step, previous.progress.total)
    return before != (job.status, job.progress.step, job.progress.total)


def stream_headers(last_event_id: str | None) -> dict[str, str]:
    headers = {"Accept": EVENT_STREAM, "Cache-Control": "no-cache"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return headers


def is_event_stream(response: httpx.Response) -> bool:
    content_type = str(response.headers.get("content-type", ""))
    return content_type.split(";")[0].strip().lower() == EVENT_STREAM


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def stream_timeout(remaining: float | None, connect: float) -> httpx.Timeout:
    """Read timeout of an event stream: past the keep-alive interval, and never past the caller's deadline."""
    read = STREAM_READ_TIMEOUT if remaining is None else max(0.5, min(STREAM_READ_TIMEOUT, remaining))
    return httpx.Timeout(connect=connect, read=read, write=connect, pool=connect)


class EventStream:
    """Following one event stream across reconnections, as both clients do: the request of each
    connection, when to give up, and how long to wait before the next (the clients do the I/O)."""

    def __init__(self, path: str, last_event_id: str | None, policy: RetryPolicy) -> None:
        self.path = path
        self.policy = policy
        self.decoder = SSEDecoder(last_event_id)
        self.broken = 0  # connections broken in a row
        self.received = False  # whether the current connection brought an event

    def request(self, remaining: float | None, connect: float) -> dict[str, Any]:
        """The options of the next connection's GET, resuming after the last event seen."""
        self.received = False
        return {"headers": stream_headers(self.decoder.last_event_id), "timeout": stream_timeout(remaining, connect)}

    def check(self, response: httpx.Response) -> None:
        """``EventStreamUnavailable`` unless the server answered with an event stream."""
        if not is_event_stream(response):
            ctype = response.headers.get("content-type")
            raise EventStreamUnavailable(f"{self.path} answered {ctype!r}, not {EVENT_STREAM}")

    def feed(self, line: str) -> Event | None:
        event = self.decoder.feed(line)
        if event is not None:
            self.received, self.broken = True, 0
        return event

    def broke(self, exc: httpx.TransportError) -> None:
        """The connection broke (opening it was retried already): ``ConnectionFailed`` after too many in a row."""
        self.broken += 1
        if self.broken >= self.policy.attempts:
            raise ConnectionFailed(f"event stream {self.path} broke: {exc}") from exc

    def pause(self) -> float:
        """Seconds before connecting again: what the stream asked (``retry``) after a clean end, else backoff."""
        return (self.decoder.retry or 1000) / 1000 if self.broken == 0 else self.policy.backoff_delay(self.broken)

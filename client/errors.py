"""What the client raises. Every exception is a ``StepanimError``."""

from __future__ import annotations

from typing import Any

from client.models import AnimationPublic, GridPublic


class StepanimError(Exception):
    """Base class of the client's errors."""


class ApiError(StepanimError):
    """The API answered with an error: ``{"error": {"code", "message", "details"}}`` and an HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.retry_after = retry_after
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status} {self.code})"

    def __repr__(self) -> str:
        return f"ApiError(status={self.status}, code={self.code!r}, message={self.message!r})"


class ConnectionFailed(StepanimError):
    """The API could not be reached, or the connection broke, after the retries."""


class EventStreamUnavailable(StepanimError):
    """The event stream cannot be used (e.g. a proxy answered with something else); poll instead."""


class WaitTimeout(StepanimError, TimeoutError):
    """``wait`` (or ``wait_grid``) gave up before the job finished; ``job`` is the last state seen (if any)."""

    def __init__(
        self,
        job_id: str,
        timeout: float,
        job: AnimationPublic | GridPublic | None = None,
        *,
        what: str = "animation",
    ) -> None:
        status = f" (still {job.status})" if job is not None else ""
        super().__init__(f"{what} {job_id} did not finish within {timeout:g}s{status}")
        self.job_id = job_id
        self.timeout = timeout
        self.job = job

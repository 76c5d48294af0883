"""FastAPI dependencies: the process's services, the caller, and the job named in the path."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from fastapi import Depends, Path, Request
from fastapi.security import HTTPBearer

from api.errors import ApiError
from stepanim import auth
from stepanim.admission import Admission, RateLimit
from stepanim.jobs import Job
from stepanim.naming import check_job_id
from stepanim.services import Services
from stepanim.settings import Settings
from stepanim.store import AsyncJobStore, JobNotFound


# Dependencies without I/O are ``async def``: FastAPI would run a plain ``def`` in a thread.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def authenticate(request: Request, svc: Services) -> auth.Principal:
    """The caller, from its API key (or the development tenant when that mode is on)."""
    try:
        return auth.authenticate_header(svc.settings, request.headers.get("authorization"))
    except auth.AuthError as e:
        raise ApiError(401, "unauthorized", str(e), headers={"WWW-Authenticate": 'Bearer realm="stepanim"'}) from e


def rate_limits(settings: Settings, *, creates: bool) -> list[RateLimit]:
    """The key's windows: all requests, and new animations."""
    limits = [RateLimit("all", settings.rate_limit_per_minute, "requests")]
    if creates:
        limits.append(RateLimit("create", settings.create_rate_limit_per_minute, "new animations"))
    return limits


def refuse_if_limited(limits: list[RateLimit], waits: list[float | None]) -> None:
    """429 with Retry-After for the first window that is full."""
    for limit, wait in zip(limits, waits, strict=True):
        if wait is not None:
            raise ApiError(
                429,
                "rate_limited",
                f"more than {limit.limit} {limit.what} a minute for this API key",
                headers=retry_after(wait),
            )


async def get_admission(request: Request) -> Admission:
    admission: Admission = request.app.state.admission
    return admission


AdmissionDep = Annotated[Admission, Depends(get_admission)]


async def get_async_store(request: Request) -> AsyncJobStore:
    store: AsyncJobStore = request.app.state.async_store
    return store


AsyncStoreDep = Annotated[AsyncJobStore, Depends(get_async_store)]


async def rate_limit(admission: Admission, settings: Settings, principal: auth.Principal, *, creates: bool) -> None:
    """Count the request against the key's limits (all requests; new animations too when ``creates``): 429 when over."""
    limits = rate_limits(settings, creates=creates)
    refuse_if_limited(limits, await admission.hit_rates(principal.key_id, limits))


SCHEME_NAME = "ApiKey"  # the security scheme's name in the OpenAPI document


class ApiKeyAuth(HTTPBearer):
    """The dependency that authenticates the caller (``Authorization: Bearer sa_...``) and, unless
    ``counted`` is False, counts the request against the key's rate limit.

    A subclass of ``HTTPBearer``, so that it both declares the scheme in the OpenAPI document
    and does the work. ``POST /animations`` uses it with ``counted=False``: the admission
    script counts that request (``stepanim.admission``).
    """

    def __init__(self, *, counted: bool = True) -> None:
        super().__init__(
            auto_error=False,
            scheme_name=SCHEME_NAME,
            description="An API key: `Authorization: Bearer sa_...` (`python -m stepanim.auth new-key`). "
            "In development mode (`STEPANIM_ALLOW_ANONYMOUS`) any key, or none, acts as tenant `dev`.",
        )
        self.counted = counted

    async def __call__(self, request: Request) -> auth.Principal:  # type: ignore[override]
        svc: Services = request.app.state.services
        principal = authenticate(request, svc)
        if self.counted:
            await rate_limit(request.app.state.admission, svc.settings, principal, creates=False)
        return principal


PrincipalDep = Annotated[auth.Principal, Depends(ApiKeyAuth())]
# The caller of POST /animations, whose request the admission script counts.
CreatorDep = Annotated[auth.Principal, Depends(ApiKeyAuth(counted=False))]


def owned_record(
    svc: Services, principal: auth.Principal, job_id: str, *, kind: Literal["animation", "grid"]
) -> Job | None:
    """The record ``job_id`` names if it is a ``kind`` (animation or grid) of the caller's tenant;
    None for a malformed id, a record that is gone, another tenant's, or one of the other kind
    (all of them 404 to the caller)."""
    try:
        check_job_id(job_id)
    except ValueError:
        return None
    job = svc.store.find(job_id)
    if job is None or job.kind != kind or (job.tenant or auth.ANONYMOUS.tenant) != principal.tenant:
        return None
    return job


def get_job(
    svc: ServicesDep,
    principal: PrincipalDep,
    animation_id: Annotated[
        str, Path(description="The animation's id.", examples=["4f0c1a2b3c4d4e5f8a9b0c1d2e3f4a5b"])
    ],
) -> Job:
    """The job in the path, if it belongs to the caller's tenant (another tenant's job, or a grid, is 404)."""
    job = owned_record(svc, principal, animation_id, kind="animation")
    if job is None:
        raise JobNotFound(animation_id)
    return job


JobDep = Annotated[Job, Depends(get_job)]

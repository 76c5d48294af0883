"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process is up."""  # async: no thread hop for a probe that does nothing
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness", responses={503: {"description": "A dependency is unreachable."}})
def readyz(*, svc: ServicesDep) -> JSONResponse:
    """Redis and object storage are reachable."""
    checks: dict[str, str] = {}
    for name, ping in (("redis", svc.store.ping), ("storage", svc.storage.ping)):
        try:
            ping()
            checks[name] = "ok"
        except Exception as e:  # report, don't raise: this endpoint exists to say what is down
            checks[name] = f"error: {type(e).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )

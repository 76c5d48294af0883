"""FastAPI dependencies: the process's services and the job named in the path."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from stepanim.jobs import Job
from stepanim.naming import check_job_id
from stepanim.services import Services
from stepanim.store import JobNotFound


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_job(
    svc: ServicesDep,
    animation_id: Annotated[
        str, Path(description="The animation's id.", examples=["4f0c1a2b3c4d4e5f8a9b0c1d2e3f4a5b"])
    ],
) -> Job:
    try:
        check_job_id(animation_id)
    except ValueError as e:
        raise JobNotFound(animation_id) from e
    return svc.store.get(animation_id)


JobDep = Annotated[Job, Depends(get_job)]

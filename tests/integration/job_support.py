"""A job stored as the API stores it, for the tests that then play the workers themselves."""

from __future__ import annotations

import uuid
from datetime import timedelta

from stepanim.admission import admit_now
from stepanim.jobs import Job, utcnow
from stepanim.request import AnimationCreate
from stepanim.services import Services


def admitted_job(svc: Services, request: AnimationCreate, *, model: str = "m", seed: int = 1, age: float = 0) -> Job:
    """A new job for ``request``, created ``age`` seconds ago and admitted (``queued``) through
    the API's admission script."""
    created = utcnow() - timedelta(seconds=age)
    job = Job(id=uuid.uuid4().hex, request=request, model=model, seed=seed, created_at=created, updated_at=created)
    admit_now(svc.store, job)
    return job

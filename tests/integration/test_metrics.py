"""/metrics against a real redis-server: what every process recorded, in Prometheus' format."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from stepanim import lifecycle, metrics
from stepanim.jobs import Job
from stepanim.queues import enqueue_encode, enqueue_render, make_celery
from stepanim.request import AnimationCreate
from stepanim.services import Services
from stepanim.settings import Settings
from stepanim.storage import LocalStorage
from stepanim.store import JobStore
from tests.integration.job_support import admitted_job


@pytest.fixture
def svc(redis_url: str, tmp_path: Path) -> Services:
    settings = Settings(_env_file=None, redis_url=redis_url, local_storage_dir=tmp_path)  # type: ignore[call-arg]
    return Services(
        settings=settings,
        store=JobStore.from_url(redis_url),
        storage=LocalStorage(tmp_path, secret="s" * 16, base_url="http://x", ttl_seconds=60),
        celery=make_celery(settings),
    )


def new_job(svc: Services) -> Job:
    return admitted_job(svc, AnimationCreate(prompt="p"))


def scrape(svc: Services) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with TestClient(create_app(svc.settings, services=svc)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_report_jobs_queues_timings_and_failures(svc: Services) -> None:
    queued, rendering, done, broken = (new_job(svc) for _ in range(4))
    enqueue_render(svc.celery, queued.id)
    enqueue_encode(svc.celery, done.id)
    lifecycle.start_rendering(svc, rendering.id)
    lifecycle.start_rendering(svc, done.id)
    lifecycle.start_encoding(svc, done.id, [])
    lifecycle.finish_encoding(svc, done.id, videos=None)
    lifecycle.fail(svc, broken.id, "storage_error", "S3 down")
    metrics.render_finished(svc.store, seconds=2.0, steps=20)  # 0.1 s per step
    metrics.encode_finished(svc.store, seconds=3.0)
    metrics.encode_finished(svc.store, seconds=40.0)

    m = scrape(svc)
    assert m[("stepanim_jobs", (("status", "queued"),))] == 1
    assert m[("stepanim_jobs", (("status", "rendering"),))] == 1
    assert m[("stepanim_jobs", (("status", "encoding"),))] == 0
    assert m[("stepanim_jobs_finished_total", (("status", "succeeded"),))] == 1
    assert m[("stepanim_jobs_finished_total", (("status", "failed"),))] == 1
    assert m[("stepanim_jobs_finished_total", (("status", "canceled"),))] == 0
    assert m[("stepanim_job_errors_total", (("code", "storage_error"),))] == 1
    assert m[("stepanim_queue_depth", (("queue", "render"),))] == 1
    assert m[("stepanim_queue_depth", (("queue", "encode"),))] == 1
    assert m[("stepanim_render_step_seconds_count", ())] == 20
    assert m[("stepanim_render_step_seconds_sum", ())] == pytest.approx(2.0)
    assert m[("stepanim_render_step_seconds_bucket", (("le", "0.05"),))] == 0
    assert m[("stepanim_render_step_seconds_bucket", (("le", "0.1"),))] == 20
    assert m[("stepanim_encode_seconds_count", ())] == 2
    assert m[("stepanim_encode_seconds_bucket", (("le", "5.0"),))] == 1
    assert m[("stepanim_encode_seconds_bucket", (("le", "60.0"),))] == 2
    assert m[("stepanim_encode_seconds_bucket", (("le", "+Inf"),))] == 2


def test_metrics_of_an_empty_service_are_zeros_not_errors(svc: Services) -> None:
    m = scrape(svc)
    assert m[("stepanim_jobs", (("status", "queued"),))] == 0
    assert m[("stepanim_tasks_unacked", ())] == 0
    assert m[("stepanim_render_step_seconds_count", ())] == 0

"""Service metrics, shared by every process through Redis, served by the API at ``/metrics``.

Counters and histograms live in one Redis hash (``Keys.metrics``): a worker adds
to them in one round trip, and whichever API replica is scraped reports the totals of
all processes, with no per-process state to aggregate. Gauges (jobs by status, queue
depths) are read from the truth at scrape time. Field names in the hash are
``name|label=value,...``; histograms keep one field per bucket (not cumulative), plus
``_sum`` and ``_count``.

The exposition uses ``prometheus_client``'s text format; this module imports it only
when a scrape asks, so the workers do not need it.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from typing import Any

from stepanim.broker import Broker
from stepanim.jobs import JobStatus
from stepanim.queues import ENCODE_QUEUE, NOTIFY_QUEUE, RENDER_QUEUE
from stepanim.settings import Settings
from stepanim.store import JobStore

log = logging.getLogger(__name__)

COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "stepanim_jobs_finished": ("Jobs that reached a terminal status.", ("status",)),
    "stepanim_job_errors": ("Failed jobs by error code.", ("code",)),
    "stepanim_task_retries": ("Task retries (storage errors, webhook failures...).", ("task",)),
    "stepanim_storage_errors": ("Storage operations that failed and made a task retry.", ("task",)),
    "stepanim_webhook_failures": ("Webhook delivery attempts that failed (notify/delivery.py).", ()),
    "stepanim_reconciler_requeues": ("Jobs re-enqueued after their worker was lost.", ("stage",)),
    "stepanim_reconciler_runs": ("Reconciler passes (a stalled counter means no reconciler runs).", ()),
}

HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "stepanim_render_step_seconds": (
        "Render time per denoising step (sampling, decoding and storing its frame).",
        (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    ),
    "stepanim_encode_seconds": (
        "Time of one encode (fetch frames, ffmpeg, probe, upload).",
        (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0),
    ),
}

QUEUES = (RENDER_QUEUE, ENCODE_QUEUE, NOTIFY_QUEUE)
OPEN_STATUSES = (JobStatus.queued, JobStatus.rendering, JobStatus.encoding)


def _field(name: str, labels: dict[str, str]) -> str:
    clean = {k: "".join(c if c not in ",=|" else "_" for c in str(v)) for k, v in sorted(labels.items())}
    return f"{name}|" + ",".join(f"{k}={v}" for k, v in clean.items())


def _parse_field(field: str) -> tuple[str, dict[str, str]]:
    name, _, rest = field.partition("|")
    labels = dict(part.split("=", 1) for part in rest.split(",") if "=" in part)
    return name, labels


def bucket_for(buckets: tuple[float, ...], value: float) -> str:
    """The smallest bucket bound holding ``value`` ("+Inf" past the last)."""
    index = bisect.bisect_left(buckets, value)
    return "+Inf" if index == len(buckets) else repr(buckets[index])


# Recording ------------------------------------------------------------------------------
def add(store: JobStore, increments: dict[str, float]) -> None:
    """Add to counters shared by every process (one round trip)."""
    key = store.keys.metrics()
    with store.redis.pipeline(transaction=False) as pipe:
        for name, amount in increments.items():
            pipe.hincrbyfloat(key, name, amount)
        pipe.execute()


def values(store: JobStore) -> dict[str, float]:
    raw: dict[bytes, bytes] = store.redis.hgetall(store.keys.metrics())  # type: ignore[assignment]
    return {k.decode(): float(v) for k, v in raw.items()}


def count(store: JobStore, name: str, amount: float = 1, **labels: str) -> None:
    """Add to a counter; a failure to record is logged, never raised (metrics must not fail a job)."""
    assert name in COUNTERS, name
    try:
        add(store, {_field(name, labels): amount})
    except Exception as e:
        log.warning("metrics: could not record %s: %s", name, e)


def observe(store: JobStore, name: str, value: float, *, times: int = 1) -> None:
    """Record ``times`` observations of ``value`` in a histogram."""
    _, buckets = HISTOGRAMS[name]
    try:
        add(
            store,
            {
                _field(f"{name}_bucket", {"le": bucket_for(buckets, value)}): times,
                _field(f"{name}_sum", {}): value * times,
                _field(f"{name}_count", {}): times,
            },
        )
    except Exception as e:
        log.warning("metrics: could not record %s: %s", name, e)


def render_finished(store: JobStore, *, seconds: float, steps: int) -> None:
    """One render of ``steps`` steps took ``seconds``: ``steps`` observations of the mean per step,
    so that ``_sum / _count`` is exactly the mean seconds per step."""
    if steps > 0:
        observe(store, "stepanim_render_step_seconds", seconds / steps, times=steps)


def encode_finished(store: JobStore, *, seconds: float) -> None:
    observe(store, "stepanim_encode_seconds", seconds)


# Celery hooks -------------------------------------------------------------------------
def install_celery_hooks(settings: Settings) -> None:
    """Count task retries, storage errors and failed webhook attempts (installed by ``stepanim.worker_hooks``)."""
    from celery.signals import task_retry

    from stepanim.storage import StorageError

    store: list[JobStore] = []  # built on first use, in the process that runs the task

    def on_retry(*, sender: Any = None, reason: Any = None, **_: Any) -> None:
        if not store:
            store.append(JobStore.from_url(settings.redis_url, prefix=settings.key_prefix))
        task = str(getattr(sender, "name", "") or "")
        short = task.removeprefix("stepanim.")
        count(store[0], "stepanim_task_retries", task=short)
        if isinstance(getattr(reason, "exc", reason), StorageError):  # reason: celery's Retry, .exc the cause
            count(store[0], "stepanim_storage_errors", task=short)

    task_retry.connect(on_retry, weak=False, dispatch_uid="stepanim.metrics.retry")


# Exposition -----------------------------------------------------------------------------
def collect(store: JobStore, broker: Broker | None) -> list[Any]:
    """The metric families, read from Redis now (queue depths from ``broker`` when it is Redis)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    counted = values(store)
    families: list[Any] = []

    jobs = GaugeMetricFamily("stepanim_jobs", "Jobs not yet finished, by status.", labels=["status"])
    statuses = Counter(job.status for job in store.get_many(store.open_job_ids()) if job is not None)
    for status in OPEN_STATUSES:
        jobs.add_metric([status.value], statuses.get(status, 0))
    families.append(jobs)

    if broker is not None:
        depth = GaugeMetricFamily("stepanim_queue_depth", "Tasks waiting in each queue.", labels=["queue"])
        for queue in QUEUES:
            depth.add_metric([queue], broker.queue_depth(queue))
        families.append(depth)
        families.append(
            GaugeMetricFamily(
                "stepanim_tasks_unacked",
                "Tasks delivered to workers, not yet acknowledged.",
                value=broker.unacked_count(),
            )
        )

    parsed = [(*_parse_field(f), v) for f, v in counted.items()]
    for name, (text, label_names) in COUNTERS.items():
        family = CounterMetricFamily(name, text, labels=list(label_names))
        for series, labels, amount in parsed:
            if series == name:
                family.add_metric([labels.get(n, "") for n in label_names], amount)
        if name == "stepanim_jobs_finished":
            seen = {labels.get("status") for series, labels, _ in parsed if series == name}
            for terminal in ("succeeded", "failed", "canceled"):
                if terminal not in seen:
                    family.add_metric([terminal], 0)
        families.append(family)

    for name, (text, buckets) in HISTOGRAMS.items():
        per_bucket = {labels["le"]: v for series, labels, v in parsed if series == f"{name}_bucket"}
        cumulative = 0.0
        rows = []
        for bound in [*(repr(b) for b in buckets), "+Inf"]:
            cumulative += per_bucket.get(bound, 0.0)
            rows.append((bound, cumulative))
        total = counted.get(_field(f"{name}_sum", {}), 0.0)
        families.append(HistogramMetricFamily(name, text, buckets=rows, sum_value=total))
    return families


def exposition(store: JobStore, broker: Broker | None) -> bytes:
    """``/metrics`` in the Prometheus text format."""
    from prometheus_client import CollectorRegistry, generate_latest

    class _Collector:
        def collect(self) -> list[Any]:
            return collect(store, broker)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry)

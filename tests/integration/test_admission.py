"""Admission of a new job (``stepanim.admission``) against a real redis-server: one script
counts the rate limits, takes the quota place, records the Idempotency-Key and stores the
job, all or nothing; the render task is sent afterwards with Celery's own API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import redis
import redis.asyncio

from stepanim.admission import Admission, Admitted, IdempotencyRequest, RateLimit, admit_now
from stepanim.broker import Broker, message_job
from stepanim.events import StatusEvent
from stepanim.jobs import Job, JobStatus, utcnow
from stepanim.keys import Keys
from stepanim.queues import RENDER_QUEUE, RENDER_TASK, enqueue_render, make_celery
from stepanim.request import AnimationCreate
from stepanim.settings import Settings
from stepanim.store import JobStore

T = TypeVar("T")
TTL = 3600
LIMITS = [RateLimit("all", 5, "requests"), RateLimit("create", 2, "new animations")]


def run(redis_url: str, use: Callable[[Admission], Coroutine[Any, Any, T]]) -> T:
    async def main() -> T:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            return await use(Admission(client, Keys(), ttl=TTL))
        finally:
            await client.aclose()

    return asyncio.run(main())


def new_job(key_id: str = "k1") -> Job:
    now = utcnow()
    return Job(
        id=uuid.uuid4().hex,
        request=AnimationCreate.model_validate({"prompt": "p"}),
        model="m",
        seed=1,
        created_at=now,
        updated_at=now,
        tenant="acme",
        key_id=key_id,
    )


def admit(admission: Admission, job: Job, **kw: Any) -> Coroutine[Any, Any, Admitted]:
    kw.setdefault("max_active", 10)
    return admission.admit(job, **kw)


def active(redis_url: str, key_id: str) -> set[bytes]:
    return redis.Redis.from_url(redis_url).smembers(Keys().active(key_id))  # type: ignore[return-value]


def test_a_job_is_stored_and_indexed_in_one_step_and_its_task_sent_after(redis_url: str) -> None:
    job = new_job()
    admitted = run(redis_url, lambda a: admit(a, job, limits=LIMITS))
    assert admitted == Admitted("created", None, [None, None])
    store = JobStore.from_url(redis_url)
    assert store.get(job.id) == job
    assert store.open_job_ids() == [job.id]
    assert active(redis_url, "k1") == {job.id.encode()}
    assert [e for _, e in store.events(job.id)] == [StatusEvent(status=JobStatus.queued)]
    assert store.list_jobs("acme", limit=10)[0] == [job]
    broker = Broker(store.redis)
    assert broker.queue_depth(RENDER_QUEUE) == 0  # the script stores; the task is sent by the caller
    enqueue_render(make_celery(Settings(_env_file=None, redis_url=redis_url)), job.id)  # type: ignore[call-arg]
    waiting, _ = broker.broker_messages([RENDER_QUEUE])
    assert [message_job(raw) for raw in waiting] == [(RENDER_TASK, job.id)]


def test_tests_and_benchmarks_store_jobs_through_the_same_script(redis_url: str) -> None:
    job = new_job()
    assert admit_now(JobStore.from_url(redis_url), job).outcome == "created"
    store = JobStore.from_url(redis_url)
    assert store.get(job.id) == job and store.open_job_ids() == [job.id]
    assert active(redis_url, "k1") == set()  # no quota without a limit


def test_an_admission_run_twice_is_admitted_once(redis_url: str) -> None:
    """A call retried after its connection broke runs the script again (its first reply was
    lost): the second run finds the job, counts nothing and reports it created."""
    client = redis.Redis.from_url(redis_url)
    job = new_job()
    idem = IdempotencyRequest("acme", "retried", "f" * 64, ttl=86400)
    limits = [RateLimit("all", 5, "requests"), RateLimit("create", 1, "new animations")]

    async def twice(a: Admission) -> list[Admitted]:
        return [await admit(a, job, idempotency=idem, limits=limits) for _ in range(2)]

    first, again = run(redis_url, twice)
    assert first.outcome == again.outcome == "created"  # "create" allows 1: not counted twice
    assert len(JobStore.from_url(redis_url).events(job.id)) == 1
    rate_counts = sorted(int(client.get(k)) for k in client.keys("*:rate:*"))  # type: ignore[arg-type, union-attr]
    assert rate_counts == [1, 1]


def test_refused_admissions_write_nothing_but_the_rate_counters(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    first = new_job()
    assert run(redis_url, lambda a: admit(a, first, max_active=1)).outcome == "created"
    before = sorted(client.keys("*"))  # type: ignore[arg-type]

    over_quota = run(redis_url, lambda a: admit(a, new_job(), max_active=1))
    assert over_quota.outcome == "quota"
    assert sorted(client.keys("*")) == before  # type: ignore[arg-type]

    async def limited(a: Admission) -> list[Admitted]:
        return [await admit(a, new_job(), max_active=1, limits=LIMITS) for _ in range(3)]

    results = run(redis_url, limited)
    assert [r.outcome for r in results] == ["quota", "quota", "rate_limited"]  # counted, then refused
    assert results[2].waits[0] is None and 0 < results[2].waits[1] <= 60  # type: ignore[operator]
    rate_keys = {k for k in client.keys("*") if b":rate:" in k}  # type: ignore[union-attr]
    assert sorted(set(client.keys("*")) - rate_keys) == before  # type: ignore[arg-type, operator]


def test_the_idempotency_key_is_recorded_with_the_job(redis_url: str) -> None:
    idem = IdempotencyRequest("acme", "order-1", "f" * 64, ttl=86400)
    job, again, other = new_job(), new_job(), new_job()

    async def go(a: Admission) -> list[Admitted]:
        return [
            await admit(a, job, idempotency=idem),
            await admit(a, again, idempotency=idem),
            await admit(a, other, idempotency=IdempotencyRequest("acme", "order-1", "0" * 64, ttl=86400)),
        ]

    made, replayed, reused = run(redis_url, go)
    assert made.outcome == "created"
    assert replayed.outcome == "replay" and replayed.record is not None and replayed.record.made == job.id
    assert reused.outcome == "reused"
    assert JobStore.from_url(redis_url).open_job_ids() == [job.id]


def test_a_claimed_key_admits_only_its_claimant_and_a_claim_can_be_given_up(redis_url: str) -> None:
    idem = IdempotencyRequest("acme", "order-2", "f" * 64, ttl=86400)

    async def go(a: Admission) -> tuple[Admitted, Admitted, bool]:
        claimed, record = await a.claim(idem)
        assert record is None and claimed.claim
        stranger = await admit(a, new_job(), idempotency=idem)  # same key and body, no claim: in flight
        claimant = await admit(a, new_job(), idempotency=claimed)
        other = IdempotencyRequest("acme", "order-3", "f" * 64, ttl=86400)
        taken, _ = await a.claim(other)
        await a.release_claim(taken)
        _, after = await a.claim(other)
        return stranger, claimant, after is None

    stranger, claimant, free_again = run(redis_url, go)
    assert stranger.outcome == "in_flight"
    assert claimant.outcome == "created"
    assert free_again

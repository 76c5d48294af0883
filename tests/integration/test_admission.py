"""Admission of a new job (``AsyncJobStore.admit``) and the render message the API writes
itself (``stepanim.queues.task_message``), against a real redis-server."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import redis
import redis.asyncio

from stepanim.jobs import AnimationCreate, Job, utcnow
from stepanim.queues import RENDER_QUEUE, RENDER_TASK, enqueue_render, make_celery, task_message
from stepanim.reconcile import message_job
from stepanim.settings import Settings
from stepanim.store import Admission, AsyncJobStore, IdempotencyRequest, JobStore

T = TypeVar("T")

# What differs between two messages of the same task by nature (ids, the sender, the reply queue).
PER_MESSAGE = {"id", "root_id", "correlation_id", "delivery_tag", "reply_to", "origin", "ignore_result"}


def run(redis_url: str, use: Callable[[AsyncJobStore], Coroutine[Any, Any, T]]) -> T:
    async def main() -> T:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            return await use(AsyncJobStore(client, JobStore.from_url(redis_url)))
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


def shape(value: Any, path: str = "") -> Any:
    """``value`` with the per-message fields blanked, recursively."""
    if isinstance(value, dict):
        return {k: "*" if k in PER_MESSAGE else shape(v, f"{path}.{k}") for k, v in value.items()}
    return value


def test_task_message_is_the_message_send_task_publishes(redis_url: str) -> None:
    app = make_celery(Settings(_env_file=None, redis_url=redis_url))  # type: ignore[call-arg]
    client = redis.Redis.from_url(redis_url)
    enqueue_render(app, "4f0c1a2b3c4d4e5f8a9b0c1d2e3f4a5b")
    theirs = json.loads(client.lpop(RENDER_QUEUE))  # type: ignore[arg-type]
    ours = json.loads(task_message(app, RENDER_TASK, ["4f0c1a2b3c4d4e5f8a9b0c1d2e3f4a5b"], queue=RENDER_QUEUE))
    assert shape(ours) == shape(theirs)  # the same fields, the same values but for the ids
    assert base64.b64decode(ours["body"]) == base64.b64decode(theirs["body"])
    assert ours["headers"]["id"] == ours["headers"]["root_id"] == ours["properties"]["correlation_id"]
    assert ours["properties"]["delivery_tag"] != ours["headers"]["id"]
    assert message_job(json.dumps(ours)) == (RENDER_TASK, "4f0c1a2b3c4d4e5f8a9b0c1d2e3f4a5b")


def admit(store: AsyncJobStore, job: Job, **kw: Any) -> Coroutine[Any, Any, Admission]:
    kw.setdefault("max_active", 10)
    kw.setdefault("idempotency", None)
    message = json.dumps({"job": job.id})
    return store.admit(job, message=message, queue=RENDER_QUEUE, **kw)


def test_a_job_is_stored_indexed_and_queued_in_one_step(redis_url: str) -> None:
    job = new_job()
    admission = run(redis_url, lambda s: admit(s, job, rates=[("all", 5), ("create", 2)]))
    assert admission == Admission("created", None, [None, None])
    store = JobStore.from_url(redis_url)
    assert store.get(job.id) == job
    assert store.open_job_ids() == [job.id]
    assert store.active_jobs("k1") == {job.id}
    assert [e["status"] for _, e in store.events(job.id)] == ["queued"]
    assert store.list_jobs("acme", limit=10)[0] == [job]
    assert store.redis.lrange(RENDER_QUEUE, 0, -1) == [json.dumps({"job": job.id}).encode()]


def test_an_admission_run_twice_is_admitted_once(redis_url: str) -> None:
    """A batch retried after its connection broke runs each script again (its first reply
    was lost): the second run finds the job, counts nothing and reports it created."""
    client = redis.Redis.from_url(redis_url)
    job = new_job()
    idem = IdempotencyRequest("acme", "retried", "f" * 64, ttl=86400)

    async def twice(s: AsyncJobStore) -> list[Admission]:
        return [await admit(s, job, idempotency=idem, rates=[("all", 5), ("create", 1)]) for _ in range(2)]

    first, again = run(redis_url, twice)
    assert first == again == Admission("created", None, [None, None])  # "create" allows 1: not counted twice
    assert client.llen(RENDER_QUEUE) == 1
    assert [e["status"] for _, e in JobStore.from_url(redis_url).events(job.id)] == ["queued"]
    rate_counts = sorted(int(client.get(k)) for k in client.keys("*:rate:*"))  # type: ignore[arg-type, union-attr]
    assert rate_counts == [1, 1]


def test_refused_admissions_write_nothing_but_the_rate_counters(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    first = new_job()
    assert run(redis_url, lambda s: admit(s, first, max_active=1)).outcome == "created"
    before = sorted(client.keys("*"))  # type: ignore[arg-type]

    over_quota = run(redis_url, lambda s: admit(s, new_job(), max_active=1))
    assert over_quota.outcome == "quota"
    assert sorted(client.keys("*")) == before  # type: ignore[arg-type]

    def limited(s: AsyncJobStore) -> Coroutine[Any, Any, list[Admission]]:
        async def go() -> list[Admission]:
            return [await admit(s, new_job(), max_active=1, rates=[("all", 9), ("create", 2)]) for _ in range(3)]

        return go()

    results = run(redis_url, limited)
    assert [r.outcome for r in results] == ["quota", "quota", "rate_limited"]  # counted, then refused
    assert results[2].waits[0] is None and 0 < results[2].waits[1] <= 60  # type: ignore[operator]
    rate_keys = {k for k in client.keys("*") if b":rate:" in k}  # type: ignore[union-attr]
    assert sorted(set(client.keys("*")) - rate_keys) == before  # type: ignore[arg-type, operator]
    assert client.llen(RENDER_QUEUE) == 1


def test_the_idempotency_key_is_recorded_with_the_job(redis_url: str) -> None:
    idem = IdempotencyRequest("acme", "order-1", "f" * 64, ttl=86400)
    job, again, other = new_job(), new_job(), new_job()

    async def go(s: AsyncJobStore) -> list[Admission]:
        return [
            await admit(s, job, idempotency=idem),
            await admit(s, again, idempotency=idem),
            await admit(s, other, idempotency=IdempotencyRequest("acme", "order-1", "0" * 64, ttl=86400)),
        ]

    made, replayed, reused = run(redis_url, go)
    assert made.outcome == "created"
    assert replayed.outcome == "replay" and replayed.record is not None and replayed.record.job_id == job.id
    assert reused.outcome == "reused"
    assert redis.Redis.from_url(redis_url).llen(RENDER_QUEUE) == 1


def test_a_claimed_key_admits_only_its_claimant(redis_url: str) -> None:
    idem = IdempotencyRequest("acme", "order-2", "f" * 64, ttl=86400)

    async def go(s: AsyncJobStore) -> tuple[Admission, Admission]:
        claimed, record = await s.claim(idem)
        assert record is None and claimed.claim
        stranger = await admit(s, new_job(), idempotency=idem)  # same key and body, no claim: in flight
        return stranger, await admit(s, new_job(), idempotency=claimed)

    stranger, claimant = run(redis_url, go)
    assert stranger.outcome == "in_flight"
    assert claimant.outcome == "created"

"""Group commit (``stepanim.group_commit.ScriptBatch``) against a real redis-server."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from redis.exceptions import ConnectionError, ResponseError

from stepanim.devstack import Stack
from stepanim.group_commit import MAX_BATCH, ScriptBatch

# Appends its argument to a list and answers how long the list is; refuses 'bad'.
SCRIPT = """
if ARGV[1] == 'bad' then return redis.error_reply('refused ' .. ARGV[1]) end
return redis.call('RPUSH', KEYS[1], ARGV[1])
"""


class Counted(ScriptBatch):
    """Records the size of each round trip."""

    def __init__(self, client: redis.asyncio.Redis, script: str) -> None:
        super().__init__(client, script)
        self.batches: list[int] = []

    async def _pipeline(self, calls: list[Any]) -> list[Any]:
        self.batches.append(len(calls))
        return await super()._pipeline(calls)


def run(redis_url: str, use: Any) -> Any:
    async def main() -> Any:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            return await use(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_concurrent_calls_share_round_trips_and_each_gets_its_own_reply(redis_url: str) -> None:
    async def use(client: redis.asyncio.Redis) -> None:
        await client.delete("gc:list")
        batch = Counted(client, SCRIPT)
        assert await batch(["gc:list"], ["alone"]) == 1  # an idle batcher sends a call at once, alone ...
        assert batch.batches == [1, 1]  # ... (twice: Redis did not know the script yet)
        replies = await asyncio.gather(*(batch(["gc:list"], [f"v{n}"]) for n in range(100)))
        assert sorted(replies) == list(range(2, 102))  # each call ran once
        assert batch.batches[2:] == [MAX_BATCH, 100 - MAX_BATCH]  # ... in two round trips
        stored = [v.decode() for v in await client.lrange("gc:list", 0, -1)]  # type: ignore[union-attr]
        assert collections.Counter(stored) == collections.Counter(["alone", *(f"v{n}" for n in range(100))])

    run(redis_url, use)


def test_an_error_reply_fails_only_its_own_call(redis_url: str) -> None:
    async def use(client: redis.asyncio.Redis) -> None:
        await client.delete("gc:errors")
        batch = ScriptBatch(client, SCRIPT)
        results = await asyncio.gather(
            batch(["gc:errors"], ["a"]),
            batch(["gc:errors"], ["bad"]),
            batch(["gc:errors"], ["b"]),
            return_exceptions=True,
        )
        assert results[0] in (1, 2) and results[2] in (1, 2)
        assert isinstance(results[1], ResponseError) and "refused bad" in str(results[1])
        assert await client.llen("gc:errors") == 2

    run(redis_url, use)


def test_a_flushed_script_cache_is_reloaded_and_every_call_runs_once(redis_url: str) -> None:
    async def use(client: redis.asyncio.Redis) -> None:
        await client.delete("gc:flush")
        batch = ScriptBatch(client, SCRIPT)
        await batch(["gc:flush"], ["first"])
        await client.script_flush()  # as after a Redis restart: EVALSHA answers NOSCRIPT
        replies = await asyncio.gather(*(batch(["gc:flush"], [f"v{n}"]) for n in range(10)))
        assert sorted(replies) == list(range(2, 12))
        assert await client.llen("gc:flush") == 11

    run(redis_url, use)


def test_a_lost_connection_fails_the_calls_it_carried_and_the_next_call_works(redis_url: str) -> None:
    async def use(client: redis.asyncio.Redis) -> None:
        await client.delete("gc:lost")
        broken = redis.asyncio.Redis(port=1, socket_connect_timeout=1)  # nothing listens there
        try:
            batch = ScriptBatch(broken, SCRIPT)
            results = await asyncio.gather(*(batch(["gc:lost"], ["x"]) for _ in range(3)), return_exceptions=True)
            assert all(isinstance(r, ConnectionError) for r in results)
            assert not batch._waiting and not batch.sending  # nothing left hanging
        finally:
            await broken.aclose()
        batch = ScriptBatch(client, SCRIPT)
        assert await batch(["gc:lost"], ["y"]) == 1

    run(redis_url, use)


def test_a_caller_that_goes_away_does_not_stop_the_others(redis_url: str) -> None:
    async def use(client: redis.asyncio.Redis) -> None:
        await client.delete("gc:cancel")
        batch = ScriptBatch(client, SCRIPT)
        gone = asyncio.ensure_future(batch(["gc:cancel"], ["gone"]))
        stays = asyncio.ensure_future(batch(["gc:cancel"], ["stays"]))
        await asyncio.sleep(0)
        gone.cancel()
        assert await stays in (1, 2)
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert await batch(["gc:cancel"], ["after"]) == 3  # the canceled call's script ran all the same

    run(redis_url, use)


def test_calls_fail_while_redis_is_down_and_work_again_once_it_is_back(tmp_path: Path) -> None:
    """A restarted Redis: the pooled connection is dead and the script cache is empty."""
    stack = Stack(workdir=tmp_path, settings={})
    stack.start_redis()
    try:

        async def use() -> None:
            client = redis.asyncio.Redis(port=stack.redis_port, socket_connect_timeout=1)
            try:
                batch = ScriptBatch(client, SCRIPT)
                assert await batch(["gc:restart"], ["before"]) == 1
                stack.restart_redis(kill=True)  # nothing kept: no AOF in this stack
                assert await batch(["gc:restart"], ["after"]) == 1  # reconnected, script loaded again
                stack.procs["redis"].kill()
                results = await asyncio.gather(
                    *(batch(["gc:restart"], ["x"]) for _ in range(3)), return_exceptions=True
                )
                assert all(isinstance(r, ConnectionError) for r in results), results
                stack.start_redis()
                assert await batch(["gc:restart"], ["back"]) == 1
            finally:
                await client.aclose()

        asyncio.run(use())
    finally:
        stack.stop()

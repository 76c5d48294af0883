"""Group commit: concurrent calls of one Redis script, sent together in one pipeline.

The API's hot path (a POST is one admission script) spends most of its Redis time in
the client library's per-command work (checking out a connection, packing, a round
trip, parsing), not in Redis. :class:`ScriptBatch` queues the calls that arrive while a
batch is in flight and sends them as the next batch, in one round trip: an idle server
sends each call alone (it waits for nothing), a busy one sends many together. Each
caller gets its own reply or its own error; an error of the connection fails the batch
it hit and nothing else. A script call is atomic on its own, so batching changes no
outcome: the calls are not a transaction together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio
from redis.exceptions import NoScriptError, ResponseError

MAX_BATCH = 64  # calls per round trip; more wait for the next one

Call = tuple[Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]  # keys, args, the caller's future


class ScriptBatch:
    """``await batch(keys, args)`` runs the script like ``redis.asyncio``'s registered scripts do
    (EVALSHA, loading the script when Redis does not know it), batched with concurrent calls."""

    def __init__(self, client: redis.asyncio.Redis, script: str) -> None:
        self.client = client
        self.script = client.register_script(script)  # its sha, and the text to load
        self._waiting: list[Call] = []
        self._sender: asyncio.Task[None] | None = None  # held: the event loop keeps only weak references

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((keys, args, future))
        if not self.sending:
            self._sender = asyncio.get_running_loop().create_task(self._send_all())
        return await future

    @property
    def sending(self) -> bool:
        """Whether a batch is on its way (calls made meanwhile go out with the next one)."""
        return self._sender is not None and not self._sender.done()

    async def _send_all(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            try:
                replies = await self._run([(keys, args) for keys, args, _ in batch])
            except Exception as e:  # the connection failed: every call of this batch fails with it
                _fail(batch, e)
                continue
            except BaseException:  # canceled (the app shuts down): so is every waiting call
                _fail(batch + self._waiting, None)
                self._waiting = []
                raise
            for (_, _, future), reply in zip(batch, replies, strict=True):
                if future.done():  # its caller went away; the script ran all the same
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    async def _run(self, calls: list[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        replies = await self._pipeline(calls)
        # NOSCRIPT (a restarted or flushed Redis): those calls did not run; load the script, run them again.
        unknown = [n for n, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if unknown:
            await self.client.script_load(self.script.script)
            for n, reply in zip(unknown, await self._pipeline([calls[n] for n in unknown]), strict=True):
                replies[n] = reply
        return replies

    async def _pipeline(self, calls: list[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """The calls in one write and their replies in order (an error reply in its place), on a
        connection of the client's pool, retried on a broken connection as the client's retry
        policy says (as redis-py's ``Pipeline``, which does the same with more work per call)."""
        commands = [("EVALSHA", self.script.sha, len(keys), *keys, *args) for keys, args in calls]
        pool = self.client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]  # (untyped in redis-py)

        async def send() -> list[Any]:
            await connection.send_packed_command(connection.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as e:
                    replies.append(e)
            return replies

        async def broken(error: Exception) -> None:
            await connection.disconnect()  # the next try reconnects

        try:
            replies: list[Any] = await connection.retry.call_with_retry(send, broken)
            return replies
        except BaseException:
            await connection.disconnect()  # replies may be left unread: the connection must not be reused
            raise
        finally:
            await pool.release(connection)


def _fail(calls: list[Call], error: Exception | None) -> None:
    """Hand ``error`` to each call still waiting (cancel it when None)."""
    for _, _, future in calls:
        if future.done():
            continue
        if error is None:
            future.cancel()
        else:
            future.set_exception(error)

"""Handing batches, and the bytes inside them, from the task that reads to the task that writes.

The reader and the writer run at once, so that fetching the next batch overlaps
writing this one. Whichever side fails, the other must not wait for it forever:
a reader never waits on a queue its writer has stopped reading (it is cancelled
instead, and reports errors without waiting), and a writer waiting for the next
item also watches the reader's outcome, so a failed reader wakes it at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

Item = TypeVar("Item")

STREAM_CHUNKS = 4
"""COPY chunks a stream holds at once: what bounds a streamed batch's memory."""


@asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """A TaskGroup whose failure is raised as the first failed task's own error: that
    says what went wrong (a grant, a NUL in a row…), where the group around it says
    only that a task failed."""
    try:
        async with asyncio.TaskGroup() as group:
            yield group
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None


async def receive(queue: asyncio.Queue[Item], producer: asyncio.Future[Any]) -> Item | None:
    """The next item from ``queue``; None once ``producer`` has finished and left nothing
    behind; the producer's error if it failed."""
    while queue.empty():
        if producer.done():
            producer.result()
            return None
        getter = asyncio.ensure_future(queue.get())
        try:
            await asyncio.wait({getter, producer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
    return queue.get_nowait()


async def stop(task: asyncio.Task[Any], within: float, abort: Callable[[], None]) -> None:
    """Cancel ``task`` and give it ``within`` seconds to unwind; then ``abort`` what it is
    waiting on (its connection), which ends any wait at once, and give it as long again.

    A reader cancelled in the middle of a COPY may otherwise wait on its connection for
    long: the server goes on sending until a cancel request reaches it. Whatever the task
    ends with is of no interest any more, and is marked as seen so that asyncio does not
    report it.
    """
    task.add_done_callback(mark_seen)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=within)
    if not done:
        abort()
        await asyncio.wait({task}, timeout=within)


def mark_seen(future: asyncio.Future[Any]) -> None:
    """A done callback for a future whose outcome nobody awaits any more: asyncio would
    otherwise report its exception as never retrieved."""
    if not future.cancelled():
        future.exception()


class ReaderGone(ConnectionAbortedError):
    """A stream ended because its reader was stopped: the reader's own outcome says why."""


class ByteStream:
    """One batch's COPY data on its way from the source to the target, in order.

    The reader puts chunks and finally calls ``finish`` with the row count, or
    ``fail``; the writer iterates. ``fail`` never waits, so a failing reader cannot
    block on a writer that has gone.
    """

    def __init__(self, limit: int = STREAM_CHUNKS) -> None:
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue(limit)
        self._outcome: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._outcome.add_done_callback(mark_seen)

    async def put(self, chunk: bytes) -> None:
        # asyncpg reuses its buffer for the next chunk: keep a copy of our own.
        await self._chunks.put(bytes(chunk))

    def finish(self, rows: int) -> None:
        if not self._outcome.done():
            self._outcome.set_result(rows)

    def fail(self, error: BaseException) -> None:
        if not self._outcome.done():
            if not isinstance(error, Exception):
                error = ReaderGone("reading the source stopped mid-batch")
            self._outcome.set_exception(error)

    @property
    def rows(self) -> int:
        """The rows the reader sent; known once the stream has been read to its end."""
        return self._outcome.result()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await receive(self._chunks, self._outcome)) is not None:
            yield chunk

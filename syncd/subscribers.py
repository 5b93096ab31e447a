"""Live events for whoever listens: each listener has a bounded queue of its own, so a slow
reader misses events rather than holding memory, and their number has a ceiling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from syncd.errors import Unavailable

EventQueue = asyncio.Queue[dict[str, Any]]

QUEUE_EVENTS = 100
"""Events a listener may fall behind by before it misses the next ones."""


class Subscribers:
    def __init__(self) -> None:
        self._queues: set[EventQueue] = set()

    @contextlib.asynccontextmanager
    async def subscription(self, limit: int) -> AsyncIterator[EventQueue]:
        """A queue of the events sent from now on; at most ``limit`` at once, one more is
        refused as Unavailable."""
        if len(self._queues) >= limit:
            raise Unavailable(
                f"{limit} event streams are open, as many as syncd serves; try again later"
            )
        queue: EventQueue = asyncio.Queue(maxsize=QUEUE_EVENTS)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)

    def send(self, event: dict[str, Any]) -> None:
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(event)

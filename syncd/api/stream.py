"""Server-Sent Events: the runner's events as they happen, each checked against its model,
until the page or syncd goes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from syncd.api.http import SERVICES
from syncd.events import EVENT

CLOSING = web.AppKey("closing", asyncio.Event)
"""Set when the server shuts down, so that endless event streams end instead of being waited for."""
KEEP_ALIVE_S = 15.0
"""Idle event streams get a comment this often, so proxies and browsers keep them open."""
MAX_EVENT_STREAMS = 100
"""Each open stream costs a queue and its share of every event: their number is bounded."""
STREAM_PAUSE_S = 0.1
SEND_TIMEOUT_S = 10.0
"""An event stream whose reader takes nothing for this long is ended."""


async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: the runner's events as they happen, until the page or syncd goes."""
    closing = request.app[CLOSING]
    runner = request.app[SERVICES].runner
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    # Subscribed before the answer starts, so that a refusal can still be a 503.
    async with runner.subscribers.subscription(MAX_EVENT_STREAMS) as queue:
        await response.prepare(request)
        try:
            # The first bytes reach the browser at once, and tell it how soon to reconnect.
            await _send(response, b"retry: 3000\n\n")
            while (events := await _next_events(queue, closing)) is not None:
                await _send(response, _messages(events))
                # However fast batches commit, a stream wakes up and writes at most this
                # often: with many pages open, it would otherwise be a write per page per batch.
                await asyncio.sleep(STREAM_PAUSE_S)
            await response.write_eof()
        except TimeoutError:
            # A reader that takes nothing for this long loses its stream and its place
            # among the subscribers; an EventSource that is still there reconnects.
            if (transport := request.transport) is not None:
                transport.abort()
        except ConnectionResetError:
            pass  # the page went away; a keep-alive at the latest tells us
    return response


async def _send(response: web.StreamResponse, data: bytes) -> None:
    async with asyncio.timeout(SEND_TIMEOUT_S):
        await response.write(data)


async def _next_events(
    queue: asyncio.Queue[dict[str, Any]], closing: asyncio.Event
) -> list[dict[str, Any]] | None:
    """Every event queued once there is one; none after KEEP_ALIVE_S without any; None at
    shutdown."""
    getting = asyncio.ensure_future(queue.get())
    waiting = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait(
            (getting, waiting), timeout=KEEP_ALIVE_S, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        getting.cancel()
        waiting.cancel()
    if getting.done() and not getting.cancelled():
        events = [getting.result()]
        while not queue.empty():
            events.append(queue.get_nowait())
        return events
    return None if closing.is_set() else []


def _messages(events: list[dict[str, Any]]) -> bytes:
    """The events as the stream carries them, each checked against its model; none at all
    is the keep-alive comment."""
    if not events:
        return b": keep-alive\n\n"
    typed = [EVENT.validate_python(event) for event in events]
    return b"".join(
        b"event: %s\ndata: %s\n\n" % (event.type.encode(), event.model_dump_json().encode())
        for event in typed
    )


def prepare(app: web.Application) -> None:
    """Ready ``app`` to end its streams when it shuts down."""
    app[CLOSING] = asyncio.Event()
    app.on_shutdown.append(_end_streams)


async def _end_streams(app: web.Application) -> None:
    # Without this, cleanup would wait its full shutdown_timeout for streams that never end.
    app[CLOSING].set()

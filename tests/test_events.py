"""The Server-Sent Events that keep the status page live, read by a plain HTTP client."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from syncd import api
from syncd.api import Services, create_app
from syncd.metrics import Metrics
from syncd.notify import Notifier
from syncd.runner import Runner
from syncd.scheduler import Schedules
from syncd.state import StateStore
from tests.daemon import Daemon
from tests.helpers import create_items, unreachable_config

EVENTS = "/api/batch-sync/events"
ITEMS = {
    "table": "src.items",
    "key": ["id"],
    "cursor": "updated_at",
    "target_table": "public.items",
    "batch_size": 25,
}


def parse(block: bytes) -> tuple[str, dict[str, Any]]:
    """One event's name and data, from the lines that end with a blank one."""
    fields = dict(line.split(": ", 1) for line in block.decode().strip().splitlines())
    return fields["event"], json.loads(fields["data"])


async def test_an_idle_stream_is_kept_alive_and_ends_when_the_server_stops(monkeypatch) -> None:
    monkeypatch.setattr(api, "KEEP_ALIVE_S", 0.05)
    runner = Runner(unreachable_config(), metrics=Metrics(), notifier=Notifier({}))
    services = Services(runner, Schedules(runner), StateStore("syncd"), Metrics())
    server = TestServer(create_app(services))
    async with TestClient(server) as client:
        stream = await client.get(EVENTS)
        assert stream.status == 200 and stream.headers["Content-Type"] == "text/event-stream"
        assert await stream.content.readuntil(b"\n\n") == b"retry: 3000\n\n"
        assert await stream.content.readuntil(b"\n\n") == b": keep-alive\n\n"

        loop = asyncio.get_running_loop()
        asked = loop.time()
        await server.close()
        assert loop.time() - asked < 2  # not aiohttp's shutdown_timeout of a minute
        await stream.content.read()  # the stream was ended, not cut: no payload error


async def test_a_stream_tells_each_run_change_and_batch_and_ends_with_the_daemon(
    conn: asyncpg.Connection, make_config, tmp_path: Path
) -> None:
    await create_items(conn, 100)
    _, path = make_config({"items": ITEMS}, api={"host": "127.0.0.1", "port": 0})
    daemon = Daemon(path, tmp_path)
    await daemon.start()
    try:
        await daemon.wait_ready()
        async with aiohttp.ClientSession() as session, session.get(daemon.url + EVENTS) as stream:
            assert await stream.content.readuntil(b"\n\n") == b"retry: 3000\n\n"
            status, finished = await daemon.request("POST", "/api/batch-sync/start-sync")
            assert status == 200
            events = [parse(await stream.content.readuntil(b"\n\n"))]
            while events[-1][0] != "run_finished":
                events.append(parse(await stream.content.readuntil(b"\n\n")))

            assert [name for name, _ in events] == ["run_started"] + ["batch_committed"] * 4 + [
                "run_finished"
            ]
            assert {data["run_id"] for _, data in events} == {finished["run_id"]}
            assert [data["run_rows_read"] for _, data in events[1:-1]] == [25, 50, 75, 100]
            assert all(isinstance(data["source_rows_estimate"], int) for _, data in events[1:-1])
            assert events[-1][1]["status"] == "succeeded" and events[-1][1]["error"] is None

            loop = asyncio.get_running_loop()
            asked = loop.time()
            assert await daemon.stop() == 0
            assert loop.time() - asked < 5
            assert await stream.content.read() == b""
    finally:
        await daemon.stop()


@pytest.mark.parametrize("path", ["/static/index.html", "/static/..%2fapi.py", "/static/x.js"])
async def test_only_the_page_s_own_files_are_served(path: str) -> None:
    runner = Runner(unreachable_config(), metrics=Metrics(), notifier=Notifier({}))
    services = Services(runner, Schedules(runner), StateStore("syncd"), Metrics())
    async with TestClient(TestServer(create_app(services))) as client:
        assert (await client.get(path)).status == 404
        page = await client.get("/")
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert (await client.get("/static/page.js")).headers["Cache-Control"] == "no-cache"

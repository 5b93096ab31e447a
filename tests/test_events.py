"""The Server-Sent Events that keep the status page live, read by a plain HTTP client."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from syncd.api import Services, create_app
from syncd.api import stream as stream_module
from syncd.chunks import ChunkStore
from syncd.metrics import Metrics
from syncd.notify import Notifier
from syncd.runner import Runner
from syncd.scheduler import Schedules
from syncd.state import StateStore
from tests.contract import Broken, Recording, check_event
from tests.daemon import Daemon
from tests.helpers import create_items, unreachable_config, wait_for_value
from tests.test_parallel_load import plan_load

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
    monkeypatch.setattr(stream_module, "KEEP_ALIVE_S", 0.05)
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


async def _stream_of_one_run(daemon: Daemon, sync_name: str) -> tuple[Recording, Any]:
    """The daemon's stream, recorded while one run started over HTTP goes to its end;
    then the daemon stops, cleanly; the start's answer comes back with the stream."""
    await daemon.start()
    try:
        await daemon.wait_ready()
        async with aiohttp.ClientSession() as session, session.get(daemon.url + EVENTS) as stream:
            recording = Recording(stream)
            try:
                status, finished = await daemon.request("POST", "/api/batch-sync/start-sync")
                assert status == 200, finished
                await recording.until(lambda: recording.finished(sync_name))
            finally:
                recording.stop()
        assert await daemon.stop() == 0
    finally:
        await daemon.stop()
    return recording, finished


async def test_a_parallel_load_streams_each_chunk_claimed_and_committed_with_the_load_s_progress(
    conn: asyncpg.Connection, make_config, tmp_path: Path
) -> None:
    await create_items(conn, 3000)
    await conn.execute("ANALYZE src.items")  # the estimate that decides on a parallel load
    loaded = ITEMS | {"chunk_rows": 300, "parallel": 2, "batch_size": 100}
    _, path = make_config({"items": loaded}, api={"host": "127.0.0.1", "port": 0})
    daemon = Daemon(path, tmp_path)
    recording, finished = await _stream_of_one_run(daemon, "items")

    for name, data in recording.raw:
        check_event(name, data)
    chunks = {row["chunk"]: row["rows_read"] for row in await conn.fetch(
        "SELECT chunk, rows_read FROM syncd.chunks WHERE status = 'done'")}  # fmt: skip
    assert len(chunks) > 2
    events = recording.named("chunk", "items")
    assert {e["run_id"] for e in events} == {finished["run_id"]}
    assert {e["instance"] for e in events} == {f"{socket.gethostname()}:{daemon.pid}"}
    assert sorted(e["chunk"] for e in events if e["state"] == "claimed") == sorted(chunks)
    committed = {e["chunk"]: e["rows"] for e in events if e["state"] == "committed"}
    assert committed == chunks and sum(committed.values()) == 3000
    assert {e["state"] for e in events} == {"claimed", "committed"}
    # Each event carries the whole load as it stood: the last one, every chunk done.
    assert {e["load"]["chunks"] for e in events} == {len(chunks)}
    assert events[-1]["load"] == {
        "chunks": len(chunks), "done": len(chunks), "running": 0, "rows_read": 3000,
        "instances": 1,
    }  # fmt: skip
    done = [e["load"]["done"] for e in events]
    assert done == sorted(done)  # published in the order the load went


async def test_a_chunk_taken_over_from_a_worker_whose_lease_ran_out_is_streamed_as_reclaimed(
    conn: asyncpg.Connection, make_config, tmp_path: Path
) -> None:
    await create_items(conn, 1000)
    loaded = ITEMS | {"chunk_rows": 250, "parallel": 2}
    config, path = make_config({"items": loaded}, api={"host": "127.0.0.1", "port": 0})
    await plan_load(conn, config.syncs["items"])
    # Another process's worker claims the first chunk and is never heard of again. Its lease
    # is short; the daemon's, the default, outlasts any stall of a busy machine.
    chunks = ChunkStore("syncd")
    load = await chunks.unfinished(conn, "items")
    assert load is not None
    gone = await chunks.claim(conn, "items", load, timedelta(milliseconds=100))
    assert gone is not None and gone.chunk == 0
    await asyncio.sleep(0.2)  # its lease runs out
    daemon = Daemon(path, tmp_path)
    recording, _ = await _stream_of_one_run(daemon, "items")

    for name, data in recording.raw:
        check_event(name, data)
    changes = [(e["chunk"], e["state"]) for e in recording.named("chunk", "items")]
    assert sorted(changes) == [
        (0, "committed"), (0, "reclaimed"), (1, "claimed"), (1, "committed"),
        (2, "claimed"), (2, "committed"), (3, "claimed"), (3, "committed"),
    ]  # fmt: skip
    assert {e["load_id"] for e in recording.named("chunk", "items")} == {load.load_id}


@pytest.mark.parametrize("path", ["/static/index.html", "/static/..%2fapi.py", "/static/x.js"])
async def test_only_the_page_s_own_files_are_served(path: str) -> None:
    runner = Runner(unreachable_config(), metrics=Metrics(), notifier=Notifier({}))
    services = Services(runner, Schedules(runner), StateStore("syncd"), Metrics())
    async with TestClient(TestServer(create_app(services))) as client:
        assert (await client.get(path)).status == 404
        page = await client.get("/")
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert (await client.get("/static/page.js")).headers["Cache-Control"] == "no-cache"


async def _stalled_stream(port: int) -> asyncio.StreamWriter:
    """An event stream whose reader takes its first bytes, then nothing ever again."""
    sock = socket.socket()
    # A small receive window, so that what is not read backs up into the daemon soon.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET {EVENTS} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await reader.readuntil(b"retry: 3000\n\n")
    return writer


async def _healthz_during_a_run(daemon: Daemon) -> tuple[list[float], dict[str, Any]]:
    """/healthz's answer times, asked one after another while a run goes on; the run's end."""
    status, started = await daemon.request("POST", "/api/batch-sync/start")
    assert status == 202

    def ended() -> list[dict[str, Any]]:
        return [
            e
            for e in daemon.events("run_finished") + daemon.events("run_failed")
            if e["run_id"] == started["run_id"]
        ]

    times = []
    async with aiohttp.ClientSession() as session:
        while not ended():
            asked = time.perf_counter()
            async with session.get(f"{daemon.url}/healthz") as answer:
                assert answer.status == 200
            times.append(time.perf_counter() - asked)
            await asyncio.sleep(0.005)
    return times, ended()[0]


async def test_a_hundred_streams_that_never_read_are_the_most_and_slow_nothing(
    conn: asyncpg.Connection, make_config, tmp_path: Path
) -> None:
    await create_items(conn, 5_000)
    _, path = make_config(
        {"items": ITEMS | {"batch_size": 10}}, api={"host": "127.0.0.1", "port": 0}
    )
    daemon = Daemon(path, tmp_path)
    await daemon.start()
    try:
        await daemon.wait_ready()
        alone, first_run = await _healthz_during_a_run(daemon)
        memory_before = daemon.rss_bytes()

        stalled = [await _stalled_stream(daemon.port) for _ in range(100)]
        async with aiohttp.ClientSession() as session, session.get(daemon.url + EVENTS) as one_more:
            assert one_more.status == 503
            assert (await one_more.json())["message"] == (
                "100 event streams are open, as many as syncd serves; try again later"
            )
        assert (await daemon.request("POST", "/api/batch-sync/reset"))[0] == 200
        crowded, second_run = await _healthz_during_a_run(daemon)
        memory_after = daemon.rss_bytes()

        # Every batch committed, and the daemon answered as it did without the streams.
        assert first_run["event"] == second_run["event"] == "run_finished"
        assert first_run["batches"] == second_run["batches"] == 500
        assert len(alone) >= 20 and len(crowded) >= 20
        ratio = statistics.median(crowded) / statistics.median(alone)
        assert ratio < 3, (ratio, len(alone), len(crowded))
        # What a stream holds is bounded (a queue of events, a write buffer), whatever it missed.
        per_stream = (memory_after - memory_before) / len(stalled)
        assert per_stream < 256 * 1024, per_stream
        for writer in stalled:
            writer.close()
        assert await daemon.stop() == 0
    finally:
        await daemon.stop()


async def test_a_stream_whose_reader_takes_nothing_is_ended_and_its_place_freed(
    monkeypatch,
) -> None:
    monkeypatch.setattr(stream_module, "SEND_TIMEOUT_S", 0.2)
    monkeypatch.setattr(stream_module, "MAX_EVENT_STREAMS", 1)
    runner = Runner(unreachable_config(), metrics=Metrics(), notifier=Notifier({}))
    services = Services(runner, Schedules(runner), StateStore("syncd"), Metrics())
    server = TestServer(create_app(services))
    async with TestClient(server) as client:
        stalled = await _stalled_stream(server.port)
        assert (await client.get(EVENTS)).status == 503
        # Events larger than every buffer between the two, published as runs would: the
        # daemon's writes to the stalled stream soon wait, and then give up on it.
        event = {"type": "run_finished", "sync_name": "x", "run_id": "r", "error": "e" * 10**6}
        for _ in range(200):
            runner.publish(event)
            await asyncio.sleep(0.05)
            answer = await client.get(EVENTS)
            answer.close()
            if answer.status == 200:
                break
        assert answer.status == 200
        stalled.close()


GATE = """
CREATE FUNCTION src.gate() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM pg_advisory_xact_lock_shared(7); RETURN true; END $$;
"""


async def test_every_event_of_a_recorded_stream_fits_the_published_schema(
    conn: asyncpg.Connection, db: str, api, monkeypatch
) -> None:
    """A stream through a successful run, a parallel load, a failed run (its source table
    dropped mid-run), a reset, a start through the API, scheduled runs and keep-alives."""
    monkeypatch.setattr(stream_module, "KEEP_ALIVE_S", 0.2)
    await create_items(conn, 40)
    await conn.execute(GATE)
    await conn.execute("CREATE TABLE src.doomed AS SELECT * FROM src.items")
    await conn.execute("ALTER TABLE src.doomed ADD PRIMARY KEY (id)")
    doomed = ITEMS | {"table": None, "target_table": "public.doomed", "batch_size": 5,
                      "query": "SELECT * FROM src.doomed WHERE src.gate()"}  # fmt: skip
    ticking = ITEMS | {"target_table": "public.ticking", "schedule": {"every": "1s"}}
    await conn.execute("ANALYZE src.items")  # the estimate that decides on a parallel load
    loaded = ITEMS | {"target_table": "public.loaded", "chunk_rows": 10, "batch_size": 5}
    client = await api({"items": ITEMS, "doomed": doomed, "ticking": ticking, "loaded": loaded})
    async with client.session.get(client.make_url(EVENTS)) as stream:
        recording = Recording(stream)
        try:
            succeeded = await client.post("/api/batch-sync/start-sync?sync_name=items")
            assert succeeded.status == 200
            await recording.until(lambda: recording.finished("items"))
            loading = await client.post("/api/batch-sync/start-sync?sync_name=loaded")
            assert loading.status == 200
            await recording.until(lambda: recording.finished("loaded"))

            await conn.execute("SELECT pg_advisory_lock(7)")  # the doomed run's reads wait
            started = await client.post("/api/batch-sync/start?sync_name=doomed")
            assert started.status == 202
            await wait_for_value(conn, "SELECT true FROM pg_locks WHERE objid = 7 AND NOT granted")
            dropper = await asyncpg.connect(db)
            dropping = asyncio.ensure_future(dropper.execute("DROP TABLE src.doomed"))
            await wait_for_value(
                conn, "SELECT true FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND NOT granted"
            )
            await conn.execute("SELECT pg_advisory_unlock(7)")
            await dropping
            await dropper.close()
            await recording.until(lambda: recording.finished("doomed"))

            assert (await client.post("/api/batch-sync/reset?sync_name=items")).status == 200
            assert (await client.post("/api/batch-sync/start?sync_name=items")).status == 202
            await recording.until(lambda: len(recording.finished("items")) == 2)
            await recording.until(lambda: recording.finished("ticking") and recording.keep_alives)
        finally:
            recording.stop()

    for name, data in recording.raw:
        check_event(name, data)
    names = [name for name, _ in recording.events]
    assert {"run_started", "batch_committed", "chunk", "run_finished", "sync_reset"} <= set(names)
    (failed,) = recording.finished("doomed")
    assert failed["status"] == "failed" and "doomed" in failed["error"], failed
    batches = [
        d for n, d in recording.events if n == "batch_committed" and d["sync_name"] == "doomed"
    ]
    assert len(batches) == 1  # it failed mid-run, after its first batch
    assert [d["status"] for d in recording.finished("items")] == ["succeeded", "succeeded"]
    assert ("sync_reset", {"type": "sync_reset", "sync_name": "items", "runs": ANY}) in [
        (n, d | {"runs": ANY}) for n, d in recording.events
    ]
    assert recording.finished("ticking")[0]["status"] == "succeeded"
    assert recording.keep_alives >= 1


async def test_an_event_that_breaks_the_document_is_caught() -> None:
    """The checker itself: an event the document does not allow is refused."""
    with pytest.raises(Broken):
        check_event("run_started", json.dumps({"type": "run_started", "sync_name": "x"}))
    with pytest.raises(Broken):
        check_event("run_begun", json.dumps({"type": "run_begun", "sync_name": "x"}))

"""Small things several test modules need: source tables, fingerprints, observers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from syncd.config import Config
from syncd.engine import Engine
from syncd.runs import BatchReport, ChunkReport, RunRequest, RunResult
from tests.daemon import Daemon

ITEMS_DDL = """
CREATE TABLE src.items (
    id          bigint PRIMARY KEY,
    updated_at  timestamptz NOT NULL,
    name        text,
    amount      numeric(12, 2)
);
CREATE INDEX ON src.items (updated_at, id);
"""


EVENTS_DDL = """
CREATE TABLE src.events (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL);
CREATE INDEX ON src.events (updated_at, id);
"""
EVENTS_SYNC = {
    "table": "src.events",
    "cursor": "updated_at",
    "target_table": "events",
    "max_lag": "30s",
}


async def write_events(conn: asyncpg.Connection, ids: range) -> None:
    """Rows ten seconds apart in cursor time: the clock of the source, not of the test."""
    if await conn.fetchval("SELECT to_regclass('src.events')") is None:
        await conn.execute(EVENTS_DDL)
    await conn.execute(
        "INSERT INTO src.events SELECT n, timestamptz '2026-01-01 00:00:00+00'"
        " + n * interval '10 seconds' FROM generate_series($1::bigint, $2::bigint) AS n",
        ids.start,
        ids.stop - 1,
    )


async def create_items(
    conn: asyncpg.Connection, rows: int, *, same_time: bool = False, start_id: int = 1
) -> None:
    """``rows`` items; with ``same_time`` every row shares one cursor value."""
    if await conn.fetchval("SELECT to_regclass('src.items')") is None:
        await conn.execute(ITEMS_DDL)
    spacing = "0" if same_time else "1"
    await conn.execute(
        f"""
        INSERT INTO src.items
        SELECT n, timestamptz '2025-01-01 00:00:00+00' + n * {spacing} * interval '1 second',
               'item ' || n, n * 1.25
          FROM generate_series($1::bigint, $2::bigint) AS n
        """,
        start_id,
        start_id + rows - 1,
    )


async def fingerprint(conn: asyncpg.Connection, table: str, key: str = "id") -> tuple[int, str]:
    """Row count and an md5 over every row in key order: equal tables, equal fingerprints."""
    row = await conn.fetchrow(
        f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.{key}), ''))"
        f" FROM {table} AS t"
    )
    assert row is not None
    return row[0], row[1]


class Recorder:
    """Collects batch reports; can ask the engine to stop after some batches."""

    def __init__(self, stop_after: int | None = None, stop: asyncio.Event | None = None) -> None:
        self.reports: list[BatchReport] = []
        self.chunks: list[ChunkReport] = []
        self.estimates: list[int | None] = []
        self.stop_after = stop_after
        self.stop = stop
        self.first_batch = asyncio.Event()
        self.fifth_batch = asyncio.Event()

    def run_started(self, sync_name: str, run_id: str, rows_estimate: int | None) -> None:
        self.estimates.append(rows_estimate)

    def batch_committed(self, report: BatchReport) -> None:
        self.reports.append(report)
        self.first_batch.set()
        if len(self.reports) >= 5:
            self.fifth_batch.set()
        if self.stop is not None and len(self.reports) >= (self.stop_after or 0):
            self.stop.set()

    def chunk_changed(self, report: ChunkReport) -> None:
        self.chunks.append(report)


async def run_sync(
    config: Config,
    name: str,
    *,
    observer: Recorder | None = None,
    stop: asyncio.Event | None = None,
    **request: object,
) -> RunResult:
    engine = Engine(config, observer=observer, stop=stop)
    return await engine.run(RunRequest(sync_name=name, **request))  # type: ignore[arg-type]


async def wait_for_value(conn: asyncpg.Connection, query: str, *, within: float = 30.0) -> object:
    """Poll ``query`` until it returns something other than NULL (or its table appears)."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        try:
            value = await conn.fetchval(query)
        except asyncpg.UndefinedTableError:
            value = None
        if value is not None:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"nothing from {query!r} within {within} s")


def unreachable_config() -> Config:
    """A valid config that nothing answers at, for what must work before any database does."""
    nowhere = "postgresql://postgres@127.0.0.1:1/nowhere"
    return Config.model_validate({
        "target": {"dsn": nowhere},
        "sources": {"pg": {"kind": "postgres", "dsn": nowhere}},
        "syncs": {"items": {"source": "pg", "table": "src.items", "target_table": "public.items"}},
    })  # fmt: skip


async def eventually(condition: Callable[[], bool], *, within: float = 30.0) -> None:
    """Wait until ``condition()`` holds; for things that offer no event to wait on."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 (there is no event to wait for)
            await asyncio.sleep(0.05)


@dataclass
class LivingDemo:
    """A ``syncd demo`` process with its writer, and the JSON log lines it has printed."""

    process: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    stderr: str = ""

    @property
    def url(self) -> str:
        port = next(line["port"] for line in self.lines if line["event"] == "http_listening")
        return f"http://127.0.0.1:{port}"

    async def read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(json.loads(raw))


@asynccontextmanager
async def living_demo(
    db: str, tmp_path: Path, *, rows: int, writes_per_second: int
) -> AsyncIterator[LivingDemo]:
    """The README's first command, in the shipped config, on the test database; Ctrl-C at
    the end, whose exit code and stderr are left on the demo."""
    config = yaml.safe_load((Path(__file__).parent.parent / "config.yaml").read_text())
    config["api"] = {"host": "127.0.0.1", "port": 0}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncd", "-c", str(path), "demo", "--rows", str(rows),
        "--writes-per-second", str(writes_per_second),
        env=os.environ | {"SYNCD_TARGET_DSN": db, "SYNCD_DEMO_DSN": db},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    demo = LivingDemo(process)
    reading = asyncio.create_task(demo.read())
    try:
        async with asyncio.timeout(60):
            while not any(line["event"] == "http_listening" for line in demo.lines):
                assert process.returncode is None, f"the demo exited {process.returncode}"
                await asyncio.sleep(0.05)
        yield demo
    finally:
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        demo.stderr = (await asyncio.wait_for(process.stderr.read(), timeout=60)).decode()
        await asyncio.wait_for(process.wait(), timeout=60)
        await reading


async def spawn_sync(path: object, sync_name: str) -> asyncio.subprocess.Process:
    """``syncd sync SYNC_NAME`` in a process of its own, its output discarded: one to hold
    the sync's lock, or to be killed mid-run."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncd", "-c", str(path), "sync", sync_name,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


@asynccontextmanager
async def events_daemon(
    conn: asyncpg.Connection, make_config: Callable[..., tuple[Config, Path]], tmp_path: Path
) -> AsyncIterator[Daemon]:
    """A ready ``syncd run`` of EVENTS_SYNC over its first ten events, whose freshness watch
    looks every 200 ms; it must stop cleanly when the test is done with it."""
    await write_events(conn, range(1, 11))
    _, path = make_config(
        {"events": EVENTS_SYNC}, api={"host": "127.0.0.1", "port": 0}, freshness_interval="200ms"
    )
    daemon = Daemon(path, tmp_path)
    await daemon.start()
    try:
        await daemon.wait_ready()
        yield daemon
    finally:
        assert await daemon.stop() == 0

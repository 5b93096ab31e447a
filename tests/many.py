"""A fleet of small syncs for one daemon, on a PostgreSQL cluster of the test's own, and what
watches the daemon while it runs them: its connections as the server counts them, /healthz,
its memory and CPU, and how far behind the source each target falls.

Used by tests/test_many.py and by tests/benchmarks/bench_many.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml

from tests.daemon import Daemon
from tests.helpers import fingerprint

TABLE_DDL = """
CREATE TABLE {table} (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, note text,
                      amount numeric(12, 2));
INSERT INTO {table} SELECT n, timestamptz '2025-01-01' + n * interval '1 second',
                           'row ' || n, n * 1.25
                      FROM generate_series(1, {rows}) AS n;
CREATE INDEX ON {table} (updated_at, id);
"""


@dataclass
class Fleet:
    """``names`` tables of ``rows`` rows in the source database, one sync for each."""

    server: str
    names: list[str]
    big: bool = False
    """Whether a table ``big`` and its sync come besides."""

    @property
    def source_dsn(self) -> str:
        return f"{self.server}/source"

    @property
    def target_dsn(self) -> str:
        return f"{self.server}/target"

    def config(self, path: Path, every: str, **top: Any) -> Path:
        """A config syncing every table into the target every ``every``."""
        sync = {"source": "src", "key": ["id"], "cursor": "updated_at"}
        source = {"kind": "postgres", "dsn": self.source_dsn} | top.pop("source", {})
        document = {
            "target": {"dsn": self.target_dsn} | top.pop("target", {}),
            "sources": {"src": source},
            "syncs": {
                name: sync | {"table": f"public.{name}", "target_table": f"public.{name}",
                              "schedule": {"every": every}} | top.pop(name, {})
                for name in [*self.names, *(["big"] if self.big else [])]
            },
            "api": {"host": "127.0.0.1", "port": 0},
            **top,
        }  # fmt: skip
        path.write_text(yaml.safe_dump(document))
        return path

    async def touch(self, share: int = 100, round_: int = 0) -> dict[str, datetime]:
        """Give one row in ``share`` of each table the time of the change as its new cursor
        value; returns those times, by table."""
        touched = {}
        conn = await asyncpg.connect(self.source_dsn)
        try:
            for name in self.names:
                touched[name] = datetime.now(UTC)
                await conn.execute(
                    f"UPDATE public.{name} SET updated_at = $1, note = note || '+'"
                    f" WHERE id % {share} = {round_ % share}",
                    touched[name],
                )
        finally:
            await conn.close()
        return touched

    async def differing(self) -> list[str]:
        """The tables whose target is not yet equal to their source."""
        source = await asyncpg.connect(self.source_dsn)
        target = await asyncpg.connect(self.target_dsn)
        try:
            differ = []
            for name in self.names:
                exists = await target.fetchval("SELECT to_regclass($1)", f"public.{name}")
                if exists is None or await fingerprint(
                    source, f"public.{name}"
                ) != await fingerprint(target, f"public.{name}"):
                    differ.append(name)
            return differ
        finally:
            await source.close()
            await target.close()

    async def converge(self, within: float) -> list[str]:
        """Wait until every target equals its source; the ones that still differ otherwise."""
        deadline = time.monotonic() + within
        differ = await self.differing()
        while differ and time.monotonic() < deadline:
            await asyncio.sleep(1)
            differ = await self.differing()
        return differ


async def make_fleet(server: str, count: int, rows: int, big: int = 0) -> Fleet:
    """Databases ``source`` and ``target`` on ``server``, and ``count`` tables of ``rows``
    rows; with ``big``, a table ``big`` of that many rows besides."""
    admin = await asyncpg.connect(f"{server}/postgres")
    try:
        for database in ("source", "target"):
            await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {database}")
    finally:
        await admin.close()
    names = [f"t{i:03}" for i in range(count)]
    conn = await asyncpg.connect(f"{server}/source")
    try:
        for name in names:
            await conn.execute(TABLE_DDL.format(table=f"public.{name}", rows=rows))
        if big:
            await conn.execute(TABLE_DDL.format(table="public.big", rows=big))
    finally:
        await conn.close()
    return Fleet(server, names, big=bool(big))


@dataclass
class Watch:
    """What the server and the process show while the daemon runs."""

    peak_connections: dict[str, int] = field(default_factory=dict)
    """The most sessions of syncd's seen at once, by database."""
    samples: int = 0
    healthz_ms: list[float] = field(default_factory=list)
    healthz_failures: list[str] = field(default_factory=list)
    rss_bytes: list[int] = field(default_factory=list)
    cpu_seconds: float = 0.0

    def healthz_p99_ms(self) -> float:
        return statistics.quantiles(self.healthz_ms, n=100)[98] if len(self.healthz_ms) > 1 else 0


@contextlib.asynccontextmanager
async def watching(server: str, daemon: Daemon, every: float = 0.05) -> AsyncIterator[Watch]:
    """Sample syncd's sessions in pg_stat_activity, probe /healthz (2 s bound each) and read
    the daemon's RSS, every ``every`` seconds, for as long as the block lasts."""
    watch = Watch()
    admin = await asyncpg.connect(f"{server}/postgres")
    cpu_before = _cpu_seconds(daemon.pid)

    async def sample() -> None:
        while True:
            rows = await admin.fetch(
                "SELECT datname, count(*) AS n FROM pg_stat_activity"
                " WHERE application_name = 'syncd' GROUP BY datname"
            )
            for row in rows:
                name = row["datname"]
                watch.peak_connections[name] = max(watch.peak_connections.get(name, 0), row["n"])
            watch.samples += 1
            watch.rss_bytes.append(daemon.rss_bytes())
            await asyncio.sleep(every)

    async def probe() -> None:
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                began = time.perf_counter()
                try:
                    async with session.get(f"{daemon.url}/healthz") as answer:
                        await answer.read()
                        if answer.status != 200:
                            watch.healthz_failures.append(f"HTTP {answer.status}")
                except (TimeoutError, aiohttp.ClientError) as exc:
                    watch.healthz_failures.append(repr(exc))
                watch.healthz_ms.append((time.perf_counter() - began) * 1000)
                await asyncio.sleep(every * 2)

    tasks = [asyncio.create_task(sample()), asyncio.create_task(probe())]
    try:
        yield watch
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        watch.cpu_seconds = _cpu_seconds(daemon.pid) - cpu_before
        await admin.close()


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of the process so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def lags(daemon: Daemon, touches: list[dict[str, datetime]]) -> list[float]:
    """For each touch of a table's rows, the seconds from the touch to the first batch of
    its sync that committed a position at or past it, from the daemon's log (inf if none)."""
    batches: dict[str, list[tuple[datetime, datetime]]] = {}
    for event in daemon.events("batch_committed"):
        logged = datetime.fromisoformat(event["timestamp"])
        cursor = datetime.fromisoformat(event["position"][0])
        batches.setdefault(event["sync_name"], []).append((logged, cursor))
    found = []
    for touch in touches:
        for name, touched in touch.items():
            seen = next((at for at, cursor in batches.get(name, []) if cursor >= touched), None)
            found.append(float("inf") if seen is None else (seen - touched).total_seconds())
    return found

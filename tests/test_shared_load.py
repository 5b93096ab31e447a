"""Several daemons with the same config share one parallel load; kill -9 of one loses nothing."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import asyncpg

from tests.daemon import Daemon
from tests.helpers import create_items, fingerprint, wait_for_value

ROWS = 60_000
SHARED = {
    "table": "src.items",
    "key": ["id"],
    "cursor": "updated_at",
    "target_table": "public.items",
    "chunk_rows": 3000,
    "batch_size": 500,
    "parallel": 1,
    "chunk_lease": "2s",
    "schedule": {"every": "1s"},
}


async def test_three_daemons_share_a_load_and_one_killed_loses_nothing(
    conn: asyncpg.Connection, make_config, tmp_path: Path
) -> None:
    await create_items(conn, ROWS)
    await conn.execute("ANALYZE src.items")
    _, path = make_config({"items": SHARED}, api={"host": "127.0.0.1", "port": 0})
    daemons = [Daemon(path, tmp_path) for _ in range(3)]
    try:
        for daemon in daemons:
            await daemon.start()
        # Wait until at least two of them work on chunks, then kill the one that leads.
        await wait_for_value(
            conn,
            "SELECT 1 FROM syncd.chunks HAVING count(DISTINCT owner) >= 2"
            " AND count(*) FILTER (WHERE status = 'done') >= 2",
        )
        leader_pid = await conn.fetchval("SELECT holder_pid FROM syncd.sync_state")
        killed = next(d for d in daemons if d.pid == leader_pid)
        killed.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        assert await killed.process.wait() == -signal.SIGKILL  # type: ignore[union-attr]
        survivors = [d for d in daemons if d is not killed]

        await wait_for_value(
            conn, "SELECT 1 FROM syncd.loads WHERE finished_at IS NOT NULL", within=120
        )
        await wait_for_value(conn, "SELECT 1 FROM syncd.sync_state WHERE position IS NOT NULL")

        assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")
        chunks = await conn.fetch("SELECT status, rows_read, workers FROM syncd.chunks")
        assert {row["status"] for row in chunks} == {"done"}
        # Every row was committed once: no batch of a worker that lost its chunk counted.
        assert sum(row["rows_read"] for row in chunks) == ROWS
        instances = {worker for row in chunks for worker in row["workers"]}
        assert len(instances) >= 2
        assert any(f":{killed.pid}" in worker for worker in instances)  # it did some work

        # Progress, over every process, in each survivor's /metrics and in the status.
        for daemon in survivors:
            assert await chunks_in_metrics(daemon) == {"total": len(chunks), "done": len(chunks)}
        status = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "syncd", "-c", str(path), "status", "items", "--json",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await status.communicate()
        assert json.loads(out)["chunks"]["done"] == len(chunks)
        assert json.loads(out)["chunks"]["instances"] == len(instances)
    finally:
        for daemon in daemons:
            if daemon.alive:
                await daemon.stop()


async def chunks_in_metrics(daemon: Daemon, within: float = 30) -> dict[str, float]:
    """The load's chunk counts in the daemon's /metrics once it has seen the load done."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        samples = await daemon.metrics()
        counts = {s.labels["state"]: s.value for s in samples if s.name == "syncd_load_chunks"}
        if (
            counts and counts["done"] == counts["total"]
        ) or asyncio.get_running_loop().time() > deadline:
            return {state: counts[state] for state in ("total", "done")}
        await asyncio.sleep(0.2)

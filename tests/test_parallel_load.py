"""Parallel loads: the chunk planner, claims, leases, fencing, kill -9 and a changing source."""

from __future__ import annotations

import asyncio
import json
import signal

import asyncpg
import pytest
import structlog
from structlog.testing import capture_logs

from syncd.chunks import ChunkStore, Fenced
from syncd.config import SyncConfig
from syncd.sources import LoadPlan
from syncd.sources.postgres import PostgresSource
from syncd.state import StateStore
from tests.helpers import create_items, fingerprint, run_sync, spawn_sync, wait_for_value

ITEMS = {
    "table": "src.items",
    "key": ["id"],
    "cursor": "updated_at",
    "target_table": "public.items",
}


async def plan_of(conn: asyncpg.Connection, rows_per_chunk: int, **sync: object) -> LoadPlan:
    config = SyncConfig.model_validate({"source": "pg", "target_table": "t"} | sync)
    async with PostgresSource(conn, config).load_plan(rows_per_chunk) as plan:
        return plan


async def rows_per_range(
    conn: asyncpg.Connection, table: str, key: list[str], plan: LoadPlan
) -> list[int]:
    """How many rows each of the plan's ranges holds, by the keyset comparison reads use."""
    columns = ", ".join(key)
    counts = []
    lowers = [None, *plan.bounds]
    uppers = [*plan.bounds, None]
    for lower, upper in zip(lowers, uppers, strict=True):
        conditions = ["true"]
        if lower is not None:
            conditions.append(f"ROW({columns}) > ROW({', '.join(map(repr, lower))})")
        if upper is not None:
            conditions.append(f"ROW({columns}) <= ROW({', '.join(map(repr, upper))})")
        counts.append(
            await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {' AND '.join(conditions)}")
        )
    return counts


@pytest.mark.parametrize(
    ("ddl", "fill", "key", "rows"),
    [
        ("id bigint PRIMARY KEY", "SELECT n FROM generate_series(1, 1000) AS n", ["id"], 1000),
        # Skewed: a dense run and a few keys far beyond it; equal spans would be unequal chunks.
        (
            "id bigint PRIMARY KEY",
            "SELECT n FROM generate_series(1, 990) AS n UNION ALL"
            " SELECT n::bigint * 1000000000 FROM generate_series(1, 10) AS n",
            ["id"],
            1000,
        ),
        (
            'code text COLLATE "C" PRIMARY KEY',
            "SELECT md5(n::text) FROM generate_series(1, 1000) AS n",
            ["code"],
            1000,
        ),
        (
            "region text, id integer, PRIMARY KEY (region, id)",
            "SELECT 'r' || (n % 7), n FROM generate_series(1, 1000) AS n",
            ["region", "id"],
            1000,
        ),
        ("id bigint PRIMARY KEY", "SELECT 1 WHERE false", ["id"], 0),
        ("id bigint PRIMARY KEY", "SELECT 42", ["id"], 1),
        ("code text PRIMARY KEY", "SELECT 'only'", ["code"], 1),
    ],
    ids=["integer", "skewed", "text", "composite", "empty", "one-row", "one-text-row"],
)
async def test_the_planner_splits_keys_into_ranges_that_cover_every_row_once(
    conn: asyncpg.Connection, ddl: str, fill: str, key: list[str], rows: int
) -> None:
    await conn.execute(f"CREATE TABLE src.keyed ({ddl})")
    await conn.execute(f"INSERT INTO src.keyed {fill}")
    plan = await plan_of(conn, 100, table="src.keyed", key=key)

    counts = await rows_per_range(conn, "src.keyed", key, plan)
    assert sum(counts) == rows
    assert plan.bounds == sorted(plan.bounds) or len(key) > 1
    assert max(counts) <= 200  # about 100 rows each, never one range holding the table
    assert len(counts) == max(1, -(-rows // 100))
    assert plan.snapshot  # exported for the workers


async def test_the_planner_sizes_integer_ranges_by_the_statistics_without_counting_rows(
    conn: asyncpg.Connection,
) -> None:
    """Counting every key would keep every worker waiting on a large table: the table's
    statistics say about how many rows there are, and min/max still bound the keys."""
    await conn.execute("CREATE TABLE src.keyed (id bigint PRIMARY KEY)")
    await conn.execute("INSERT INTO src.keyed SELECT generate_series(1, 1000)")
    await conn.execute("ANALYZE src.keyed")
    await conn.execute("INSERT INTO src.keyed SELECT generate_series(1001, 2000)")

    plan = await plan_of(conn, 100, table="src.keyed", key=["id"])

    counts = await rows_per_range(conn, "src.keyed", ["id"], plan)
    assert len(counts) == 10  # 1,000 counted rows, not the 2,000 there are
    assert counts == [200] * 10


async def test_a_parallel_load_copies_everything_and_reads_on_from_its_cursor_value(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 5000)
    await conn.execute("ANALYZE src.items")  # the estimate that decides on a parallel load
    config, _ = make_config({"items": ITEMS | {"chunk_rows": 600, "parallel": 3}})

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        result = await run_sync(config, "items", batch_size=250)

    assert result.status == "succeeded", result.error
    # The load is one run in the log, as in the runs table: its chunks' batches are that
    # run's, and it ends once, not once per chunk.
    assert [e["run_id"] for e in logs if e["event"] == "run_finished"] == [result.run_id]
    batches = [e for e in logs if e["event"] == "batch_committed"]
    assert len(batches) >= 20
    assert {e["run_id"] for e in batches} == {result.run_id}
    # The chunks, then the rows at the load's cursor value again: here, the newest one.
    assert (result.rows_read, result.rows_written) == (5001, 5000)
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")
    chunks = await conn.fetch("SELECT status, rows_read, attempts FROM syncd.chunks")
    assert len(chunks) == 9
    assert {row["status"] for row in chunks} == {"done"}
    assert sum(row["rows_read"] for row in chunks) == 5000
    newest = await conn.fetchval("SELECT max(updated_at)::text FROM src.items")
    assert await conn.fetchval("SELECT since FROM syncd.sync_state") == newest

    # The next run goes on after the position that read left: the new row alone.
    await create_items(conn, 1, start_id=9000)
    after = await run_sync(config, "items")
    assert after.status == "succeeded", after.error
    assert after.rows_read == 1
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")


async def plan_load(conn: asyncpg.Connection, config_sync: SyncConfig) -> None:
    """Plan the sync's load as the run holding its lock would, without working on it."""
    store = StateStore("syncd")
    await store.migrate(conn)
    await conn.execute("INSERT INTO syncd.sync_state (sync_name) VALUES ('items')")
    async with PostgresSource(conn, config_sync).load_plan(config_sync.chunk_rows) as plan:
        pass
    # Its snapshot ended with the block: chunks are read at fresh ones.
    await ChunkStore("syncd").plan(conn, "items", plan)


async def test_a_chunk_whose_lease_ran_out_is_taken_over_and_resumed_after_its_last_key(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 1000)
    config, _ = make_config(
        {"items": ITEMS | {"chunk_rows": 250, "parallel": 2, "chunk_lease": "1s"}}
    )
    sync = config.syncs["items"]
    await plan_load(conn, sync)
    # A worker claims the first chunk, commits its first 100 keys' batch (the rows are
    # left out here, to show they are never read again) and is never heard of again.
    chunks = ChunkStore("syncd")
    load = await chunks.unfinished(conn, "items")
    assert load is not None
    claim = await chunks.claim(conn, "items", load, sync.chunk_lease)
    assert claim is not None and claim.chunk == 0
    async with conn.transaction():
        await chunks.record(conn, "items", claim, sync.chunk_lease, ("100",), 100, 100)
    await asyncio.sleep(1.2)  # its lease runs out

    result = await run_sync(config, "items")

    assert result.status == "succeeded", result.error
    first = await conn.fetchrow("SELECT * FROM syncd.chunks WHERE chunk = 0")
    assert (first["status"], first["attempts"], first["token"]) == ("done", 2, 2)
    assert first["rows_read"] == 250  # 100 by the lost worker, 150 after its last key
    # Keys up to 100 were never read again: the chunk went on after them.
    assert await conn.fetchval("SELECT min(id) FROM public.items") == 101
    assert await conn.fetchval("SELECT count(*) FROM public.items WHERE id > 100") == 900


async def test_a_worker_that_lost_its_chunk_writes_nothing(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 1000)
    config, _ = make_config({"items": ITEMS | {"chunk_rows": 250, "chunk_lease": "1s"}})
    sync = config.syncs["items"]
    await plan_load(conn, sync)
    await conn.execute("CREATE TABLE public.items (LIKE src.items INCLUDING ALL)")
    chunks = ChunkStore("syncd")
    load = await chunks.unfinished(conn, "items")
    assert load is not None
    paused = await chunks.claim(conn, "items", load, sync.chunk_lease)
    assert paused is not None
    await asyncio.sleep(1.2)  # the worker pauses past its lease…
    taken_over = await chunks.claim(conn, "items", load, sync.chunk_lease)
    assert taken_over is not None and taken_over.chunk == paused.chunk and taken_over.reclaimed

    # …and wakes to write its batch: the batch's own transaction refuses it, rows and all.
    with pytest.raises(Fenced):
        async with conn.transaction():
            await conn.execute("INSERT INTO public.items SELECT * FROM src.items WHERE id <= 50")
            await chunks.record(conn, "items", paused, sync.chunk_lease, ("50",), 50, 50)
    assert await conn.fetchval("SELECT count(*) FROM public.items") == 0
    row = await conn.fetchrow(
        "SELECT resume_key, rows_read, token FROM syncd.chunks WHERE chunk = 0"
    )
    assert (row["resume_key"], row["rows_read"], row["token"]) == (None, 0, 2)

    # The worker that holds the chunk now commits.
    async with conn.transaction():
        await chunks.record(conn, "items", taken_over, sync.chunk_lease, ("50",), 50, 50)
    assert json.loads(
        await conn.fetchval("SELECT resume_key FROM syncd.chunks WHERE chunk = 0")
    ) == ["50"]


async def test_kill_9_during_a_parallel_load_then_resume(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 40_000)
    await conn.execute("ANALYZE src.items")  # the estimate that decides on a parallel load
    _, path = make_config(
        {
            "items": ITEMS
            | {"chunk_rows": 4000, "parallel": 2, "batch_size": 500, "chunk_lease": "2s"}
        }
    )
    process = await spawn_sync(path, "items")
    await wait_for_value(conn, "SELECT 1 FROM syncd.chunks WHERE status = 'done' LIMIT 1")
    process.send_signal(signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL
    done_before = await conn.fetchval("SELECT count(*) FROM syncd.chunks WHERE status = 'done'")
    assert done_before < 10

    final = await spawn_sync(path, "items")
    assert await final.wait() == 0

    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")
    chunks = await conn.fetch("SELECT status, rows_read, attempts FROM syncd.chunks")
    assert {row["status"] for row in chunks} == {"done"}
    # Each row was read once: chunks resumed after their last committed key.
    assert sum(row["rows_read"] for row in chunks) == 40_000
    assert any(row["attempts"] > 1 for row in chunks)  # the killed run's chunks, taken over


async def test_rows_changed_during_a_load_are_all_there_after_the_next_run(
    conn: asyncpg.Connection, db: str, make_config
) -> None:
    await create_items(conn, 20_000)
    await conn.execute("ANALYZE src.items")  # the estimate that decides on a parallel load
    config, _ = make_config({"items": ITEMS | {"chunk_rows": 2000, "batch_size": 300}})
    loading = asyncio.Event()
    changes = 0

    async def write_while_loading() -> None:
        nonlocal changes
        writer = await asyncpg.connect(db)
        try:
            await loading.wait()
            while loading.is_set():
                # Rows in chunks already read, in chunks not read yet, and new rows.
                await writer.execute(
                    "UPDATE src.items SET name = name || '+', updated_at = clock_timestamp()"
                    " WHERE id % 997 = $1",
                    changes % 997,
                )
                await writer.execute(
                    "INSERT INTO src.items VALUES ($1, clock_timestamp(), 'new', 1)",
                    100_000 + changes,
                )
                changes += 1
                await asyncio.sleep(0.01)
        finally:
            await writer.close()

    class Starts:
        def run_started(self, sync_name: str, run_id: str, rows_estimate: int | None) -> None:
            loading.set()

        def batch_committed(self, report: object) -> None:
            pass

        def chunk_changed(self, report: object) -> None:
            pass

    changing = asyncio.create_task(write_while_loading())
    result = await run_sync(config, "items", observer=Starts())  # type: ignore[arg-type]
    loading.clear()
    await changing
    assert result.status == "succeeded", result.error
    assert changes > 5

    assert (await run_sync(config, "items")).status == "succeeded"
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")

"""Schema drift: a source whose columns change under a running mirror."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import asyncpg
import pytest
from structlog.testing import capture_logs

from syncd import runner as runner_module
from syncd import target as target_module
from syncd.config import SchemaChangePolicy
from syncd.errors import SchemaChanged, TargetError
from syncd.schema import follow, widens
from syncd.sources import Column, Shape
from tests.conftest import ConfigFactory
from tests.helpers import Recorder, create_items, fingerprint, run_sync, wait_for_value
from tests.test_many import daemon_parts

ITEMS = {"table": "src.items", "key": ["id"], "cursor": "updated_at", "target_table": "items"}


async def columns_of(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
        table,
    )
    return {row[0]: row[1] for row in rows}


async def test_an_added_column_is_added_and_backfilled_for_every_row(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    await create_items(conn, 300)
    config, _ = make_config({"items": ITEMS | {"batch_size": 50}})
    await run_sync(config, "items")

    # Three new columns: one with a default, one left NULL, one filled by a later update
    # that does not touch the cursor, as a migration script would.
    await conn.execute(
        "ALTER TABLE src.items ADD COLUMN region text DEFAULT 'EMEA',"
        " ADD COLUMN note text, ADD COLUMN score integer"
    )
    await conn.execute("UPDATE src.items SET score = id % 7 WHERE id % 3 = 0")
    with capture_logs() as logs:
        result = await run_sync(config, "items")

    changes = {(e["column"], e["action"]) for e in logs if e["event"] == "schema_change"}
    assert changes == {("region", "added"), ("note", "added"), ("score", "added")}
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")
    # Every row got its region; the rows with a score were among them: each written once.
    assert (result.rows_read, result.rows_written) == (300, 300)
    again = await run_sync(config, "items")
    assert (again.rows_read, again.rows_written) == (0, 0)
    history = await conn.fetch("SELECT column_name, change, action FROM syncd.schema_changes")
    assert {tuple(r) for r in history} == {
        ("region", "added", "added"),
        ("note", "added", "added"),
        ("score", "added", "added"),
    }


async def test_a_backfill_goes_on_across_runs_and_a_changed_row_is_never_set_back(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    await create_items(conn, 200)
    config, _ = make_config({"items": ITEMS | {"batch_size": 20}})
    await run_sync(config, "items")
    await conn.execute("ALTER TABLE src.items ADD COLUMN region text DEFAULT 'EMEA'")

    first = await run_sync(config, "items", backfill_batches=3)
    assert first.rows_written == 60
    # A row the backfill has not reached changes (its cursor moves), and one it has.
    await conn.execute(
        "UPDATE src.items SET name = 'changed', updated_at = now() WHERE id IN (10, 150)"
    )
    second = await run_sync(config, "items", backfill_batches=2)
    third = await run_sync(config, "items")

    assert second.rows_read == 2 + 40 and third.rows_read == 200 - 100
    assert await conn.fetchval("SELECT backfill_columns FROM syncd.sync_state") == []
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")


async def test_a_dropped_column_is_kept_empty_from_then_on_or_stops_the_run(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    await create_items(conn, 20)
    config, _ = make_config({"items": ITEMS})
    await run_sync(config, "items")
    await conn.execute("ALTER TABLE src.items DROP COLUMN amount")
    await conn.execute("UPDATE src.items SET updated_at = now() WHERE id = 5")

    refusing, _ = make_config({"items": ITEMS | {"schema_changes": {"dropped_column": "fail"}}})
    with pytest.raises(SchemaChanged, match=r"amount \(numeric\(12,2\)\) was dropped"):
        await run_sync(refusing, "items")
    assert await conn.fetchval("SELECT amount FROM public.items WHERE id = 5") == 6.25

    kept = await run_sync(config, "items")

    assert kept.rows_written == 1
    assert "amount" in await columns_of(conn, "public.items")
    amounts = dict(await conn.fetch("SELECT id, amount FROM public.items WHERE id IN (4, 5)"))
    assert amounts == {4: 5, 5: None}, "a row written after the drop has NULL there"


async def test_a_new_column_under_fail_stops_the_run_and_its_record_says_what_changed(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    await create_items(conn, 20)
    config, _ = make_config({"items": ITEMS | {"schema_changes": {"new_column": "fail"}}})
    await run_sync(config, "items")
    await conn.execute("ALTER TABLE src.items ADD COLUMN region text DEFAULT 'EMEA'")
    await conn.execute("UPDATE src.items SET name = 'changed', updated_at = now() WHERE id = 5")

    with pytest.raises(SchemaChanged, match=r"region \(text\) was added"):
        await run_sync(config, "items")

    assert "region" not in await columns_of(conn, "public.items")
    assert await conn.fetchval("SELECT name FROM public.items WHERE id = 5") == "item 5"
    status, error = await conn.fetchrow(
        "SELECT status, error FROM syncd.runs ORDER BY started_at DESC LIMIT 1"
    )
    assert status == "failed" and "region (text) was added" in error


async def test_a_busy_target_is_not_altered_and_the_next_run_follows_the_change(
    conn: asyncpg.Connection, make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(target_module, "LOCK_TIMEOUT_S", 0.5)
    await create_items(conn, 20)
    config, _ = make_config({"items": ITEMS})
    await run_sync(config, "items")
    await conn.execute("ALTER TABLE src.items ADD COLUMN region text DEFAULT 'EMEA'")

    reader = await asyncpg.connect(config.target.dsn)
    try:
        # A report reading the mirror in a long transaction holds a lock the ALTER must wait for.
        transaction = reader.transaction()
        await transaction.start()
        await reader.fetchval("SELECT count(*) FROM public.items")
        with pytest.raises(TargetError, match=r"is busy: it could not be altered within 0\.5 s"):
            await run_sync(config, "items")
        await transaction.rollback()
    finally:
        await reader.close()

    assert "region" not in await columns_of(conn, "public.items")
    followed = await run_sync(config, "items")
    assert followed.rows_written == 20
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")


WIDENINGS = [
    ("integer", "bigint", "2147483647"),
    ("character varying(10)", "character varying(20)", "'0123456789'"),
    ("character varying(10)", "text", "'0123456789'"),
    ("numeric(10,2)", "numeric(14,4)", "12345678.91"),
    ("numeric(10,2)", "numeric", "12345678.91"),
    (
        "timestamp(3) without time zone",
        "timestamp(6) without time zone",
        "'2025-01-01 01:02:03.456'",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "value"), WIDENINGS, ids=[f"{o}->{n}" for o, n, _ in WIDENINGS]
)
async def test_a_type_that_grew_is_widened_in_the_target(
    conn: asyncpg.Connection, make_config: ConfigFactory, old: str, new: str, value: str
) -> None:
    await create_items(conn, 10)
    await conn.execute(f"ALTER TABLE src.items ADD COLUMN v {old} DEFAULT {value}")
    config, _ = make_config({"items": ITEMS})
    await run_sync(config, "items")
    await conn.execute(f"ALTER TABLE src.items ALTER COLUMN v TYPE {new}")
    await conn.execute("UPDATE src.items SET updated_at = now() WHERE id = 1")

    result = await run_sync(config, "items")

    assert (await columns_of(conn, "public.items"))["v"] == new
    assert result.schema_changes == ["widened"]
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")


@pytest.mark.parametrize(
    ("old", "new", "value"),
    [("text", "integer", "'7'"), ("numeric(10,2)", "numeric(10,1)", "1.5")],
)
async def test_a_type_change_that_could_change_values_stops_the_run_writing_nothing(
    conn: asyncpg.Connection, make_config: ConfigFactory, old: str, new: str, value: str
) -> None:
    await create_items(conn, 10)
    await conn.execute(f"ALTER TABLE src.items ADD COLUMN v {old} DEFAULT {value}")
    config, path = make_config({"items": ITEMS})
    await run_sync(config, "items")
    await conn.execute(
        f"ALTER TABLE src.items ALTER COLUMN v DROP DEFAULT,"
        f" ALTER COLUMN v TYPE {new} USING v::{new}"
    )
    await conn.execute("UPDATE src.items SET name = 'changed', updated_at = now()")

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncd", "-c", str(path), "sync", "items",
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    _, stderr = await process.communicate()

    assert process.returncode == 65
    line = stderr.decode().strip().splitlines()[-1]
    assert f"v changed from {old} to {new}" in line and "--full-refresh" in line
    assert await conn.fetchval("SELECT count(*) FROM public.items WHERE name = 'changed'") == 0
    assert (await columns_of(conn, "public.items"))["v"] == old


async def test_an_ignored_column_is_not_synced_and_said_so_each_run(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    await create_items(conn, 10)
    config, _ = make_config({"items": ITEMS | {"schema_changes": {"new_column": "ignore"}}})
    await run_sync(config, "items")
    await conn.execute("ALTER TABLE src.items ADD COLUMN secret text DEFAULT 'x'")

    for _ in range(2):
        with capture_logs() as logs:
            await run_sync(config, "items")
        assert [e["action"] for e in logs if e["event"] == "schema_change"] == ["ignored"]
    assert "secret" not in await columns_of(conn, "public.items")


async def test_a_query_sync_follows_its_query_s_new_column(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    await create_items(conn, 30)
    query = {"query": "SELECT * FROM src.items", "key": ["id"], "cursor": "updated_at"}
    config, _ = make_config({"q": query | {"target_table": "q", "batch_size": 7}})
    await run_sync(config, "q")
    await conn.execute("ALTER TABLE src.items ADD COLUMN region text DEFAULT 'AMER'")

    await run_sync(config, "q")

    assert await fingerprint(conn, "public.q") == await fingerprint(conn, "src.items")


async def test_a_column_added_during_a_run_is_followed_by_the_next(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    await create_items(conn, 500)
    config, _ = make_config({"items": ITEMS | {"batch_size": 25}})
    recorder = Recorder()
    adder = await asyncpg.connect(config.target.dsn)

    async def add_a_column_mid_run() -> None:
        await recorder.first_batch.wait()
        await adder.execute("ALTER TABLE src.items ADD COLUMN region text DEFAULT 'APAC'")

    adding = asyncio.create_task(add_a_column_mid_run())
    first = await run_sync(config, "items", observer=recorder)
    await adding
    await adder.close()
    second = await run_sync(config, "items")

    assert first.status == second.status == "succeeded"
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")


@pytest.mark.timeout(120)
async def test_a_backfill_killed_half_way_resumes_where_it_was(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    await create_items(conn, 20_000)
    _, path = make_config({"items": ITEMS | {"batch_size": 100}})
    config, _ = make_config({"items": ITEMS | {"batch_size": 100}})
    await run_sync(config, "items")
    await conn.execute("ALTER TABLE src.items ADD COLUMN region text DEFAULT 'EMEA'")

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncd", "-c", str(path), "sync", "items",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await wait_for_value(
        conn,
        "SELECT true FROM syncd.sync_state"
        " WHERE (backfill_position ->> 0)::bigint BETWEEN 2000 AND 15000",
    )
    os.kill(process.pid, signal.SIGKILL)
    await process.wait()
    reached = int(await conn.fetchval("SELECT backfill_position ->> 0 FROM syncd.sync_state"))
    filled = await conn.fetchval("SELECT count(*) FROM public.items WHERE region IS NOT NULL")
    assert filled == reached, "the position and the rows moved together"

    resumed = await run_sync(config, "items")

    assert resumed.rows_read == 20_000 - reached, "the backfill started over"
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")


def test_widening_is_only_where_no_value_can_change() -> None:
    assert widens("smallint", "integer") and widens("integer", "numeric(12,0)")
    assert not widens("bigint", "integer") and not widens("bigint", "numeric(18,0)")
    assert widens("numeric(10,2)", "numeric(12,3)") and not widens("numeric(10,2)", "numeric(11,4)")
    assert not widens("numeric", "numeric(38,10)")
    assert widens("timestamp(0) without time zone", "timestamp(6) without time zone")
    assert not widens("timestamp(6) with time zone", "timestamp(6) without time zone")
    assert not widens("text", "character varying(100)")


def test_a_rename_is_a_drop_and_an_add() -> None:
    shape = Shape(
        columns=(Column("ID", "id", "integer"), Column("TITLE", "title", "text")),
        key=("ID",),
        cursor=None,
    )
    previous = [("ID", "integer", "id"), ("NAME", "text", "name")]

    followed = follow(previous, shape, SchemaChangePolicy(), ignored=[], dropped=[])

    assert [(c.column, c.change, c.action) for c in followed.changes] == [
        ("TITLE", "added", "added"),
        ("NAME", "dropped", "kept"),
    ]
    assert followed.dropped == ["name"] and followed.backfill == ["TITLE"]


async def test_the_daemon_backfills_in_slices_between_other_runs_and_counts_the_change(
    conn: asyncpg.Connection, make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_items(conn, 1_000)
    config, _ = make_config({"items": ITEMS | {"batch_size": 50}})
    monkeypatch.setattr(runner_module, "BACKFILL_BATCHES", 4)
    async with daemon_parts(config) as (runner, _, metrics):
        await runner.wait(runner.trigger("items", trigger="test"))
        await conn.execute("ALTER TABLE src.items ADD COLUMN region text DEFAULT 'EMEA'")

        with capture_logs() as logs:
            result = await runner.wait(runner.trigger("items", trigger="test"))

        assert result.status == "succeeded" and result.rows_written == 1_000
        yielded = [e for e in logs if e["event"] == "run_yielded" and e["reason"] == "backfill"]
        assert len(yielded) >= 1_000 // 50 // 4 - 1, "each slice of 4 batches queued again"
        assert 'syncd_schema_changes_total{action="added",sync_name="items"} 1.0' in (
            metrics.render().decode()
        )
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")

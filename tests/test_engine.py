"""The engine's promises, each checked against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from syncd.errors import (
    AlreadyRunning,
    ConfigError,
    SchemaMismatch,
    SourceError,
    SyncdError,
    TargetError,
)
from syncd.sources.postgres import PostgresSource
from tests.helpers import Recorder, create_items, fingerprint, run_sync

ITEMS = {"table": "src.items", "key": ["id"], "target_table": "public.items"}
ITEMS_BY_TIME = ITEMS | {"cursor": "updated_at"}


async def test_ten_thousand_ties_in_batches_of_seven_neither_skip_nor_repeat(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 10_000, same_time=True)
    config, _ = make_config({"items": ITEMS_BY_TIME | {"batch_size": 7}})

    result = await run_sync(config, "items")

    assert result.status == "succeeded"
    assert result.rows_read == 10_000
    assert result.batches == math.ceil(10_000 / 7)
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")
    state = await conn.fetchrow("SELECT * FROM syncd.sync_state WHERE sync_name = 'items'")
    assert state["current_offset"] == 10_000
    assert state["total_synced"] == 10_000
    assert state["is_complete"] is True
    assert state["position"] == '["2025-01-01 00:00:00+00", "10000"]'


@pytest.mark.parametrize("rows", [0, 1, 30, 31])
async def test_boundaries_of_an_exact_and_a_ragged_last_batch(
    conn: asyncpg.Connection, make_config, rows: int
) -> None:
    await create_items(conn, 1)
    await conn.execute("TRUNCATE src.items")
    if rows:
        await create_items(conn, rows)
    config, _ = make_config({"items": ITEMS_BY_TIME | {"batch_size": 10}})

    result = await run_sync(config, "items")

    assert (result.status, result.rows_read, result.batches) == (
        "succeeded",
        rows,
        math.ceil(rows / 10),
    )
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")
    assert await conn.fetchval("SELECT is_complete FROM syncd.sync_state") is True


async def test_a_stopped_run_resumes_from_its_saved_position(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 1_000)
    config, _ = make_config({"items": ITEMS_BY_TIME | {"batch_size": 100}})
    stop = asyncio.Event()

    first = await run_sync(config, "items", observer=Recorder(stop_after=3, stop=stop), stop=stop)
    assert (first.status, first.rows_read) == ("cancelled", 300)
    assert await conn.fetchval("SELECT count(*) FROM public.items") == 300
    assert await conn.fetchval("SELECT is_complete FROM syncd.sync_state") is False

    second = await run_sync(config, "items")
    assert (second.status, second.rows_read) == ("succeeded", 700)
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")
    runs = await conn.fetch("SELECT status, rows_read FROM syncd.runs ORDER BY started_at")
    assert [(r["status"], r["rows_read"]) for r in runs] == [("cancelled", 300), ("succeeded", 700)]


async def test_without_a_cursor_each_run_is_a_full_pass_that_resumes_mid_pass(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 250)
    config, _ = make_config({"items": ITEMS | {"batch_size": 100}})
    stop = asyncio.Event()

    first = await run_sync(config, "items", observer=Recorder(stop_after=1, stop=stop), stop=stop)
    second = await run_sync(config, "items")
    assert (first.rows_read, second.rows_read) == (100, 150)

    await conn.execute("UPDATE src.items SET name = 'renamed' WHERE id IN (5, 205)")
    third = await run_sync(config, "items")
    assert (third.rows_read, third.rows_written, third.rows_unchanged) == (250, 2, 248)
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")


async def test_lookback_catches_a_late_commit_and_leaves_unchanged_rows_alone(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 100)  # cursor values 1 s apart, up to +100 s
    config, _ = make_config({"items": ITEMS_BY_TIME | {"batch_size": 8, "lookback": "10s"}})
    await run_sync(config, "items")
    xmin_before = await conn.fetchval("SELECT sum(xmin::text::bigint) FROM public.items")

    # Committed late: cursor values inside (and one outside) the look-back window.
    await conn.execute(
        """INSERT INTO src.items VALUES
           (1001, timestamptz '2025-01-01 00:01:35+00', 'late, inside window', 1),
           (1002, timestamptz '2025-01-01 00:00:30+00', 'late, outside window', 2)"""
    )
    with capture_logs() as logs:
        result = await run_sync(config, "items")

    ids = {r["id"] for r in await conn.fetch("SELECT id FROM public.items WHERE id > 1000")}
    assert ids == {1001}
    assert result.rows_written == 1
    assert result.rows_unchanged == result.rows_read - 1 >= 10
    xmin_after = await conn.fetchval(
        "SELECT sum(xmin::text::bigint) FROM public.items WHERE id <= 100"
    )
    assert xmin_after == xmin_before, "re-read rows that did not change were rewritten"
    events = [e["event"] for e in logs]
    assert events[0] == "run_started" and events[-1] == "run_finished"
    assert await conn.fetchval("SELECT position FROM syncd.sync_state") == (
        '["2025-01-01 00:01:40+00", "100"]'
    )


async def test_rows_inserted_mid_run_are_read_once(conn: asyncpg.Connection, make_config) -> None:
    await create_items(conn, 2_000)
    config, _ = make_config({"items": ITEMS_BY_TIME | {"batch_size": 50}})
    writer = await asyncpg.connect(config.target.dsn)
    recorder = Recorder()

    async def insert_while_running() -> None:
        await recorder.first_batch.wait()
        # The ties go in at once, 39 batches before the run reaches their cursor value: a
        # tie written after the run has passed it would be a late commit, which only
        # lookback catches, and the test would measure the race instead of the keyset.
        await writer.execute(
            "INSERT INTO src.items SELECT 20000 + n,"
            " timestamptz '2025-01-01 00:00:00+00' + 2000 * interval '1 second', 'tie', 2"
            " FROM generate_series(0, 4) AS n"  # shares the cursor value of the last original row
        )
        for n in range(5):
            await writer.execute(
                "INSERT INTO src.items VALUES ($1, clock_timestamp(), 'new', 1)", 10_000 + n
            )
            await asyncio.sleep(0.01)

    inserting = asyncio.create_task(insert_while_running())
    first = await run_sync(config, "items", observer=recorder)
    await inserting
    second = await run_sync(config, "items")
    await writer.close()

    assert first.rows_read + second.rows_read == 2_010
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")


TYPES_DDL = """
CREATE TYPE src.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN src.positive AS integer CHECK (VALUE > 0);
CREATE TABLE src.typed (
    id        bigint PRIMARY KEY,
    changed   timestamptz,
    amount    numeric(38, 10),
    big       numeric,
    ratio     double precision,
    at_local  timestamp,
    at_zone   timestamptz,
    day       date,
    span      interval,
    note      text,
    code      varchar(12),
    blob      bytea,
    doc       jsonb,
    raw_doc   json,
    tags      text[],
    numbers   integer[],
    flag      boolean,
    uid       uuid,
    feeling   src.mood,
    count     src.positive
);
"""

TYPES_ROWS = r"""
INSERT INTO src.typed VALUES
 (1, now(), 1234567890123456789012345678.0123456789,
  -99999999999999999999999999999999999999.5, 'NaN', '2024-02-29 23:59:59.999999',
  '2024-03-31 01:30:00+02', '0001-01-01', '1 year 2 mons 3 days 04:05:06.789',
  'emoji 🚀 "quotes" ''single'' back\slash tab	end', 'x; drop', '\x00ff10',
  '{"a": [1, 2, {"b": null}], "é": "ü"}', '{"dup": 1, "dup": 2}',
  ARRAY['a', NULL, 'c,d', '"q"'], ARRAY[1, NULL, -3], true,
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', 7),
 (2, now(), -0.0000000001, 10 ^ 100::numeric, '-Infinity', '1970-01-01',
  '2024-10-27 03:00:00 Europe/Berlin', 'infinity', '-1 day', '', '', '', '[]', '[]',
  '{}', '{}', false, NULL, 'sad', 1),
 (3, now(), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
"""


async def test_types_round_trip_losslessly(conn: asyncpg.Connection, make_config) -> None:
    await conn.execute(TYPES_DDL)
    await conn.execute(TYPES_ROWS)
    config, _ = make_config(
        {"typed": {"table": "src.typed", "cursor": "changed", "target_table": "public.typed"}}
    )

    result = await run_sync(config, "typed")

    assert result.status == "succeeded" and result.rows_read == 3
    assert await fingerprint(conn, "public.typed") == await fingerprint(conn, "src.typed")
    types = dict(
        await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'public.typed'::regclass AND attnum > 0"
        )
    )
    assert types["amount"] == "numeric(38,10)"
    assert types["big"] == "numeric"
    assert types["at_zone"] == "timestamp with time zone"
    assert types["feeling"] == "text" and types["count"] == "integer"
    assert await conn.fetchval("SELECT raw_doc::text FROM public.typed WHERE id = 1") == (
        '{"dup": 1, "dup": 2}'
    )
    # A second run re-reads nothing and rewrites nothing, json column included.
    again = await run_sync(config, "typed")
    assert (again.rows_read, again.rows_written) == (0, 0)


async def test_an_existing_target_missing_a_column_fails_before_writing(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 10)
    await conn.execute("CREATE TABLE public.items (id bigint PRIMARY KEY, updated_at timestamptz)")
    config, _ = make_config({"items": ITEMS_BY_TIME})

    with pytest.raises(SchemaMismatch, match=r"no column 'name', 'amount'"):
        await run_sync(config, "items")
    assert await conn.fetchval("SELECT count(*) FROM public.items") == 0
    run = await conn.fetchrow("SELECT status, error FROM syncd.runs")
    assert run["status"] == "failed" and "'amount'" in run["error"]


async def test_an_existing_target_with_an_incompatible_type_is_named(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 10)
    await conn.execute(
        "CREATE TABLE public.items (id bigint PRIMARY KEY, updated_at timestamptz,"
        " name text, amount inet)"
    )
    config, _ = make_config({"items": ITEMS_BY_TIME})

    with pytest.raises(SchemaMismatch, match=r'column "amount" is of type inet'):
        await run_sync(config, "items")


async def test_a_hostile_table_name_is_only_a_name(conn: asyncpg.Connection, make_config) -> None:
    await conn.execute("CREATE TABLE victim (id int)")
    await create_items(conn, 5)
    config, _ = make_config(
        {"items": ITEMS_BY_TIME | {"target_table": 'public."x; drop table victim; --"'}}
    )

    result = await run_sync(config, "items")

    assert result.rows_read == 5
    assert await conn.fetchval("SELECT to_regclass('public.victim')") is not None
    assert await conn.fetchval('SELECT count(*) FROM public."x; drop table victim; --"') == 5


async def test_a_missing_source_column_is_named(conn: asyncpg.Connection, make_config) -> None:
    await create_items(conn, 5)
    config, _ = make_config({"items": ITEMS | {"cursor": "modified"}})

    with pytest.raises(SourceError, match=r"has no column 'modified'"):
        await run_sync(config, "items")


async def test_a_second_run_of_the_same_sync_does_not_start(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 3_000)
    config, _ = make_config({"items": ITEMS_BY_TIME | {"batch_size": 10}})
    recorder = Recorder()
    first = asyncio.create_task(run_sync(config, "items", observer=recorder))
    await recorder.first_batch.wait()

    with pytest.raises(AlreadyRunning, match=r"held by pid \d+ on .+ since"):
        await run_sync(config, "items")

    assert (await first).rows_read == 3_000
    assert await conn.fetchval("SELECT count(*) FROM syncd.runs") == 1


async def test_a_terminated_connection_is_retried_and_the_run_completes(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 3_000)
    config, _ = make_config(
        {"items": ITEMS_BY_TIME | {"batch_size": 100, "retry": {"initial_delay": "50ms"}}}
    )
    recorder = Recorder()
    killer = await asyncpg.connect(config.target.dsn)

    async def terminate_syncd_sessions() -> int:
        await recorder.fifth_batch.wait()
        return int(
            await killer.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'syncd' AND datname = current_database()"
            )
        )

    killing = asyncio.create_task(terminate_syncd_sessions())
    with capture_logs() as logs:
        result = await run_sync(config, "items", observer=recorder)
    terminated = await killing
    await killer.close()

    assert terminated >= 1
    assert result.status == "succeeded"
    assert any(e["event"] == "retrying" and e["attempt"] == 1 for e in logs)
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")
    assert await conn.fetchval("SELECT current_offset FROM syncd.sync_state") == 3_000


async def test_a_value_the_target_refuses_is_named_by_sync_row_and_column(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 60)
    await conn.execute("UPDATE src.items SET amount = 123456.78 WHERE id = 37")
    # A narrower target made by hand: amount fits numeric(6,2) for every row but one.
    await conn.execute(
        "CREATE TABLE public.items (id bigint PRIMARY KEY, updated_at timestamptz,"
        " name text, amount numeric(6, 2))"
    )
    config, _ = make_config({"items": ITEMS_BY_TIME | {"batch_size": 10}})

    with pytest.raises(TargetError) as refused:
        await run_sync(config, "items")

    message = str(refused.value)
    assert message.startswith("sync 'items': the target table public.items refused a batch")
    assert "column 'amount' (numeric(6,2)) of the row id=37" in message
    assert "numeric field overflow" in message
    # The batches before it are committed; nothing of the refused one is.
    assert await conn.fetchval("SELECT count(*) FROM public.items") == 30
    assert await conn.fetchval("SELECT current_offset FROM syncd.sync_state") == 30
    run = await conn.fetchrow("SELECT status, error FROM syncd.runs")
    assert run["status"] == "failed" and "row id=37" in run["error"]


async def test_a_lock_held_on_the_target_past_the_statement_timeout_fails_the_run_clearly(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 50)
    config, _ = make_config(
        {"items": ITEMS_BY_TIME | {"batch_size": 10}},
        target={"statement_timeout": "500ms"},
    )
    await run_sync(config, "items")
    await conn.execute(
        "UPDATE src.items SET name = 'changed', updated_at = updated_at + interval '1h'"
    )

    blocker = await asyncpg.connect(config.target.dsn)
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute("LOCK TABLE public.items IN ACCESS EXCLUSIVE MODE")
    with pytest.raises(SyncdError, match="canceling statement due to statement timeout"):
        await run_sync(config, "items")
    await transaction.rollback()
    await blocker.close()

    run = await conn.fetchrow("SELECT status, error FROM syncd.runs ORDER BY started_at DESC")
    assert run["status"] == "failed" and "statement timeout" in run["error"]
    assert (await run_sync(config, "items")).status == "succeeded"
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")


@pytest.mark.parametrize("cursor", [None, "updated_at"], ids=["key only", "cursor and key"])
async def test_a_null_key_stops_the_run_before_anything_is_written(
    conn: asyncpg.Connection, make_config, cursor: str | None
) -> None:
    # No primary key here: the key named in the config is an ordinary, nullable column.
    await conn.execute(
        "CREATE TABLE src.loose AS SELECT n::bigint AS id,"
        " timestamptz '2025-01-01' + n * interval '1 s' AS updated_at, 'row ' || n AS name"
        " FROM generate_series(1, 50) AS n"
    )
    await conn.execute("UPDATE src.loose SET id = NULL WHERE id = 1")
    sync = {"table": "src.loose", "key": ["id"], "target_table": "public.loose", "batch_size": 4}
    config, _ = make_config({"loose": sync | ({"cursor": cursor} if cursor else {})})

    with pytest.raises(
        SourceError, match=r"the key of the source table src.loose holds NULL \('id' in 1 rows\)"
    ):
        await run_sync(config, "loose")

    assert await conn.fetchval("SELECT to_regclass('public.loose')") is None
    state = await conn.fetchrow("SELECT is_complete, position FROM syncd.sync_state")
    assert (state["is_complete"], state["position"]) == (False, None)


async def test_a_key_held_twice_in_a_batch_stops_the_run_naming_the_key(
    conn: asyncpg.Connection, make_config
) -> None:
    # No primary key here: nothing in the source keeps the named key unique.
    await conn.execute(
        "CREATE TABLE src.loose AS SELECT n::bigint AS id, 'row ' || n AS name"
        " FROM generate_series(1, 50) AS n"
    )
    await conn.execute("INSERT INTO src.loose VALUES (5, 'row 5 again')")
    await conn.execute("CREATE INDEX ON src.loose (id)")  # read batch by batch
    sync = {"table": "src.loose", "key": ["id"], "target_table": "public.loose", "batch_size": 4}
    config, _ = make_config({"loose": sync})

    with pytest.raises(
        SourceError,
        match=r"the key \(id\) is not unique in the source: one batch holds a key twice",
    ):
        await run_sync(config, "loose")

    # The batches before the one holding key 5 twice, and nothing of that one.
    assert await conn.fetchval("SELECT array_agg(id ORDER BY id) FROM public.loose") == [1, 2, 3, 4]


async def test_lag_leaves_rows_newer_than_the_source_clock_for_a_later_run(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 5)
    await conn.execute(
        "UPDATE src.items SET updated_at = now() - interval '6 hours' + id * interval '1 s'"
    )
    await conn.execute(
        "INSERT INTO src.items VALUES (6, now() - interval '10 minutes', 'recent', 1)"
    )
    config, _ = make_config({"items": ITEMS_BY_TIME | {"lag": "1h"}})

    first = await run_sync(config, "items")
    assert first.rows_read == 5, "a row stamped within the lag was read"

    # A transaction that stamped its row half an hour ago commits only now; then three
    # hours pass (every stamp moves back by that much, which is the same thing).
    await conn.execute("INSERT INTO src.items VALUES (7, now() - interval '30 minutes', 'late', 1)")
    await conn.execute(
        "UPDATE src.items SET updated_at = updated_at - interval '3 hours' WHERE id > 5"
    )
    second = await run_sync(config, "items")

    assert second.rows_read == 2
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM public.items ORDER BY id")]
    assert ids == [1, 2, 3, 4, 5, 6, 7]


async def test_a_lag_on_a_cursor_without_time_zone_needs_the_zone_it_is_written_in(
    db: str, conn: asyncpg.Connection, make_config
) -> None:
    # Written by an application in New York, from its local clock.
    await conn.execute("CREATE TABLE src.local (id int PRIMARY KEY, changed timestamp)")
    await conn.execute(
        "INSERT INTO src.local VALUES (1, (now() AT TIME ZONE 'America/New_York') - interval '2h'),"
        " (2, (now() AT TIME ZONE 'America/New_York') - interval '10 min')"
    )
    sync = {"table": "src.local", "cursor": "changed", "lag": "1h", "target_table": "local"}
    config, _ = make_config({"local": sync})

    with pytest.raises(ConfigError, match=r"^sources.pg.cursor_time_zone: lag holds back"):
        await run_sync(config, "local")

    zoned, _ = make_config(
        {"local": sync},
        sources={"pg": {"kind": "postgres", "dsn": db, "cursor_time_zone": "America/New_York"}},
    )
    result = await run_sync(zoned, "local")
    assert result.rows_read == 1, "a row stamped ten minutes ago (New York time) was read"


async def test_a_batch_ends_at_batch_bytes_before_batch_size(
    conn: asyncpg.Connection, make_config
) -> None:
    # About 1 MB of random (so incompressible) bytes a row.
    await conn.execute(
        "CREATE TABLE src.wide AS SELECT n AS id, (SELECT string_agg(decode(md5(random()::text"
        " || n || g), 'hex'), '') FROM generate_series(1, 65536) AS g) AS blob"
        " FROM generate_series(1, 10) AS n"
    )
    await conn.execute("ALTER TABLE src.wide ADD PRIMARY KEY (id)")
    config, _ = make_config(
        {"wide": {"table": "src.wide", "target_table": "wide", "batch_bytes": "2500kB"}}
    )
    recorder = Recorder()

    result = await run_sync(config, "wide", observer=recorder)

    # Rows are kept while those before them are under the limit: three of about 1 MB.
    assert [r.rows for r in recorder.reports] == [3, 3, 3, 1]
    assert result.rows_read == 10
    assert await fingerprint(conn, "public.wide") == await fingerprint(conn, "src.wide")


async def test_the_progress_estimate_is_never_below_the_rows_read(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 20)
    await conn.execute("ALTER TABLE src.items SET (autovacuum_enabled = false)")
    await conn.execute("ANALYZE src.items")
    await create_items(conn, 2_000, start_id=21)  # statistics still say 20 rows
    config, _ = make_config({"items": ITEMS | {"batch_size": 100}})
    recorder = Recorder()

    await run_sync(config, "items", observer=recorder)

    assert recorder.estimates == [20]
    assert all(r.rows_estimate is not None for r in recorder.reports)
    assert all(r.rows_estimate >= r.run_rows_read for r in recorder.reports)  # type: ignore[operator]
    # Once passed, the estimate was made again from what was left, not only raised.
    assert recorder.reports[0].rows_estimate > recorder.reports[0].run_rows_read  # type: ignore[operator]


def peak_rss_of_a_sync(config: Path, name: str) -> int:
    """The highest resident memory, in bytes, of a ``syncd sync`` process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd", "-c", str(config), "sync", name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0
    return usage.ru_maxrss * 1024


@pytest.mark.timeout(120)
async def test_memory_is_bounded_by_bytes_not_by_rows(
    conn: asyncpg.Connection, make_config
) -> None:
    # 24 rows of 4 MB of random (so incompressible) bytes: 96 MB, one batch by row count.
    await conn.execute(
        "CREATE TABLE src.wide AS SELECT n AS id, (SELECT string_agg(decode(md5(random()::text"
        " || n || g), 'hex'), '') FROM generate_series(1, 262144) AS g) AS blob"
        " FROM generate_series(1, 24) AS n"
    )
    await conn.execute("CREATE TABLE src.narrow AS SELECT * FROM src.wide WHERE id = 1")
    await conn.execute("ALTER TABLE src.wide ADD PRIMARY KEY (id)")
    await conn.execute("ALTER TABLE src.narrow ADD PRIMARY KEY (id)")
    _, path = make_config(
        {
            "wide": {"table": "src.wide", "target_table": "wide", "batch_bytes": "16MB"},
            "narrow": {"table": "src.narrow", "target_table": "narrow"},
        }
    )

    narrow = await asyncio.to_thread(peak_rss_of_a_sync, path, "narrow")
    wide = await asyncio.to_thread(peak_rss_of_a_sync, path, "wide")

    print(f"peak RSS: one row {narrow / 2**20:.0f} MiB, 96 MB of rows {wide / 2**20:.0f} MiB")
    assert wide - narrow < 48 * 2**20, "memory grew with the rows a run read"
    assert await fingerprint(conn, "public.wide") == await fingerprint(conn, "src.wide")


async def test_without_an_index_on_the_cursor_each_run_reads_in_one_pass(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 1)
    await conn.execute("DROP INDEX src.items_updated_at_id_idx")
    await create_items(conn, 999, start_id=2)
    config, _ = make_config({"items": ITEMS_BY_TIME | {"batch_size": 10}})
    recorder = Recorder()

    with capture_logs() as logs:
        first = await run_sync(config, "items", observer=recorder)

    (warning,) = [e for e in logs if e["event"] == "no_usable_index"]
    assert warning["suggestion"] == 'CREATE INDEX ON "src"."items" ("updated_at", "id")'
    assert [r.rows for r in recorder.reports] == [1_000], "one batch would scan the table each"
    await conn.execute("UPDATE src.items SET name = 'new', updated_at = now() WHERE id % 100 = 0")
    second = await run_sync(config, "items")
    assert (first.rows_read, second.rows_read, second.batches) == (1_000, 10, 1)
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")


async def test_a_keyset_that_does_not_move_stops_the_run_instead_of_looping(
    conn: asyncpg.Connection, make_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_items(conn, 10)
    config, _ = make_config({"items": ITEMS_BY_TIME | {"batch_size": 1}})
    compare = PostgresSource._compare

    def at_or_after(described, order, operator, position, offset):  # type: ignore[no-untyped-def]
        # A source whose "after" takes the position's own row again, as a bind of the
        # wrong type does in Oracle.
        return compare(described, order, ">=" if operator == ">" else operator, position, offset)

    monkeypatch.setattr(PostgresSource, "_compare", staticmethod(at_or_after))

    with pytest.raises(SourceError, match=r"returned rows up to .* twice"):
        await asyncio.wait_for(run_sync(config, "items"), timeout=30)

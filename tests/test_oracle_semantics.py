"""The Oracle source under the real engine, over PostgreSQL dressed as Oracle.

See tests/oracle/harness.py for what the fake does and where it follows Oracle
rather than PostgreSQL. These tests check keyset semantics (ties, boundaries,
resume, late commits, snapshots) and the conversion of Oracle-shaped values;
they cannot check Oracle's own SQL semantics, which tests/oracle/ does when an
Oracle database is at hand.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg
import oracledb
import pytest
from structlog.testing import capture_logs

from syncd.config import Config
from syncd.errors import ConfigError, SourceError
from syncd.sources import Limits, Window, open_source, oracle_describe, oracle_session
from syncd.sources.oracle import FETCH_ROWS
from tests.helpers import Recorder, fingerprint, run_sync
from tests.oracle.harness import FakeOracle, declare, fake_oracle

SOURCES = {
    "crm": {"kind": "oracle", "dsn": "crm-db:1521/FREEPDB1", "user": "SYNCD", "password": "pw"}
}
ITEMS = {"source": "crm", "table": "CRM.ITEMS", "target_table": "public.items"}
ITEMS_BY_TIME = ITEMS | {"cursor": "UPDATED_AT"}
ITEMS_COLUMNS = {"ID": "NUMBER(12)", "UPDATED_AT": "TIMESTAMP(6)", "NAME": "VARCHAR2(100)"}


@pytest.fixture
async def oracle(db: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOracle]:
    async with fake_oracle(db, monkeypatch) as fake:
        yield fake


def configure(make_config: Any, **syncs: dict[str, Any]) -> Any:
    config, _ = make_config(syncs, sources=SOURCES)
    return config


async def create_items(oracle: FakeOracle, rows: int, cursor_sql: str) -> None:
    """``rows`` items whose UPDATED_AT is ``cursor_sql`` (in terms of n, the id)."""
    if ("CRM", "ITEMS") not in oracle.tables:
        await oracle.create_table("ITEMS", ITEMS_COLUMNS, primary_key=["ID"])
    await oracle.conn.execute(
        f"""INSERT INTO "CRM"."ITEMS"
            SELECT n, {cursor_sql}, 'item ' || n FROM generate_series(1, {rows}) AS n"""
    )


async def test_a_thousand_ties_at_a_fractional_second_neither_skip_nor_repeat(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    await create_items(oracle, 1_000, "timestamp '2025-01-01 00:00:00.500001'")
    config = configure(make_config, items=ITEMS_BY_TIME | {"batch_size": 7})

    result = await run_sync(config, "items")

    assert (result.status, result.rows_read) == ("succeeded", 1_000)
    assert result.batches == math.ceil(1_000 / 7)
    # Each batch's query asks Oracle for one batch of rows, not for the rest of the table.
    reads = [s for s in oracle.statements if '"CRM"."ITEMS"' in s.sql and "ORDER BY" in s.sql]
    assert len(reads) == result.batches  # the last, short, says there is no more
    assert max(s.rows_returned for s in reads) == 7
    assert await fingerprint(conn, "public.items") == await fingerprint(
        conn, '"CRM"."ITEMS"', key='"ID"'
    )
    assert await conn.fetchval("SELECT position FROM syncd.sync_state") == (
        '["2025-01-01 00:00:00.500001", "1000"]'
    )


async def first_batch_ends(source: Any, batches: int) -> list[tuple[str | None, ...]]:
    ends = []
    async for batch in source.read(Window(), Limits(2, 10**9)):
        ends.append(batch.end)
        if len(ends) == batches:
            break
    return ends


async def test_a_date_bind_would_never_get_past_a_tie_and_a_timestamp_bind_does(
    oracle: FakeOracle, make_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Five rows share a cursor value with a fraction of a second; batches of two.
    await create_items(oracle, 5, "timestamp '2025-01-01 12:00:00.5'")
    config = configure(make_config, items=ITEMS_BY_TIME)
    tie = "2025-01-01 12:00:00.500000"

    async with open_source(config.sources["crm"], config.syncs["items"]) as source:
        assert await first_batch_ends(source, 4) == [(tie, "2"), (tie, "4"), (tie, "5")]

    # Bound as DATE, the position loses its half second: every row of the tie is
    # "after" it again, and the keyset starts over from the same two rows forever.
    def as_date(*args: Any) -> Any:
        mapped = original(*args)
        if mapped is not None and mapped.bind is oracledb.DB_TYPE_TIMESTAMP:
            return replace(mapped, bind=oracledb.DB_TYPE_DATE)
        return mapped

    original = oracle_describe.oracle_type
    monkeypatch.setattr(oracle_describe, "oracle_type", as_date)
    async with open_source(config.sources["crm"], config.syncs["items"]) as source:
        assert await first_batch_ends(source, 4) == [(tie, "2")] * 4


@pytest.mark.parametrize("rows", [0, 1, 10, 11])
async def test_boundaries_of_an_exact_and_a_ragged_last_batch(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any, rows: int
) -> None:
    await create_items(oracle, rows, "timestamp '2025-01-01' + n * interval '1 second'")
    config = configure(make_config, items=ITEMS_BY_TIME | {"batch_size": 10})

    result = await run_sync(config, "items")

    assert (result.status, result.rows_read, result.batches) == (
        "succeeded",
        rows,
        math.ceil(rows / 10),
    )
    assert await conn.fetchval("SELECT count(*) FROM public.items") == rows
    assert await conn.fetchval("SELECT is_complete FROM syncd.sync_state") is True


@pytest.mark.parametrize("reset_delay", [0.0, 30.0], ids=["prompt reset", "reset that hangs"])
async def test_a_stopped_run_resumes_and_a_cancelled_fetch_unwinds_within_its_bound(
    oracle: FakeOracle,
    conn: asyncpg.Connection,
    make_config: Any,
    monkeypatch: pytest.MonkeyPatch,
    reset_delay: float,
) -> None:
    await create_items(oracle, 300, "timestamp '2025-01-01' + (n / 7) * interval '1 second'")
    config = configure(make_config, items=ITEMS_BY_TIME | {"batch_size": 20})
    stop = asyncio.Event()

    first = await run_sync(config, "items", observer=Recorder(stop_after=3, stop=stop), stop=stop)
    assert (first.status, first.rows_read) == ("cancelled", 60)

    # Shutdown in the middle of a fetch. The driver answers a cancelled call with a break
    # and a reset; one that does not come within RESET_S leaves its connection behind.
    monkeypatch.setattr(oracle_session, "RESET_S", 0.5)
    oracle.reset_delay = reset_delay
    recorder = Recorder()
    running = asyncio.create_task(run_sync(config, "items", observer=recorder))
    await recorder.first_batch.wait()
    oracle.fetch_gate = asyncio.Event()
    await oracle.fetch_waiting.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, timeout=10)
    pool = oracle.pools[-1]
    if reset_delay > oracle_session.RESET_S:
        pool.drop.assert_awaited_once()
        pool.release.assert_not_awaited()
    else:
        pool.release.assert_awaited_once()
        pool.drop.assert_not_awaited()
    pool.close.assert_awaited_once_with(force=True)

    oracle.fetch_gate, oracle.reset_delay = None, 0.0
    last = await run_sync(config, "items")
    assert last.status == "succeeded"
    assert await fingerprint(conn, "public.items") == await fingerprint(
        conn, '"CRM"."ITEMS"', key='"ID"'
    )
    statuses = await conn.fetch("SELECT status FROM syncd.runs ORDER BY started_at")
    assert [r["status"] for r in statuses] == ["cancelled", "cancelled", "succeeded"]
    assert oracle.pools[-1].release.await_count == 1


async def test_rows_newer_than_the_lag_wait_and_lookback_catches_a_late_commit(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    utc_now = "(now() AT TIME ZONE 'UTC')"
    await create_items(oracle, 100, f"{utc_now} - interval '1 hour' + n * interval '1 second'")
    await conn.execute(
        f"""INSERT INTO "CRM"."ITEMS" VALUES
            (500, {utc_now} + interval '1 hour', 'dated in the future'),
            (501, {utc_now} - interval '10 seconds', 'younger than the lag')"""
    )
    # The stamps are UTC wall-clock times: the application writes them in UTC.
    config, _ = make_config(
        {"items": ITEMS_BY_TIME | {"batch_size": 8, "lookback": "10m", "lag": "1m"}},
        sources={"crm": SOURCES["crm"] | {"cursor_time_zone": "UTC"}},
    )
    first = await run_sync(config, "items")
    assert first.rows_read == 100

    # Committed late, with a cursor value below the saved position but inside lookback.
    await conn.execute(
        """INSERT INTO "CRM"."ITEMS"
            SELECT 600, "UPDATED_AT" - interval '5 minutes', 'late' FROM "CRM"."ITEMS"
             WHERE "ID" = 100"""
    )
    second = await run_sync(config, "items")

    ids = {r["id"] for r in await conn.fetch("SELECT id FROM public.items WHERE id > 100")}
    assert ids == {600}
    assert second.rows_written == 1
    assert second.rows_read > 1
    held_back = [s for s in oracle.statements if "before" in s.binds]
    assert held_back and all(s.sizes["before"] is oracledb.DB_TYPE_TIMESTAMP for s in held_back)


TYPED_COLUMNS = {
    "ID": "NUMBER(9)",
    "SMALL": "NUMBER(4)",
    "BIG": "NUMBER(18)",
    "HUGE": "NUMBER(30)",
    "AMOUNT": "NUMBER(12,2)",
    "ANY_NUMBER": "NUMBER",
    "APPROX": "FLOAT(126)",
    "RATIO": "BINARY_DOUBLE",
    "CREATED": "DATE",
    "CHANGED": "TIMESTAMP(6)",
    "AT_ZONE": "TIMESTAMP(6) WITH TIME ZONE",
    "AT_LOCAL": "TIMESTAMP(6) WITH LOCAL TIME ZONE",
    "TERM": "INTERVAL YEAR(2) TO MONTH",
    "SPAN": "INTERVAL DAY(2) TO SECOND(6)",
    "CODE": "CHAR(3)",
    "NAME": "VARCHAR2(50)",
    "NOTES": "CLOB",
    "PAYLOAD": "BLOB",
    "TOKEN": "RAW(16)",
    "FLAG": "BOOLEAN",
    "DOC": "JSON",
    "Mixed Case": "VARCHAR2(10)",
}

TYPED_ROWS = r"""
INSERT INTO "CRM"."TYPED" VALUES
 (1, -9999, 999999999999999999, 123456789012345678901234567890, -1234567890.12,
  0.000000000000000000000000000000000000000001, 3.14159265358979323846264338327950288,
  1.0000000000000002, '2024-02-29 23:59:59', '2024-02-29 23:59:59.999999',
  '2024-03-31 01:30:00.123456+02', '2024-10-27 03:00:00+01', '1 year 2 months',
  '-2 days -19:54:53.211',
  'ab ', 'émoji 🚀 "quotes"', '\x6100620063'::bytea, '\x00ff10'::bytea, '\xdeadbeef'::bytea,
  true, '{"n": 12345678901234567890.123456789, "a": [1, 2.50, {"b": null}], "é": "ü"}', 'odd'),
 (2, 0, 0, 0, 0, 0, 0, 0, '0001-01-01 00:00:01', '1970-01-01', '1970-01-01 00:00:00+00',
  '1970-01-01 00:00:00+00', '-1 year -1 month', '0', '   ', 'x', '\x78'::bytea, '', '\x00',
  false, '[]', 'y'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2020-01-01', NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
"""


async def test_oracle_shaped_values_arrive_exactly_in_mapped_types(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    await oracle.create_table("TYPED", TYPED_COLUMNS, primary_key=["ID"])
    await conn.execute(TYPED_ROWS)
    config = configure(
        make_config,
        typed={"source": "crm", "table": "CRM.TYPED", "target_table": "public.typed"}
        | {"cursor": "CHANGED", "types": {"SMALL": "integer"}},
    )

    result = await run_sync(config, "typed")

    assert (result.status, result.rows_read) == ("succeeded", 3)
    types = dict(
        await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'public.typed'::regclass AND attnum > 0"
        )
    )
    assert types == {
        "id": "integer",
        "small": "integer",
        "big": "bigint",
        "huge": "numeric(30,0)",
        "amount": "numeric(12,2)",
        "any_number": "numeric",
        "approx": "numeric",
        "ratio": "double precision",
        "created": "timestamp(0) without time zone",
        "changed": "timestamp(6) without time zone",
        "at_zone": "timestamp(6) with time zone",
        "at_local": "timestamp(6) with time zone",
        "term": "interval",
        "span": "interval",
        "code": "text",
        "name": "text",
        "notes": "text",
        "payload": "bytea",
        "token": "bytea",
        "flag": "boolean",
        "doc": "jsonb",
        "Mixed Case": "text",
    }
    # Every value equals the source's, compared by PostgreSQL itself; NOTES of row 1
    # lost its NUL characters.
    differing = await conn.fetch(
        """SELECT s."ID", column_name FROM "CRM"."TYPED" s JOIN public.typed t ON t.id = s."ID",
           LATERAL (VALUES
             ('SMALL', s."SMALL" = t.small), ('BIG', s."BIG" = t.big), ('HUGE', s."HUGE" = t.huge),
             ('AMOUNT', s."AMOUNT" = t.amount), ('ANY_NUMBER', s."ANY_NUMBER" = t.any_number),
             ('APPROX', s."APPROX" = t.approx), ('RATIO', s."RATIO" = t.ratio),
             ('CREATED', s."CREATED" = t.created), ('CHANGED', s."CHANGED" = t.changed),
             ('AT_ZONE', s."AT_ZONE" = t.at_zone), ('AT_LOCAL', s."AT_LOCAL" = t.at_local),
             ('TERM', s."TERM"::text = t.term::text), ('SPAN', s."SPAN"::text = t.span::text),
             ('NAME', s."NAME" = t.name),
             ('NOTES', s."NOTES" = convert_to(t.notes, 'UTF8') OR s."ID" = 1),
             ('PAYLOAD', s."PAYLOAD" = t.payload), ('TOKEN', s."TOKEN" = t.token),
             ('FLAG', s."FLAG" = t.flag), ('DOC', s."DOC" = t.doc),
             ('Mixed Case', s."Mixed Case" = t."Mixed Case")
           ) AS c(column_name, same)
           WHERE same IS NOT TRUE AND NOT (same IS NULL AND s."ID" = 3)"""
    )
    assert [tuple(r) for r in differing] == []
    assert await conn.fetchval("SELECT notes FROM public.typed WHERE id = 1") == "abc"
    codes = await conn.fetch("SELECT code FROM public.typed ORDER BY id")
    assert [r["code"] for r in codes] == ["ab ", "   ", None], "CHAR keeps its padding"
    assert await conn.fetchval("SELECT values_cleaned FROM syncd.runs") == 1

    again = await run_sync(config, "typed")
    assert (again.rows_read, again.rows_written) == (0, 0)


@pytest.mark.parametrize(
    ("nul", "notes"), [("strip", "abc"), ("replace", "a\ufffdb\ufffdc")], ids=["strip", "replace"]
)
async def test_nul_characters_are_cleaned_and_counted(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any, nul: str, notes: str
) -> None:
    await oracle.create_table("NOTED", {"ID": "NUMBER(9)", "NOTES": "CLOB"}, primary_key=["ID"])
    await conn.execute(
        """INSERT INTO "CRM"."NOTED" VALUES (1, '\\x6100620063'), (2, '\\x6f6b'), (3, '\\x00')"""
    )
    config = configure(
        make_config,
        noted={"source": "crm", "table": "CRM.NOTED", "target_table": "public.noted", "nul": nul},
    )

    result = await run_sync(config, "noted")

    assert result.status == "succeeded"
    assert await conn.fetchval("SELECT notes FROM public.noted WHERE id = 1") == notes
    assert await conn.fetchval("SELECT values_cleaned FROM syncd.runs") == 2


async def test_nul_fail_names_the_column_and_the_row(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    await oracle.create_table("NOTED", {"ID": "NUMBER(9)", "NOTES": "CLOB"}, primary_key=["ID"])
    await conn.execute("""INSERT INTO "CRM"."NOTED" VALUES (1, '\\x6f6b'), (2, '\\x6100')""")
    config = configure(
        make_config,
        noted={"source": "crm", "table": "CRM.NOTED", "target_table": "public.noted"}
        | {"nul": "fail"},
    )

    with pytest.raises(SourceError, match=r"column NOTES of the row at \['2'\] holds a NUL"):
        await run_sync(config, "noted")


async def test_a_full_pass_by_compound_key_resumes_mid_pass(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    await oracle.create_table(
        "REGIONAL",
        {"REGION": "VARCHAR2(10)", "ID": "NUMBER(10)", "NAME": "VARCHAR2(20)"},
        primary_key=["REGION", "ID"],
    )
    await conn.execute(
        """INSERT INTO "CRM"."REGIONAL"
           SELECT (ARRAY['EMEA', 'AMER', 'APAC', 'Emea'])[1 + n % 4], n / 4, 'r' || n
             FROM generate_series(0, 94) AS n"""
    )
    config = configure(
        make_config,
        regional={"source": "crm", "table": "CRM.REGIONAL", "target_table": "public.regional"}
        | {"batch_size": 10},
    )
    stop = asyncio.Event()

    first = await run_sync(
        config, "regional", observer=Recorder(stop_after=3, stop=stop), stop=stop
    )
    second = await run_sync(config, "regional")

    assert (first.rows_read, second.rows_read) == (30, 65)
    assert await fingerprint(conn, "public.regional", key="region, id") == await fingerprint(
        conn, '"CRM"."REGIONAL"', key='"REGION", "ID"'
    )
    three_columns = [s for s in oracle.statements if "after2" in s.binds]
    assert three_columns and all(
        s.sizes == {"after1": oracledb.DB_TYPE_VARCHAR, "after2": oracledb.DB_TYPE_NUMBER}
        for s in three_columns
    )


SNAPSHOT_SYNC = ITEMS | {"batch_size": 10, "snapshot": "scn"}


async def _stopped_mid_pass(oracle: FakeOracle, make_config: Any) -> Config:
    """A snapshot sync over 50 rows, stopped after two batches of its first pass."""
    await create_items(oracle, 50, "timestamp '2025-01-01'")
    config = configure(make_config, items=SNAPSHOT_SYNC)
    stop = asyncio.Event()
    await run_sync(config, "items", observer=Recorder(stop_after=2, stop=stop), stop=stop)
    return config


async def test_a_resumed_pass_reads_the_snapshot_it_started_at(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    config = await _stopped_mid_pass(oracle, make_config)
    scn = await conn.fetchval("SELECT snapshot FROM syncd.sync_state")
    assert scn is not None
    await conn.execute(
        """INSERT INTO "CRM"."ITEMS" SELECT n, timestamp '2025-01-02', 'new'
             FROM generate_series(1001, 1010) AS n;
           UPDATE "CRM"."ITEMS" SET "NAME" = 'renamed' WHERE "ID" = 45"""
    )

    resumed = await run_sync(config, "items")

    assert resumed.rows_read == 30
    assert await conn.fetchval("SELECT count(*) FROM public.items") == 50
    assert await conn.fetchval("SELECT name FROM public.items WHERE id = 45") == "item 45"
    state = await conn.fetchrow("SELECT snapshot, is_complete FROM syncd.sync_state")
    assert (state["snapshot"], state["is_complete"]) == (None, True)
    read_at = {s.binds["scn"] for s in oracle.statements if "scn" in s.binds}
    assert read_at == {int(scn)}

    fresh = await run_sync(config, "items")
    assert fresh.rows_read == 60
    assert await conn.fetchval("SELECT name FROM public.items WHERE id = 45") == "renamed"


async def test_an_expired_snapshot_restarts_the_pass_and_says_so(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    config = await _stopped_mid_pass(oracle, make_config)
    await oracle.expire_snapshots()

    with capture_logs() as logs:
        result = await run_sync(config, "items")

    assert result.status == "succeeded"
    expired = [e for e in logs if e["event"] == "snapshot_expired"]
    assert len(expired) == 1 and "ORA-08181" in expired[0]["error"]
    assert "starts again at a new SCN" in expired[0]["error"]
    assert await conn.fetchval("SELECT count(*) FROM public.items") == 50
    assert await conn.fetchval("SELECT is_complete FROM syncd.sync_state") is True


async def test_check_config_reaches_oracle_through_a_prepared_session(
    oracle: FakeOracle, make_config: Any
) -> None:
    from syncd.sources import check_source

    config = configure(make_config, items=ITEMS)

    assert await check_source(config.sources["crm"]) == "Oracle Database 23.6.0.24.10"
    assert len(oracle.session) == 1, "check-config reaches Oracle through a prepared session"
    (arguments,) = oracle.pool_arguments
    assert arguments["program"] == "syncd"
    assert (arguments["user"], arguments["password"]) == ("SYNCD", "pw")


async def test_a_null_key_stops_the_run_before_anything_is_written(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    # No primary key: the key named in the config is a nullable column.
    await oracle.create_table("LOOSE", {"ID": "NUMBER(12)", "NAME": "VARCHAR2(20)"})
    await conn.execute(
        """INSERT INTO "CRM"."LOOSE" SELECT nullif(n, 1), 'row ' || n
             FROM generate_series(1, 50) AS n"""
    )
    config = configure(
        make_config,
        loose={"source": "crm", "table": "CRM.LOOSE", "key": ["ID"], "target_table": "loose"}
        | {"batch_size": 4},
    )

    with pytest.raises(SourceError, match=r"holds NULL \('ID' in 1 rows\)"):
        await run_sync(config, "loose")
    assert await conn.fetchval("SELECT to_regclass('public.loose')") is None


async def test_a_batch_ends_at_batch_bytes_before_batch_size(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    await oracle.create_table("NOTED", {"ID": "NUMBER(9)", "NOTES": "CLOB"}, primary_key=["ID"])
    await conn.execute(
        """INSERT INTO "CRM"."NOTED" SELECT n, convert_to(repeat('x', 100000), 'UTF8')
             FROM generate_series(1, 10) AS n"""
    )
    config = configure(
        make_config,
        noted={"source": "crm", "table": "CRM.NOTED", "target_table": "public.noted"}
        | {"batch_bytes": "250kB"},
    )
    recorder = Recorder()

    result = await run_sync(config, "noted", observer=recorder)

    # Rows are kept while those before them are under the limit: three of 100 kB. The
    # rows one query fetched beyond a batch's bytes make the next batch: one query in all.
    assert [report.rows for report in recorder.reports] == [3, 3, 3, 1]
    assert result.rows_read == 10
    fetches = [s for s in oracle.statements if "FETCH FIRST" in s.sql]
    assert len(fetches) == 1 and fetches[0].arraysize <= FETCH_ROWS


async def test_without_an_index_on_the_cursor_the_window_is_one_sorted_query(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    await oracle.create_table("ITEMS", ITEMS_COLUMNS, primary_key=["ID"], indexes=[["ID"]])
    await create_items(oracle, 35, "timestamp '2025-01-01' + (n % 7) * interval '1 second'")
    config = configure(make_config, items=ITEMS_BY_TIME | {"batch_size": 10})
    recorder = Recorder()

    with capture_logs() as logs:
        result = await run_sync(config, "items", observer=recorder)

    (warning,) = [e for e in logs if e["event"] == "no_usable_index"]
    assert warning["suggestion"] == 'CREATE INDEX ON "CRM"."ITEMS" ("UPDATED_AT", "ID")'
    reads = [s.sql for s in oracle.statements if '"CRM"."ITEMS"' in s.sql and "ORDER BY" in s.sql]
    assert len(reads) == 1 and "FETCH FIRST" not in reads[0]
    assert [r.rows for r in recorder.reports] == [10, 10, 10, 5]
    assert result.rows_read == 35
    assert await fingerprint(conn, "public.items") == await fingerprint(
        conn, '"CRM"."ITEMS"', key='"ID"'
    )
    assert await conn.fetchval("SELECT position FROM syncd.sync_state") == (
        '["2025-01-01 00:00:06.000000", "34"]'
    )


async def test_a_local_time_zone_cursor_is_bound_so_that_no_database_time_zone_shifts_it(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    """The fake reads a LOCAL TIME ZONE bind's naive fields in DBTIMEZONE (-05:00), as
    Oracle does: bound that way, each saved position would move five hours."""
    await oracle.create_table(
        "STAMPED",
        {"ID": "NUMBER(9)", "SEEN": "TIMESTAMP(6) WITH LOCAL TIME ZONE"},
        primary_key=["ID"],
    )
    await conn.execute(
        """INSERT INTO "CRM"."STAMPED"
           SELECT n, timestamptz '2025-01-01 00:00:00+00' + (n / 2) * interval '1 minute'
             FROM generate_series(1, 20) AS n"""
    )
    config = configure(
        make_config,
        stamped={"source": "crm", "table": "CRM.STAMPED", "target_table": "public.stamped"}
        | {"cursor": "SEEN", "batch_size": 3},
    )
    recorder = Recorder()

    result = await asyncio.wait_for(run_sync(config, "stamped", observer=recorder), timeout=30)

    assert (result.status, result.rows_read, result.batches) == ("succeeded", 20, 7)
    ends = [report.position for report in recorder.reports]
    assert ends == sorted(ends) and len(set(ends)) == len(ends)
    assert await fingerprint(conn, "public.stamped") == await fingerprint(
        conn, '"CRM"."STAMPED"', key='"ID"'
    )
    lower = [s for s in oracle.statements if ":after1" in s.sql]
    assert lower and all("CAST(:after1 AS TIMESTAMP WITH LOCAL TIME ZONE)" in s.sql for s in lower)
    assert all(s.sizes["after1"] is oracledb.DB_TYPE_TIMESTAMP_TZ for s in lower)


async def test_text_keys_are_ordered_and_compared_byte_for_byte_whatever_the_clients_locale(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    """The fake's sessions start as a German client's (NLS_SORT GERMAN): unless the source
    makes its session binary, ORDER BY and ``>`` disagree, and the keyset skips keys."""
    await oracle.create_table("CODES", {"CODE": "VARCHAR2(10)", "N": "NUMBER(9)"}, ["CODE"])
    codes = ["a", "B", "b", "A", "_", "Z", "ä", "1"]
    await conn.executemany(
        'INSERT INTO "CRM"."CODES" VALUES ($1, $2)', [(c, i) for i, c in enumerate(codes)]
    )
    config = configure(
        make_config,
        codes={"source": "crm", "table": "CRM.CODES", "target_table": "public.codes"}
        | {"batch_size": 2},
    )
    recorder = Recorder()

    result = await run_sync(config, "codes", observer=recorder)

    assert result.rows_read == len(codes)
    assert [report.position for report in recorder.reports] == [
        ("A",),
        ("Z",),
        ("a",),
        ("ä",),
    ]  # binary: 1 A | B Z | _ a | b ä
    assert sorted(r["code"] for r in await conn.fetch("SELECT code FROM public.codes")) == sorted(
        codes
    )


async def test_the_sample_configs_date_cursor_loses_nothing_west_of_utc_across_a_fall_back(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    """config.yaml's case: LAST_UPDATE_DATE is a DATE filled from SYSDATE on a server in
    New York, with lag 30s and lookback 5m. On 2025-11-02 the clock falls back from
    02:00 EDT to 01:00 EST, and the stamps of 01:00-01:59 come round a second time."""
    await oracle.create_table(
        "OPPORTUNITIES",
        {"OPPORTUNITY_ID": "NUMBER(12)", "LAST_UPDATE_DATE": "DATE", "NAME": "VARCHAR2(40)"},
        primary_key=["OPPORTUNITY_ID"],
    )

    async def stamp(opportunity: int, wall: str) -> None:
        await conn.execute(
            'INSERT INTO "CRM"."OPPORTUNITIES" VALUES ($1, $2::text::timestamp, $3)',
            opportunity,
            f"2025-11-02 {wall}",
            f"stamped {wall} New York time",
        )

    for minute in range(0, 110, 10):  # 00:00 to 01:50 EDT, before the fall-back
        await stamp(minute, f"{minute // 60:02}:{minute % 60:02}:00")
    sources = {"crm": SOURCES["crm"] | {"cursor_time_zone": "America/New_York"}}
    sync = {"source": "crm", "table": "CRM.OPPORTUNITIES", "key": ["OPPORTUNITY_ID"]}
    sync |= {"cursor": "LAST_UPDATE_DATE", "lag": "30s", "lookback": "5m"}
    config, _ = make_config({"opps": sync | {"target_table": "public.opps"}}, sources=sources)

    async def run_at(utc: str) -> None:
        oracle.clock = datetime.fromisoformat(utc)
        assert (await run_sync(config, "opps")).status == "succeeded"

    await run_at("2025-11-02 05:55:00+00:00")  # 01:55 EDT
    # 'now' is New York's wall clock less the lag, not UTC's, which runs hours ahead of
    # every stamp and would hold nothing back.
    (read,) = [s for s in oracle.statements if "FETCH FIRST" in s.sql][-1:]
    assert read.binds["before"] == datetime(2025, 11, 2, 1, 54, 30)
    # After the fall-back, at 01:20 EST: three rows stamped in the repeated hour, and one
    # whose transaction stamped it at 01:52 EDT and commits only now.
    for opportunity, wall in [(201, "01:05:00"), (202, "01:10:00"), (203, "01:15:00")]:
        await stamp(opportunity, wall)
    await stamp(204, "01:52:00")
    await run_at("2025-11-02 06:20:00+00:00")  # 01:20 EST
    await run_at("2025-11-02 07:10:00+00:00")  # 02:10 EST

    synced = {r["opportunity_id"] for r in await conn.fetch("SELECT opportunity_id FROM opps")}
    assert synced == {*range(0, 110, 10), 201, 202, 203, 204}


@pytest.mark.parametrize(
    ("zone", "before"),
    [
        ("database", datetime(2025, 6, 1, 7, 59, 30)),  # the server's clock, in New York
        ("Asia/Tokyo", datetime(2025, 6, 1, 20, 59, 30)),
        (None, None),
    ],
)
async def test_a_date_cursors_now_is_the_wall_clock_of_its_zone_and_lag_needs_one(
    oracle: FakeOracle,
    make_config: Any,
    zone: str | None,
    before: datetime | None,
) -> None:
    await create_items(oracle, 5, "timestamp '2025-06-01 07:00' + n * interval '1 minute'")
    oracle.clock = datetime.fromisoformat("2025-06-01 12:00:00+00:00")
    sources = {"crm": SOURCES["crm"] | ({"cursor_time_zone": zone} if zone else {})}
    sync = ITEMS_BY_TIME | {"lag": "30s"}
    config, _ = make_config({"items": sync}, sources=sources)

    if zone is None:
        with pytest.raises(ConfigError, match=r"^sources.crm.cursor_time_zone: lag holds back"):
            await run_sync(config, "items")
        return
    await run_sync(config, "items")
    (read,) = [s for s in oracle.statements if "FETCH FIRST" in s.sql][:1]
    assert read.binds["before"] == before


async def test_an_oracle_table_that_grows_a_column_and_a_number_is_followed(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    await oracle.create_table(
        "GROWING",
        {
            "ID": "NUMBER(9)",
            "UPDATED_AT": "TIMESTAMP(6)",
            "QTY": "NUMBER(4)",
            "NOTE": "VARCHAR2(10)",
        },
        primary_key=["ID"],
    )
    await conn.execute(
        """INSERT INTO "CRM"."GROWING"
           SELECT n, timestamp '2025-01-01' + n * interval '1 second', n, 'n' || n
             FROM generate_series(1, 40) AS n"""
    )
    sync = {"source": "crm", "table": "CRM.GROWING", "cursor": "UPDATED_AT", "batch_size": 7}
    config = configure(make_config, growing=sync | {"target_table": "public.growing"})
    await run_sync(config, "growing")

    # As ALL_TAB_COLUMNS shows a DBA's ALTER TABLE: QTY widened to NUMBER(9), NOTE to
    # VARCHAR2(200) (text either way), and a REGION column added with a default.
    await conn.execute(
        """ALTER TABLE "CRM"."GROWING" ALTER COLUMN "QTY" TYPE numeric(9,0),
           ADD COLUMN "REGION" text COLLATE "default" DEFAULT 'EMEA'"""
    )
    await conn.execute(
        """UPDATE all_tab_columns SET data_precision = 9
            WHERE table_name = 'GROWING' AND column_name = 'QTY';
           INSERT INTO all_tab_columns VALUES ('CRM', 'GROWING', 'REGION', 'VARCHAR2', NULL,
                                               NULL, 5, 'Y')"""
    )
    oracle.tables[("CRM", "GROWING")]["REGION"] = declare("VARCHAR2(20)")
    await conn.execute('UPDATE "CRM"."GROWING" SET "QTY" = 70000 WHERE "ID" = 40')

    with capture_logs() as logs:
        result = await run_sync(config, "growing")

    assert result.status == "succeeded"
    actions = {(e["column"], e["action"]) for e in logs if e["event"] == "schema_change"}
    assert actions == {("QTY", "widened"), ("REGION", "added")}
    types = dict(
        await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'public.growing'::regclass AND attnum > 0"
        )
    )
    assert (types["qty"], types["region"]) == ("integer", "text")
    rows = await conn.fetch("SELECT id, qty, region FROM public.growing ORDER BY id")
    assert all(r["region"] == "EMEA" for r in rows) and rows[-1]["qty"] == 70000


async def test_rows_with_a_null_cursor_are_read_by_key_under_null_cursor_include(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    await create_items(
        oracle,
        100,
        "CASE WHEN n % 4 = 0 THEN NULL ELSE timestamp '2025-01-01' + n * interval '1s' END",
    )
    config = configure(make_config, items=ITEMS_BY_TIME | {"batch_size": 7})

    result = await run_sync(config, "items")

    assert (result.status, result.rows_written) == ("succeeded", 100)
    assert await fingerprint(conn, "public.items") == await fingerprint(
        conn, '"CRM"."ITEMS"', key='"ID"'
    )
    nulls = [s.sql for s in oracle.statements if '"UPDATED_AT" IS NULL' in s.sql]
    assert nulls[0] == 'SELECT COUNT(*) FROM "CRM"."ITEMS" WHERE "UPDATED_AT" IS NULL'
    assert any("ORDER BY" in sql for sql in nulls[1:])
    assert await conn.fetchval("SELECT position FROM syncd.sync_state") == (
        '["2025-01-01 00:01:39.000000", "99"]'
    )

"""A parallel load of an Oracle source, under the real engine, over PostgreSQL dressed as
Oracle (tests/oracle/harness.py): the planner's ranges, AS OF the plan's SCN, an SCN that
expires mid-load, and a user who may not read at an SCN.

The fake runs the planning SQL itself (NTILE, ROW_NUMBER, MIN/MAX, translated by
sqlglot onto PostgreSQL), and reads AS OF SCN in the PostgreSQL snapshot exported for
that SCN. What it cannot show is how Oracle itself runs these statements (whether an
index answers MIN/MAX, what NTILE's sort costs), ORA-01555 from real undo expiry (the
fake forgets an SCN with ORA-08181), or a real refusal of FLASHBACK (ORA-01031 is
raised by the test): tests/oracle/test_real_oracle.py plans and runs a load against a
real database for the first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from syncd.errors import SourceError
from syncd.sources import open_source
from tests.helpers import fingerprint, run_sync
from tests.oracle.harness import FakeOracle, database_error, fake_oracle

SOURCES = {
    "crm": {"kind": "oracle", "dsn": "crm-db:1521/FREEPDB1", "user": "SYNCD", "password": "pw"}
}


@pytest.fixture
async def oracle(db: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOracle]:
    async with fake_oracle(db, monkeypatch) as fake:
        yield fake


KEYS: dict[str, tuple[dict[str, str], list[str], str, str, str]] = {
    # columns, key, each row's values (of n), then the key order in the source and in
    # the target, as fingerprint() spells it
    "integer": (
        {"ID": "NUMBER(12)", "NAME": "VARCHAR2(40)"},
        ["ID"],
        "n, 'item ' || n",
        '"ID"',
        "id",
    ),
    # A dense run and a few keys far beyond it: equal spans would be unequal chunks.
    "sparse integer": (
        {"ID": "NUMBER(18)", "NAME": "VARCHAR2(40)"},
        ["ID"],
        "CASE WHEN n <= 990 THEN n ELSE n::bigint * 1000000000 END, 'item ' || n",
        '"ID"',
        "id",
    ),
    # Mixed case: binary order ('B' < 'a') is not the German client's ('a' < 'B').
    "text": (
        {"CODE": "VARCHAR2(40)", "NAME": "VARCHAR2(40)"},
        ["CODE"],
        "CASE WHEN n % 2 = 0 THEN upper(md5(n::text)) ELSE md5(n::text) END, 'item ' || n",
        '"CODE" COLLATE "C"',
        'code COLLATE "C"',
    ),
    # Tiled by the instant, its bounds read back in UTC (SYS_EXTRACT_UTC) and bound at +00:00.
    "zoned": (
        {"AT": "TIMESTAMP(6) WITH TIME ZONE", "NAME": "VARCHAR2(40)"},
        ["AT"],
        "timestamptz '2025-03-30 00:59:00+01' + n * interval '1.5 second', 'item ' || n",
        '"AT"',
        "at",
    ),
    "composite": (
        {"REGION": "VARCHAR2(10)", "LINE_NO": "NUMBER(9)", "NAME": "VARCHAR2(40)"},
        ["REGION", "LINE_NO"],
        "CASE WHEN n % 3 = 0 THEN 'emea' ELSE 'R' || (n % 7) END, n, 'item ' || n",
        '"REGION" COLLATE "C", t."LINE_NO"',
        'region COLLATE "C", t.line_no',
    ),
}


async def create(
    oracle: FakeOracle, kind: str, rows: int, counted: int | None = None
) -> dict[str, Any]:
    """A table of ``rows`` rows keyed as ``kind`` says, of which its statistics
    (ALL_TABLES.NUM_ROWS) counted ``counted`` (by default, all); the sync that reads it."""
    columns, key, values, *_ = KEYS[kind]
    num_rows = rows if counted is None else counted
    await oracle.create_table("ITEMS", columns, primary_key=key, num_rows=num_rows)
    await oracle.conn.execute(
        f'INSERT INTO "CRM"."ITEMS" SELECT {values} FROM generate_series(1, {rows}) AS n'
    )
    return {"source": "crm", "table": "CRM.ITEMS", "target_table": "public.items"}


async def same_rows(conn: asyncpg.Connection, kind: str) -> bool:
    *_, source_order, target_order = KEYS[kind]
    source = await fingerprint(conn, '"CRM"."ITEMS"', key=source_order)
    return source == await fingerprint(conn, "public.items", key=target_order)


def at_scn(oracle: FakeOracle) -> set[int]:
    """The SCNs the source read at."""
    return {s.binds["scn"] for s in oracle.statements if "scn" in s.binds}


@pytest.mark.parametrize("kind", KEYS)
async def test_a_parallel_load_reads_every_row_once_at_the_plan_s_scn(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any, kind: str
) -> None:
    sync = await create(oracle, kind, 1000)
    config, _ = make_config(
        {"items": sync | {"chunk_rows": 100, "parallel": 3, "batch_size": 40}}, sources=SOURCES
    )

    result = await run_sync(config, "items")

    assert result.status == "succeeded", result.error
    assert (result.rows_read, result.rows_written) == (1000, 1000)
    assert await same_rows(conn, kind)
    chunks = await conn.fetch("SELECT status, rows_read FROM syncd.chunks ORDER BY chunk")
    assert {c["status"] for c in chunks} == {"done"}
    assert sum(c["rows_read"] for c in chunks) == 1000
    # About 100 rows each: never one chunk holding most of the table.
    assert len(chunks) >= 8 and max(c["rows_read"] for c in chunks) <= 200
    # Every statement, planning and reading, at the one SCN the plan read.
    reads = [s for s in oracle.statements if "FETCH FIRST" in s.sql]
    assert reads and all("scn" in s.binds for s in reads)
    assert len(at_scn(oracle)) == 1


async def test_statistics_size_the_ranges_and_no_row_is_counted(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    """Counting every key would keep every worker waiting on a large table: the table's
    statistics say about how many rows there are, and MIN/MAX still bound the keys."""
    sync = await create(oracle, "integer", 2000, counted=1000)
    config, _ = make_config({"items": sync | {"chunk_rows": 100}}, sources=SOURCES)

    result = await run_sync(config, "items")

    assert result.status == "succeeded", result.error
    chunks = await conn.fetch("SELECT rows_read FROM syncd.chunks ORDER BY chunk")
    assert [c["rows_read"] for c in chunks] == [200] * 10  # 1,000 counted rows, not 2,000
    assert not [s.sql for s in oracle.statements if 'COUNT(*) FROM "CRM"."ITEMS"' in s.sql]
    assert await same_rows(conn, "integer")


@pytest.mark.parametrize("rows", [0, 1])
async def test_an_empty_or_one_row_source_is_one_range_read_as_one_pass(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any, rows: int
) -> None:
    sync = await create(oracle, "composite", rows)
    config, _ = make_config({"items": sync | {"chunk_rows": 100}}, sources=SOURCES)

    opened = open_source(config.sources["crm"], config.syncs["items"])
    async with opened as source, source.load_plan(100) as plan:  # type: ignore[attr-defined]
        assert (plan.bounds, plan.since) == ([], None)
        assert plan.snapshot is not None

    result = await run_sync(config, "items")
    assert (result.status, result.rows_read) == ("succeeded", rows)
    assert await same_rows(conn, "composite")
    assert await conn.fetchval("SELECT count(*) FROM syncd.chunks") == 0


def on_first_chunk_read(oracle: FakeOracle, act: Callable[[], Awaitable[None]]) -> None:
    """Run ``act`` once, just before the first chunk's first batch is read."""
    done: list[bool] = []

    async def answer(sql: str) -> None:
        if "FETCH FIRST" in sql and not done:
            done.append(True)
            await act()

    oracle.answer = answer


async def test_chunks_read_as_of_the_plan_and_the_next_run_reads_on_from_its_cursor_value(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    """Rows that change once the load is planned are not in its chunks (they read AS OF
    the SCN); the run then reads on from the newest cursor value that SCN held, below
    the clock less lag: a row stamped in the future is loaded, but is no cursor value."""
    await oracle.create_table(
        "ITEMS",
        {"ID": "NUMBER(12)", "UPDATED_AT": "TIMESTAMP(6)", "NAME": "VARCHAR2(40)"},
        primary_key=["ID"],
        num_rows=1001,
    )
    utc_now = "(now() AT TIME ZONE 'UTC')"
    await conn.execute(
        f"""INSERT INTO "CRM"."ITEMS" SELECT n, {utc_now} - interval '2 hours'
              + n * interval '1 second', 'item ' || n FROM generate_series(1, 1000) AS n;
            INSERT INTO "CRM"."ITEMS" VALUES (5000, {utc_now} + interval '1 day', 'future')"""
    )
    newest_past = await conn.fetchval(
        """SELECT max("UPDATED_AT") FROM "CRM"."ITEMS" WHERE "ID" < 5000"""
    )
    sync = {"source": "crm", "table": "CRM.ITEMS", "target_table": "public.items"}
    config, _ = make_config(
        {
            "items": sync
            | {"cursor": "UPDATED_AT", "lag": "1m", "chunk_rows": 100, "batch_size": 40}
        },
        sources={"crm": SOURCES["crm"] | {"cursor_time_zone": "UTC"}},
    )

    async def change() -> None:
        await conn.execute(
            f"""UPDATE "CRM"."ITEMS" SET "NAME" = 'renamed', "UPDATED_AT" = {utc_now}
                  - interval '5 minutes' WHERE "ID" = 7;
                INSERT INTO "CRM"."ITEMS" VALUES (3000, {utc_now} - interval '5 minutes', 'new')"""
        )

    on_first_chunk_read(oracle, change)
    result = await run_sync(config, "items")

    assert result.status == "succeeded", result.error
    chunked = await conn.fetchval("SELECT sum(rows_read) FROM syncd.chunks")
    assert chunked == 1001  # as of the SCN: neither the new row nor id 7's new stamp
    since = await conn.fetchval("SELECT since FROM syncd.sync_state")
    assert datetime.fromisoformat(since) == newest_past
    # Then on from that value: id 7 and id 3000, changed after the plan, are read too.
    assert await fingerprint(conn, "public.items") == await fingerprint(
        conn, '"CRM"."ITEMS"', key='"ID"'
    )


async def test_an_scn_that_expires_mid_load_is_read_on_at_a_fresh_one(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    sync = await create(oracle, "integer", 1000)
    config, _ = make_config(
        {"items": sync | {"chunk_rows": 100, "parallel": 2, "batch_size": 40}}, sources=SOURCES
    )
    on_first_chunk_read(oracle, oracle.expire_snapshots)

    with capture_logs() as logs:
        result = await run_sync(config, "items")

    assert result.status == "succeeded", result.error
    lost = [e for e in logs if e["event"] == "snapshot_lost"]
    assert lost and all("ORA-08181" in e["error"] for e in lost)
    assert await same_rows(conn, "integer")
    assert await conn.fetchval("SELECT sum(rows_read) FROM syncd.chunks") == 1000


def refuse_flashback(sql: str) -> None:
    """What Oracle answers AS OF SCN on a table the user has no FLASHBACK on."""
    if "AS OF SCN" in sql:
        raise database_error("ORA-01031: insufficient privileges", 1031)


async def test_without_flashback_the_load_is_planned_and_read_without_an_scn(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    sync = await create(oracle, "text", 1000)
    config, _ = make_config(
        {"items": sync | {"chunk_rows": 100, "parallel": 2, "batch_size": 40}}, sources=SOURCES
    )

    oracle.before_execute = refuse_flashback
    with capture_logs() as logs:
        result = await run_sync(config, "items")

    assert result.status == "succeeded", result.error
    (warning,) = [e for e in logs if e["event"] == "load_without_snapshot"]
    assert "GRANT FLASHBACK ON CRM.ITEMS TO SYNCD" in warning["reason"]
    assert await same_rows(conn, "text")
    # One statement tried the SCN, and was refused; the chunks read without one.
    assert len([s for s in oracle.statements if "AS OF SCN" in s.sql]) == 1
    assert await conn.fetchval("SELECT count(*) FROM syncd.chunks") >= 8


async def test_a_sync_that_asks_for_an_scn_is_refused_one_and_says_which_grant(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    sync = await create(oracle, "integer", 1000)
    config, _ = make_config(
        {"items": sync | {"chunk_rows": 100, "snapshot": "scn"}}, sources=SOURCES
    )
    oracle.before_execute = refuse_flashback

    with (
        capture_logs() as logs,
        pytest.raises(SourceError, match=r"GRANT FLASHBACK ON CRM\.ITEMS TO SYNCD"),
    ):
        await run_sync(config, "items")

    # Refused when planning: no load was planned to read without one.
    assert not [e for e in logs if e["event"] == "load_without_snapshot"]
    assert await conn.fetchval("SELECT count(*) FROM syncd.chunks") == 0

    assert await conn.fetchval("SELECT count(*) FROM public.items") == 0


async def test_a_chunk_s_failure_is_the_run_s_own_clear_error(
    oracle: FakeOracle, make_config: Any
) -> None:
    """A worker's error reaches the run as itself, not as a task group's 'unhandled
    errors': the user learns which row holds what."""
    await oracle.create_table(
        "ITEMS", {"ID": "NUMBER(9)", "NOTES": "CLOB"}, primary_key=["ID"], num_rows=1000
    )
    await oracle.conn.execute(
        """INSERT INTO "CRM"."ITEMS" SELECT n, CASE WHEN n = 500 THEN '\\x610062'::bytea
             ELSE 'x'::bytea END FROM generate_series(1, 1000) AS n"""
    )
    sync = {"source": "crm", "table": "CRM.ITEMS", "target_table": "public.items"}
    config, _ = make_config({"items": sync | {"nul": "fail", "chunk_rows": 100}}, sources=SOURCES)

    with pytest.raises(SourceError, match=r"NOTES of the row at \['500'\] holds a NUL"):
        await run_sync(config, "items")

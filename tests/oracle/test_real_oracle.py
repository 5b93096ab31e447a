"""The Oracle source against a real Oracle Database: ``pytest -m oracle``.

Skipped unless SYNCD_TEST_ORACLE_DSN names one (for example localhost:1521/FREEPDB1);
SYNCD_TEST_ORACLE_USER and SYNCD_TEST_ORACLE_PASSWORD default to syncd_test. The
user needs CREATE SESSION, CREATE TABLE, a quota, and SELECT on V_$DATABASE; it
reads its own tables, so FLASHBACK on them is implied. README.md says how to run
Oracle Database Free in a container for this.

These are the checks no fake can make: Oracle's own type round trips, time zone
arithmetic, DATE binds, AS OF SCN and the driver's behaviour when cancelled.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import oracledb
import pytest

from syncd.config import Config
from syncd.pools import Backoff, OraclePool
from syncd.sources import (
    Limits,
    Window,
    check_source,
    open_source,
    oracle_describe,
    oracle_session,
    oracle_sql,
)
from tests.helpers import Recorder, run_sync

DSN = os.environ.get("SYNCD_TEST_ORACLE_DSN")
USER = os.environ.get("SYNCD_TEST_ORACLE_USER", "syncd_test")
PASSWORD = os.environ.get("SYNCD_TEST_ORACLE_PASSWORD", "syncd_test")

pytestmark = [
    pytest.mark.oracle,
    pytest.mark.skipif(DSN is None, reason="set SYNCD_TEST_ORACLE_DSN to run against Oracle"),
]


@pytest.fixture
async def oracle() -> AsyncIterator[oracledb.AsyncConnection]:
    """A plain connection for setting tables up; syncd makes its own."""
    conn = await oracledb.connect_async(user=USER, password=PASSWORD, dsn=DSN)
    try:
        yield conn
    finally:
        await conn.close()


async def run(conn: oracledb.AsyncConnection, *statements: str) -> None:
    with conn.cursor() as cursor:
        for statement in statements:
            await cursor.execute(statement)
    await conn.commit()


async def recreate(conn: oracledb.AsyncConnection, table: str, ddl: str) -> None:
    await run(
        conn,
        f"BEGIN EXECUTE IMMEDIATE 'DROP TABLE {table} PURGE';"
        " EXCEPTION WHEN OTHERS THEN IF SQLCODE != -942 THEN RAISE; END IF; END;",
        ddl,
    )


def configure(make_config: Any, table: str, **spec: Any) -> Config:
    source = {"kind": "oracle", "dsn": DSN, "user": USER, "password": PASSWORD}
    sync = {"source": "ora", "table": table, "target_table": f"public.{table.lower()}"}
    config, _ = make_config({"t": sync | spec}, sources={"ora": source})
    return config


TYPES_DDL = """
CREATE TABLE SYNCD_TYPES (
    ID NUMBER(9) PRIMARY KEY, SMALL NUMBER(4), BIG NUMBER(18), HUGE NUMBER(30),
    AMOUNT NUMBER(12,2), ANY_NUMBER NUMBER, APPROX FLOAT(126), RATIO BINARY_DOUBLE,
    SINGLE BINARY_FLOAT, CREATED DATE, CHANGED TIMESTAMP(6),
    AT_ZONE TIMESTAMP(6) WITH TIME ZONE, AT_LOCAL TIMESTAMP(6) WITH LOCAL TIME ZONE,
    TERM INTERVAL YEAR(2) TO MONTH, SPAN INTERVAL DAY(2) TO SECOND(6), CODE CHAR(3),
    NAME VARCHAR2(50), WIDE NVARCHAR2(20), NOTES CLOB, PAYLOAD BLOB, TOKEN RAW(16),
    FLAG BOOLEAN, DOC JSON, LEGACY_DOC VARCHAR2(200) CHECK (LEGACY_DOC IS JSON)
)"""
TYPES_ROW = """
INSERT INTO SYNCD_TYPES VALUES (
    1, -9999, 999999999999999999, 123456789012345678901234567890, -1234567890.12, 1E-42,
    1.0000000000000002, 3.141592653589793d, 1.5f, DATE '2024-02-29' + 86399 / 86400,
    TIMESTAMP '2024-02-29 23:59:59.999999', TIMESTAMP '2024-03-31 01:30:00.123456 +02:00',
    TIMESTAMP '2024-07-01 12:00:00 America/New_York', INTERVAL '1-2' YEAR TO MONTH,
    INTERVAL '-3 04:05:06.789' DAY TO SECOND, 'ab', 'émoji 🚀 "quotes"', N'Zürich',
    TO_CLOB('a' || CHR(0) || 'b'), HEXTORAW('00FF10'), HEXTORAW('DEADBEEF'), TRUE,
    JSON('{"n": 12345678901234567890.123456789, "a": [1, 2.5]}'), '{"legacy": true}'
)"""


async def test_every_type_arrives_exactly(
    oracle: oracledb.AsyncConnection, conn: asyncpg.Connection, make_config: Any
) -> None:
    await recreate(oracle, "SYNCD_TYPES", TYPES_DDL)
    await run(oracle, TYPES_ROW)
    config = configure(make_config, "SYNCD_TYPES")

    result = await run_sync(config, "t")

    assert (result.status, result.rows_read) == ("succeeded", 1)
    row = await conn.fetchrow(
        "SELECT *, term::text AS term_text, span = interval '-3 days -04:05:06.789' AS span_ok,"
        ' doc = \'{"n": 12345678901234567890.123456789, "a": [1, 2.5]}\'::jsonb AS doc_ok'
        " FROM public.syncd_types"
    )
    assert dict(row) | {"term": None, "span": None, "doc": None} == {
        "id": 1,
        "small": -9999,
        "big": 999999999999999999,
        "huge": Decimal("123456789012345678901234567890"),
        "amount": Decimal("-1234567890.12"),
        "any_number": Decimal("1E-42"),
        "approx": Decimal("1.0000000000000002"),
        "ratio": 3.141592653589793,
        "single": 1.5,
        "created": datetime(2024, 2, 29, 23, 59, 59),
        "changed": datetime(2024, 2, 29, 23, 59, 59, 999999),
        "at_zone": datetime(2024, 3, 30, 23, 30, 0, 123456, tzinfo=UTC),
        "at_local": datetime(2024, 7, 1, 16, 0, tzinfo=UTC),
        "term": None,
        "span": None,
        "code": "ab ",
        "name": 'émoji 🚀 "quotes"',
        "wide": "Zürich",
        "notes": "ab",
        "payload": b"\x00\xff\x10",
        "token": b"\xde\xad\xbe\xef",
        "flag": True,
        "doc": None,
        "legacy_doc": '{"legacy": true}',
        "term_text": "1 year 2 mons",
        "span_ok": True,
        "doc_ok": True,
    }
    assert await conn.fetchval("SELECT values_cleaned FROM syncd.runs") == 1


async def test_a_time_zone_cursor_orders_and_resumes_by_the_instant(
    oracle: oracledb.AsyncConnection, conn: asyncpg.Connection, make_config: Any
) -> None:
    await recreate(
        oracle,
        "SYNCD_ZONES",
        "CREATE TABLE SYNCD_ZONES (ID NUMBER(9) PRIMARY KEY,"
        " AT_ZONE TIMESTAMP(6) WITH TIME ZONE NOT NULL)",
    )
    await run(
        oracle,
        "INSERT INTO SYNCD_ZONES VALUES (1, TIMESTAMP '2024-01-01 10:00:00 +05:30')",
        "INSERT INTO SYNCD_ZONES VALUES (2, TIMESTAMP '2024-01-01 06:00:00 +00:00')",
        "INSERT INTO SYNCD_ZONES VALUES (3, TIMESTAMP '2023-12-31 23:00:00 America/Los_Angeles')",
    )
    config = configure(make_config, "SYNCD_ZONES", cursor="AT_ZONE", batch_size=1)
    stop = asyncio.Event()

    await run_sync(config, "t", observer=Recorder(stop_after=2, stop=stop), stop=stop)
    assert await conn.fetchval("SELECT position FROM syncd.sync_state") == (
        '["2024-01-01 06:00:00.000000", "2"]'
    )
    await run_sync(config, "t")

    rows = await conn.fetch("SELECT id, at_zone FROM public.syncd_zones ORDER BY at_zone")
    assert [(r["id"], r["at_zone"]) for r in rows] == [
        (1, datetime(2024, 1, 1, 4, 30, tzinfo=UTC)),
        (2, datetime(2024, 1, 1, 6, 0, tzinfo=UTC)),
        (3, datetime(2024, 1, 1, 7, 0, tzinfo=UTC)),
    ]


async def test_a_date_bind_would_stall_on_a_tie_and_a_timestamp_bind_does_not(
    oracle: oracledb.AsyncConnection, make_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await recreate(
        oracle,
        "SYNCD_TIES",
        "CREATE TABLE SYNCD_TIES (ID NUMBER(9) PRIMARY KEY, UPDATED_AT TIMESTAMP(6) NOT NULL)",
    )
    await run(
        oracle,
        "INSERT INTO SYNCD_TIES SELECT LEVEL, TIMESTAMP '2025-01-01 12:00:00.5'"
        " FROM DUAL CONNECT BY LEVEL <= 5",
    )
    config = configure(make_config, "SYNCD_TIES", cursor="UPDATED_AT")
    tie = "2025-01-01 12:00:00.500000"

    async def ends() -> list[Any]:
        found = []
        async with open_source(config.sources["ora"], config.syncs["t"]) as source:
            async for batch in source.read(Window(), Limits(2, 10**9)):
                found.append(batch.end)
                if len(found) == 4:
                    break
        return found

    assert await ends() == [(tie, "2"), (tie, "4"), (tie, "5")]

    original = oracle_describe.oracle_type

    def as_date(*args: Any) -> Any:
        mapped = original(*args)
        if mapped is not None and mapped.bind is oracledb.DB_TYPE_TIMESTAMP:
            return replace(mapped, bind=oracledb.DB_TYPE_DATE)
        return mapped

    monkeypatch.setattr(oracle_describe, "oracle_type", as_date)
    assert await ends() == [(tie, "2")] * 4


async def test_a_pass_at_an_scn_resumes_at_the_same_scn(
    oracle: oracledb.AsyncConnection, conn: asyncpg.Connection, make_config: Any
) -> None:
    await recreate(
        oracle,
        "SYNCD_SNAP",
        "CREATE TABLE SYNCD_SNAP (ID NUMBER(9) PRIMARY KEY, NAME VARCHAR2(20))",
    )
    await run(
        oracle,
        "INSERT INTO SYNCD_SNAP SELECT LEVEL, 'row ' || LEVEL FROM DUAL CONNECT BY LEVEL <= 50",
    )
    config = configure(make_config, "SYNCD_SNAP", snapshot="scn", batch_size=10)
    stop = asyncio.Event()

    await run_sync(config, "t", observer=Recorder(stop_after=2, stop=stop), stop=stop)
    assert await conn.fetchval("SELECT snapshot FROM syncd.sync_state") is not None
    await run(
        oracle,
        "INSERT INTO SYNCD_SNAP SELECT 1000 + LEVEL, 'new' FROM DUAL CONNECT BY LEVEL <= 10",
        "UPDATE SYNCD_SNAP SET NAME = 'renamed' WHERE ID = 45",
    )
    resumed = await run_sync(config, "t")

    assert resumed.rows_read == 30
    assert await conn.fetchval("SELECT count(*) FROM public.syncd_snap") == 50
    assert await conn.fetchval("SELECT name FROM public.syncd_snap WHERE id = 45") == "row 45"
    assert (await run_sync(config, "t")).rows_read == 60


async def test_cancelling_mid_query_leaves_no_broken_connection_behind(
    make_config: Any,
) -> None:
    """Through the daemon's own pool for the source: the next run there must be able to
    take the very session a cancelled call was on, or a fresh one, never a broken one."""
    config = configure(make_config, "DUAL")
    source = config.sources["ora"]
    pool = OraclePool("source:ora", source, Backoff())
    slow = "SELECT COUNT(*) FROM ALL_OBJECTS a, ALL_OBJECTS b, ALL_OBJECTS c"

    async def query(session: oracle_session.OracleSession, sql: str) -> Any:
        with session.conn.cursor() as cursor:
            await session.call(cursor.execute(sql))
            return await session.call(cursor.fetchall())

    try:
        async with asyncio.timeout(60):
            async with pool.session() as session:
                running = asyncio.create_task(query(session, slow))
                await asyncio.sleep(1)
                running.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await running
            async with pool.session() as session:
                assert await query(session, "SELECT 1 FROM DUAL") == [(1,)]
    finally:
        await pool.close()


async def test_check_config_names_the_server(make_config: Any) -> None:
    config = configure(make_config, "DUAL")

    assert (await check_source(config.sources["ora"])).startswith("Oracle Database 2")


async def test_each_batch_query_is_an_index_range_scan(
    oracle: oracledb.AsyncConnection,
) -> None:
    """What the plan tests check on PostgreSQL, for Oracle: a middle batch's query starts
    an index range scan on (cursor, key) and never reads the whole table."""
    await recreate(
        oracle,
        "SYNCD_PLAN",
        "CREATE TABLE SYNCD_PLAN (ID NUMBER(12) PRIMARY KEY, UPDATED_AT TIMESTAMP(6) NOT NULL,"
        " NAME VARCHAR2(100))",
    )
    await run(
        oracle,
        "INSERT INTO SYNCD_PLAN SELECT LEVEL, TIMESTAMP '2025-01-01 00:00:00'"
        " + NUMTODSINTERVAL(MOD(LEVEL * 7919, 1000000), 'SECOND'), RPAD('x', 60, 'x')"
        " FROM DUAL CONNECT BY LEVEL <= 500000",
        "CREATE INDEX SYNCD_PLAN_BY_TIME ON SYNCD_PLAN (UPDATED_AT, ID)",
        "BEGIN DBMS_STATS.GATHER_TABLE_STATS(USER, 'SYNCD_PLAN'); END;",
    )
    relation = oracle_sql.Relation(
        table='"SYNCD_PLAN"',
        select=('"ID"', '"UPDATED_AT"', '"NAME"'),
        order=('"UPDATED_AT"', '"ID"'),
        cursor='"UPDATED_AT"',
    )
    sql = oracle_sql.batch_sql(relation, oracle_sql.Bounds(after=True, before=True), 10_000)
    binds = {
        "after1": datetime(2025, 1, 6),
        "after2": Decimal(250_000),
        "before": datetime(2025, 1, 12),
    }
    with oracle.cursor() as cursor:
        cursor.setinputsizes(
            after1=oracledb.DB_TYPE_TIMESTAMP,
            after2=oracledb.DB_TYPE_NUMBER,
            before=oracledb.DB_TYPE_TIMESTAMP,
        )
        await cursor.execute(f"EXPLAIN PLAN FOR {sql}", binds)
        await cursor.execute(
            "SELECT OPERATION || ' ' || OPTIONS || ' ' || OBJECT_NAME FROM PLAN_TABLE"
            " WHERE PLAN_ID = (SELECT MAX(PLAN_ID) FROM PLAN_TABLE)"
        )
        steps = [row[0] for row in await cursor.fetchall()]
    assert any(step.startswith("INDEX RANGE SCAN SYNCD_PLAN_BY_TIME") for step in steps), steps
    assert not any(step.startswith("TABLE ACCESS FULL") for step in steps), steps


@pytest.mark.parametrize(
    ("key_ddl", "key_values"),
    [
        ("ID NUMBER(12) PRIMARY KEY", "LEVEL"),
        (
            "CODE VARCHAR2(40) PRIMARY KEY",
            "CASE MOD(LEVEL, 2) WHEN 0 THEN 'k' ELSE 'K' END || LEVEL",
        ),
        (
            "REGION VARCHAR2(10), LINE_NO NUMBER(9), PRIMARY KEY (REGION, LINE_NO)",
            "'r' || MOD(LEVEL, 7), LEVEL",
        ),
    ],
    ids=["integer", "text", "composite"],
)
async def test_a_parallel_load_is_planned_and_read_as_of_one_scn(
    oracle: oracledb.AsyncConnection,
    conn: asyncpg.Connection,
    make_config: Any,
    key_ddl: str,
    key_values: str,
) -> None:
    """Oracle runs the planning SQL (MIN/MAX or NTILE, AS OF SCN), and the chunks read
    every row once."""
    await recreate(oracle, "SYNCD_LOAD", f"CREATE TABLE SYNCD_LOAD ({key_ddl}, NAME VARCHAR2(40))")
    await run(
        oracle,
        f"INSERT INTO SYNCD_LOAD SELECT {key_values}, 'row ' || LEVEL"
        " FROM DUAL CONNECT BY LEVEL <= 1000",
        "BEGIN DBMS_STATS.GATHER_TABLE_STATS(USER, 'SYNCD_LOAD'); END;",
    )
    config = configure(make_config, "SYNCD_LOAD", chunk_rows=100, parallel=3, batch_size=40)
    opened = open_source(config.sources["ora"], config.syncs["t"])
    async with opened as source, source.load_plan(100) as plan:  # type: ignore[attr-defined]
        assert plan.snapshot is not None and plan.since is None
        assert 8 <= len(plan.bounds) <= 10

    result = await run_sync(config, "t")

    assert result.status == "succeeded", result.error
    assert result.rows_read == 1000
    chunks = await conn.fetch("SELECT status, rows_read FROM syncd.chunks")
    assert {c["status"] for c in chunks} == {"done"} and len(chunks) >= 8
    assert sum(c["rows_read"] for c in chunks) == 1000
    assert await conn.fetchval("SELECT count(DISTINCT name) FROM public.syncd_load") == 1000

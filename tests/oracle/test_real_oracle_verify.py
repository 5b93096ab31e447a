"""Verify's Oracle SQL against a real Oracle Database: each row's hash, as Oracle computes
it with ``syncd.verify.oracle``, is the Python reference's hash of the row as syncd loaded
it into PostgreSQL. Run with ``pytest -m oracle`` (see test_real_oracle.py)."""

from __future__ import annotations

from typing import Any

import asyncpg
import oracledb

from syncd import pg
from syncd.sources.oracle import Relation
from syncd.verify.canonical import Kind, kind_of, row_hash
from syncd.verify.oracle import OracleColumn, hashes_sql
from tests.helpers import run_sync
from tests.oracle.test_real_oracle import configure, oracle, pytestmark, recreate, run

__all__ = ["oracle", "pytestmark"]

DDL = """
CREATE TABLE SYNCD_VERIFY (
    ID NUMBER(9) PRIMARY KEY, AMOUNT NUMBER(5,2), ANY_NUMBER NUMBER, CREATED DATE,
    CHANGED TIMESTAMP(9), AT_ZONE TIMESTAMP(6) WITH TIME ZONE, CODE CHAR(3),
    WIDE NVARCHAR2(20), NOTES CLOB, TOKEN RAW(16), RATIO BINARY_DOUBLE
)"""
ROWS = (
    "INSERT INTO SYNCD_VERIFY VALUES (1, 0.71, 1E-30, DATE '2024-02-29' + 86399 / 86400,"
    " TIMESTAMP '2024-02-29 23:59:59.123456789', TIMESTAMP '2024-03-31 01:30:00.5 +02:00',"
    " 'ab', N'Zürich', TO_CLOB(RPAD('x', 4000, 'x')) || RPAD('y', 4000, 'y'),"
    " HEXTORAW('DEADBEEF'), 0.1d)",
    "INSERT INTO SYNCD_VERIFY VALUES (2, -0.5, 100, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
    " BINARY_DOUBLE_INFINITY)",
)
COLUMNS = [
    OracleColumn('"ID"', Kind.NUMBER),
    OracleColumn('"AMOUNT"', Kind.NUMBER),
    OracleColumn('"ANY_NUMBER"', Kind.NUMBER),
    OracleColumn('"CREATED"', Kind.TIMESTAMP),
    OracleColumn('"CHANGED"', Kind.TIMESTAMP),
    OracleColumn('SYS_EXTRACT_UTC("AT_ZONE")', Kind.TIMESTAMPTZ),
    OracleColumn('"CODE"', Kind.TEXT),
    OracleColumn('"WIDE"', Kind.TEXT),
    OracleColumn('"NOTES"', Kind.TEXT, lob=True),
    OracleColumn('"TOKEN"', Kind.BYTES),
    OracleColumn('"RATIO"', Kind.FLOAT),
]


def _numbers_as_text(cursor: Any, metadata: Any) -> Any:
    if metadata.type_code is oracledb.DB_TYPE_NUMBER:
        return cursor.var(oracledb.DB_TYPE_VARCHAR, arraysize=cursor.arraysize)
    return None


async def test_oracle_s_row_hashes_are_the_reference_s_of_the_loaded_rows(
    oracle: oracledb.AsyncConnection, conn: asyncpg.Connection, db: str, make_config: Any
) -> None:
    await recreate(oracle, "SYNCD_VERIFY", DDL)
    await run(oracle, *ROWS)
    config = configure(make_config, "SYNCD_VERIFY")
    assert (await run_sync(config, "t")).status == "succeeded"
    keys = Relation(table='"SYNCD_VERIFY"', select=(), order=('"ID"',), cursor=None)

    oracle.outputtypehandler = _numbers_as_text
    with oracle.cursor() as cursor:
        await cursor.execute(hashes_sql(keys, COLUMNS, low=False, high=False))
        in_oracle = {int(key): int(hashed) for key, hashed in await cursor.fetchall()}

    names = ["id", "amount", "any_number", "created", "changed", "at_zone", "code", "wide",
             "notes", "token", "ratio"]  # fmt: skip
    target = await pg.connect(db, None)
    try:
        types = dict(await target.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'public.syncd_verify'::regclass AND attnum > 0"
        ))  # fmt: skip
        rows = await target.fetch(f"SELECT {', '.join(names)} FROM public.syncd_verify")
    finally:
        await target.close()
    kinds = [kind_of(types[name]) for name in names]
    assert kinds == [c.kind for c in COLUMNS]
    assert in_oracle == {row["id"]: row_hash(list(row), kinds) for row in rows}

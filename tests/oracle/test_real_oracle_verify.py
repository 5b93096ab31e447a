"""Verify's Oracle SQL against a real Oracle Database: each row's hash, as Oracle computes
it with ``syncd.verify.oracle``, is the Python reference's hash of the row as syncd loaded
it into PostgreSQL; and ``syncd verify`` of an Oracle source finds and repairs each kind
of difference. Run with ``pytest -m oracle`` (see test_real_oracle.py)."""

from __future__ import annotations

from typing import Any

import asyncpg
import oracledb

from syncd import pg
from syncd.sources.oracle_sql import Relation
from syncd.verify.canonical import Kind, kind_of, row_hash
from syncd.verify.oracle import OracleColumn, hashes_sql
from syncd.verify.verifier import verify
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


LINES_DDL = """
CREATE TABLE SYNCD_VERIFY_LINES (
    REGION VARCHAR2(4), LINE_NO NUMBER(9), AMOUNT NUMBER(12,2), UPDATED TIMESTAMP(6),
    NOTES CLOB, TOKEN RAW(8), PRIMARY KEY (REGION, LINE_NO)
)"""
LINES_ROWS = """
INSERT INTO SYNCD_VERIFY_LINES
SELECT DECODE(MOD(LEVEL, 4), 0, 'a', 1, 'B', 2, 'b', 'A'), LEVEL, LEVEL / 4,
       TIMESTAMP '2025-01-01 00:00:00' + NUMTODSINTERVAL(LEVEL, 'SECOND'),
       TO_CLOB('line ' || LEVEL), HEXTORAW(LPAD(TO_CHAR(LEVEL, 'FMXXXX'), 4, '0'))
  FROM DUAL CONNECT BY LEVEL <= 3000"""


def kinds(report: Any) -> dict[str, list[list[str]]]:
    """Each kind's keys, sorted by code point: binary order, as both databases compare."""
    document = report.as_json()
    return {k: sorted(document[k]["keys"]) for k in ("missing", "extra", "different", "pending")}


async def test_an_oracle_source_is_verified_and_repaired_to_equality(
    oracle: oracledb.AsyncConnection, conn: asyncpg.Connection, db: str, make_config: Any
) -> None:
    await recreate(oracle, "SYNCD_VERIFY_LINES", LINES_DDL)
    await run(oracle, LINES_ROWS)
    config = configure(
        make_config, "SYNCD_VERIFY_LINES", cursor="UPDATED", verify={"deletes": "hard"}
    )
    assert (await run_sync(config, "t")).status == "succeeded"
    assert (await verify(config, "t")).equal, "the rows syncd loaded hash alike in Oracle"

    target = await pg.connect(db, None)
    try:
        await target.execute(
            "DELETE FROM public.syncd_verify_lines WHERE line_no IN (7, 1001);"
            " UPDATE public.syncd_verify_lines SET amount = amount + 1 WHERE line_no = 12;"
            " UPDATE public.syncd_verify_lines SET notes = 'x' WHERE line_no = 2002;"
            " INSERT INTO public.syncd_verify_lines (region, line_no, amount) VALUES ('Z', 1, 1)"
        )
    finally:
        await target.close()
    await run(
        oracle,
        "UPDATE SYNCD_VERIFY_LINES SET AMOUNT = 0, UPDATED = SYSTIMESTAMP WHERE LINE_NO = 30",
    )

    found = kinds(await verify(config, "t"))

    assert found == {
        "missing": [["A", "7"], ["B", "1001"]],
        "extra": [["Z", "1"]],
        "different": [["a", "12"], ["b", "2002"]],
        "pending": [["b", "30"]],
    }

    repaired = await verify(config, "t", repair_too=True)

    assert repaired.as_json()["repaired"] == {"copied": 4, "deleted": 1, "deletes_refused": None}
    assert (await run_sync(config, "t")).status == "succeeded"
    assert (await verify(config, "t")).equal

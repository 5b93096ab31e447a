"""Verify's Oracle statements: golden text, Oracle that sqlglot parses and prints back,
NULL ordering stated in every ORDER BY; and the Python reference string over values as
python-oracledb returns each Oracle type, against PostgreSQL's SQL over the same values
as the loader writes them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from syncd import pg
from syncd.sources.oracle_sql import Relation
from syncd.verify.canonical import Kind, canonical_value, kind_of
from syncd.verify.oracle import (
    OracleColumn,
    bounds_sql,
    checksums_sql,
    hashes_sql,
    null_keys_sql,
    pending_sql,
    reread_sql,
    rows_sql,
)
from syncd.verify.postgres import canonical_sql
from tests.oracle_checks import (
    assert_every_order_term_states_its_nulls,
    assert_sqlglot_prints_it_back,
)

GOLDEN = Path(__file__).parent / "golden"
KEYS = Relation(table='"CRM"."LINES"', select=(), order=('"REGION"', '"LINE_NO"'), cursor=None)
COLUMNS = [
    OracleColumn('"REGION"', Kind.TEXT),
    OracleColumn('"LINE_NO"', Kind.NUMBER),
    OracleColumn('"AMOUNT"', Kind.NUMBER),
    OracleColumn('"RATIO"', Kind.FLOAT),
    OracleColumn('"OPENED"', Kind.TIMESTAMP),
    OracleColumn('SYS_EXTRACT_UTC("CLOSED_AT")', Kind.TIMESTAMPTZ),
    OracleColumn('"TOKEN"', Kind.BYTES),
    OracleColumn('"NOTES"', Kind.TEXT, lob=True),
]
READ = Relation(
    table='"CRM"."LINES"',
    select=('"REGION"', '"LINE_NO"', '"AMOUNT"', 'SYS_EXTRACT_UTC("CLOSED_AT")'),
    order=('"CLOSED_AT"', '"REGION"', '"LINE_NO"'),
    cursor='"CLOSED_AT"',
)
"""As a run reads the table: by its cursor, then its key."""
STATEMENTS = {
    "checksums": checksums_sql(KEYS, COLUMNS, 3, low=True, high=True),
    "bounds": bounds_sql(KEYS, 32, low=True, high=False),
    "hashes": hashes_sql(KEYS, COLUMNS, low=False, high=True),
    "reread": reread_sql(KEYS, COLUMNS, 2, pending_sql(READ, position=True)),
    "rows": rows_sql(READ, KEYS, 2),
    "null_keys": null_keys_sql(KEYS),
}


@pytest.mark.parametrize("name", STATEMENTS)
def test_each_statement_is_its_golden_text(name: str) -> None:
    assert STATEMENTS[name] == (GOLDEN / f"verify_oracle_{name}.sql").read_text().strip()


@pytest.mark.parametrize("name", STATEMENTS)
def test_each_statement_is_oracle_that_sqlglot_prints_back(name: str) -> None:
    assert_sqlglot_prints_it_back(STATEMENTS[name])


@pytest.mark.parametrize("name", STATEMENTS)
def test_every_order_term_states_its_nulls(name: str) -> None:
    assert_every_order_term_states_its_nulls(STATEMENTS[name])


def test_oracle_s_leading_point_is_given_its_zero() -> None:
    """TO_CHAR(0.71, 'TM9') is '.71': the statement puts the zero back, as the reference
    writes it."""
    sql = checksums_sql(KEYS, COLUMNS[:3], 0, low=False, high=False)
    amount = 'TO_CHAR("AMOUNT", ' + "'TM9', 'NLS_NUMERIC_CHARACTERS = ''.,''')"
    assert f"REGEXP_REPLACE({amount}, '^(-?)[.]', '\\10.')" in sql
    assert canonical_value(Decimal("0.71"), Kind.NUMBER) == "0.71"
    assert canonical_value(Decimal("-.5"), Kind.NUMBER) == "-0.5"


# Each Oracle type: the PostgreSQL type the loader maps it to, a value as python-oracledb
# returns it (fetch_decimals; a zoned time through SYS_EXTRACT_UTC, made UTC by the
# loader), and the same value as PostgreSQL holds it in the target.
ORACLE_VALUES = [
    ("NUMBER(5,2)", "numeric(5,2)", Decimal("0.71"), "0.71"),
    ("NUMBER(5,2)", "numeric(5,2)", Decimal("-0.5"), "-0.50"),
    ("NUMBER(9,0)", "integer", 123456789, "123456789"),
    ("NUMBER(30,0)", "numeric(30,0)", Decimal("123456789012345678901234567890"),
     "123456789012345678901234567890"),
    ("NUMBER(12,4)", "numeric(12,4)", Decimal("1.5"), "1.5000"),
    ("NUMBER", "numeric", Decimal("1E-30"), "0.000000000000000000000000000001"),
    ("NUMBER", "numeric", Decimal("1E+25"), "10000000000000000000000000"),
    ("DATE", "timestamp(0) without time zone", datetime(2025, 3, 30, 1, 30), "2025-03-30 01:30"),
    ("DATE", "timestamp(0) without time zone", datetime(1, 1, 1), "0001-01-01"),
    ("TIMESTAMP(9)", "timestamp(6) without time zone",
     datetime(2025, 1, 1, 0, 0, 0, 123456), "2025-01-01 00:00:00.123456"),
    ("TIMESTAMP(6) WITH TIME ZONE", "timestamp(6) with time zone",
     datetime(2025, 1, 1, 5, 0, tzinfo=UTC), "2025-01-01 00:00:00-05"),
    ("CHAR(3)", "text", "ab ", "ab "),
    ("NVARCHAR2(10)", "text", "日本", "日本"),
    ("RAW(4)", "bytea", b"\xde\xad\xbe\xef", "\\xdeadbeef"),
    ("CLOB", "text", "x" * 5000, "x" * 5000),
    ("BINARY_DOUBLE", "double precision", 0.1, "0.1"),
    ("BINARY_DOUBLE", "double precision", float("inf"), "Infinity"),
    ("BINARY_DOUBLE", "double precision", 1 / 3, "0.333333333333333314829616256247"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("oracle_type", "pg_type", "fetched", "stored"),
    ORACLE_VALUES,
    ids=[f"{o}-{i}" for i, (o, *_) in enumerate(ORACLE_VALUES)],
)
async def test_the_reference_writes_an_oracle_value_as_postgresql_s_sql_writes_it_loaded(
    db: str, oracle_type: str, pg_type: str, fetched: object, stored: str
) -> None:
    kind = kind_of(pg_type)
    conn = await pg.connect(db, None)
    try:
        in_target = await conn.fetchval(
            f"SELECT {canonical_sql('$1::text::' + pg_type, kind)}", stored
        )
    finally:
        await conn.close()
    assert canonical_value(fetched, kind) == in_target


def test_every_oracle_type_the_issue_names_is_checked() -> None:
    named = {"NUMBER", "DATE", "TIMESTAMP(9)", "TIMESTAMP(6) WITH TIME ZONE", "CHAR",
             "NVARCHAR2", "RAW", "CLOB", "BINARY_DOUBLE"}  # fmt: skip
    checked = {o for o, *_ in ORACLE_VALUES} | {o.split("(")[0] for o, *_ in ORACLE_VALUES}
    assert named <= checked

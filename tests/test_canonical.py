"""The canonical row string: PostgreSQL's SQL gives, byte for byte, what the Python
reference gives, for the values where the two could most easily part ways."""

from __future__ import annotations

from decimal import Decimal

import asyncpg
import pytest

from syncd import pg
from syncd.verify.canonical import (
    NULL_MARKER,
    SEPARATOR,
    Kind,
    canonical_value,
    kind_of,
    row_hash,
    row_string,
)
from syncd.verify.postgres import canonical_sql, row_hash_sql

# (PostgreSQL type, values as SQL literals): each value is one row of one column.
CASES: list[tuple[str, list[str]]] = [
    ("numeric(12,2)", ["1.50", "0.71", "-0.50", "0", "100.00", "12345678.90", "-0.01"]),
    ("numeric", ["1.000", "0.0000001", "-0", "1e20", "'NaN'", "'Infinity'", "'-Infinity'",
                 "123456789012345678901234567890.123456789", "-.5", "10"]),
    ("numeric(5,0)", ["5", "-99999"]),
    ("smallint", ["-32768", "0", "32767"]),
    ("bigint", ["9223372036854775807", "-9223372036854775808"]),
    ("real", ["0.1", "1e-7", "3.4028235e38", "'NaN'", "'Infinity'", "'-0'", "16777217"]),
    ("double precision", ["0.1", "1.0/3", "1e300", "5e-324", "'-0'", "'NaN'", "'-Infinity'",
                          "123456789012345.678", "0.30000000000000004", "2.5e-5"]),
    ("timestamp(6)", ["'2025-01-01 12:34:56.789012'", "'0001-01-01 00:00:00'",
                      "'9999-12-31 23:59:59.999999'", "'2025-01-01 00:00:00.5'"]),
    ("timestamp(0)", ["'2025-06-30 23:59:59'"]),
    ("timestamp with time zone", ["'2025-03-30 01:30:00+02'", "'2025-01-01 00:00:00.000001+00'",
                                  "'1999-12-31 19:00:00-05'"]),
    ("date", ["'0001-01-01'", "'2024-02-29'", "'9999-12-31'"]),
    ("time without time zone", ["'00:00:00'", "'23:59:59.999999'", "'12:00:00.5'"]),
    ("bytea", ["'\\x00ff10'", "''", "'\\xDEADBEEF'"]),
    ("boolean", ["true", "false"]),
    ("character(5)", ["'ab'", "''", "'abcde'", "' a'"]),
    ("character varying(20)", ["'ab  '", "''"]),
    ("text", ["''", "' trailing '", "E'a\\x1fb'", f"'{NULL_MARKER}'", "'\\N'", "'NULL'",
              "'é'", "'日本'", "E'line\\nbreak'", "'d41d8cd98f00b204e9800998ecf8427e'"]),
    ("interval", ["'1 mon 2 days 03:04:05.000006'", "'-1 days -02:00:00'", "'1 year -1 day'",
                  "'-00:00:00.000001'", "'0'", "'14 months'"]),
    ("uuid", ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"]),
    ("jsonb", ["'{\"b\": 1.50, \"a\": [1, 2]}'"]),
]  # fmt: skip


@pytest.fixture
async def session(db: str) -> asyncpg.Connection:
    """A connection with syncd's own session settings and codecs."""
    conn = await pg.connect(db, None)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.mark.parametrize(("pg_type", "literals"), CASES, ids=[c[0] for c in CASES])
async def test_each_value_s_canonical_string_is_the_reference_s(
    session: asyncpg.Connection, pg_type: str, literals: list[str]
) -> None:
    kind = kind_of(pg_type)
    await session.execute(f"CREATE TEMPORARY TABLE v (n int, x {pg_type})")
    rows = ", ".join(f"({n}, {literal})" for n, literal in enumerate(literals))
    await session.execute(f"INSERT INTO v VALUES {rows}, ({len(literals)}, NULL)")
    found = await session.fetch(f"SELECT x, {canonical_sql('x', kind)} FROM v ORDER BY n")

    expected = [canonical_value(row[0], kind) for row in found]
    assert [row[1] for row in found] == expected
    assert expected[-1] is None


def test_kinds_of_types() -> None:
    assert kind_of("numeric(12,2)") is Kind.NUMBER
    assert kind_of("double precision") is Kind.FLOAT
    assert kind_of("timestamp(3) with time zone") is Kind.TIMESTAMPTZ
    assert kind_of("timestamp without time zone") is Kind.TIMESTAMP
    assert kind_of("character(3)") is Kind.CHAR
    assert kind_of("character varying(3)") is Kind.TEXT
    assert kind_of("integer[]") is Kind.TEXT
    assert kind_of("time with time zone") is Kind.TEXT


def test_reference_values() -> None:
    """The traps the canonical form exists for, written out."""
    assert canonical_value(Decimal("0.710"), Kind.NUMBER) == "0.71"
    assert canonical_value(Decimal("-0.00"), Kind.NUMBER) == "0"
    assert canonical_value(Decimal("1E+2"), Kind.NUMBER) == "100"
    assert canonical_value(0.1 + 0.2, Kind.FLOAT) == "0.3"
    assert canonical_value(b"\xde\xad", Kind.BYTES) == "dead"
    assert canonical_value("ab   ", Kind.CHAR) == "ab"


async def test_the_row_hash_is_the_reference_s_with_nulls_and_separators(
    session: asyncpg.Connection,
) -> None:
    columns = [
        ("k", "text"),
        ("a", "numeric"),
        ("b", "text"),
        ("c", "timestamp with time zone"),
        ("d", "bytea"),
    ]
    kinds = [kind_of(t) for _, t in columns]
    await session.execute(
        "CREATE TEMPORARY TABLE r (" + ", ".join(f"{n} {t}" for n, t in columns) + ")"
    )
    await session.execute(
        "INSERT INTO r VALUES ('1', 1.50, NULL, '2025-01-01 00:00:00+00', '\\x00'),"
        f" ('2', NULL, '{NULL_MARKER}', NULL, NULL),"
        " ('3', 0, E'\\x1f', NULL, ''),"
        " ('4', 0, '', NULL, '')"
    )
    hashed = row_hash_sql([(n, k) for (n, _), k in zip(columns, kinds, strict=True)])
    rows = await session.fetch(f"SELECT k, a, b, c, d, {hashed} AS h FROM r ORDER BY k")

    hashes = [row_hash(list(row)[:-1], kinds) for row in rows]
    assert [row["h"] for row in rows] == hashes
    assert len(set(hashes)) == len(hashes)
    # A NULL and a string that reads like the marker, an empty string and a separator,
    # give different row strings.
    texts = [Kind.TEXT] * 2
    assert row_string(["x", None], texts) != row_string(["x", NULL_MARKER], texts)
    assert row_string(["a" + SEPARATOR, "b"], [Kind.TEXT] * 2) != row_string(
        ["a", SEPARATOR + "b"], [Kind.TEXT] * 2
    )

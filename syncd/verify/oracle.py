"""Verify's questions in Oracle's SQL: the canonical row string, the row hash, and the
segment, bound and leaf statements, as PostgresSide asks them of PostgreSQL.

Each value is written as ``canonical`` writes it for the PostgreSQL type the loader
gives it, so that the same logical row hashes alike in both databases:

- NUMBER: ``TO_CHAR(…, 'TM9')``, which has no trailing zeros but prints 0.71 as
  ``.71``: a zero is put back before a leading point.
- BINARY_FLOAT, BINARY_DOUBLE: rounded to 15 significant digits by a round trip
  through scientific notation, then as a NUMBER; NaN and ±Infinity by name.
- DATE, TIMESTAMP: ``YYYY-MM-DDTHH24:MI:SS.FF6`` (a DATE through TIMESTAMP(9), so
  with six zeros); WITH [LOCAL] TIME ZONE: the same of ``SYS_EXTRACT_UTC``.
- RAW: lowercase hex. CHAR, NCHAR keep their padding, as the loader does.
- Every column's canonical string is hashed on its own with ``STANDARD_HASH(…, 'MD5')``,
  a CLOB's with ``DBMS_CRYPTO.HASH`` (no 4,000-byte limit), so the row string is 33
  characters a column, whatever the values.

Keys are compared with Oracle's binary comparison (the sessions' NLS_COMP and
NLS_SORT are BINARY), which is PostgreSQL's "C" order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from syncd.sources.oracle_sql import Relation, beyond, tiles_sql
from syncd.verify.canonical import HASH_HEX_DIGITS, NULL_MARKER, SEPARATOR, Kind

_TIME_FORMAT = "'YYYY-MM-DD\"T\"HH24:MI:SS.FF6'"


def _number(value: str) -> str:
    text = f"TO_CHAR({value}, 'TM9', 'NLS_NUMERIC_CHARACTERS = ''.,''')"
    return f"REGEXP_REPLACE({text}, '^(-?)[.]', '\\10.')"


def canonical_sql(value: str, kind: Kind) -> str:
    """The SQL for ``value``'s canonical string, as canonical_value writes it."""
    if kind is Kind.NUMBER:
        return _number(value)
    if kind is Kind.FLOAT:
        rounded = f"TO_NUMBER(TO_CHAR({value}, '9.99999999999999EEEE'))"
        return (
            f"CASE WHEN {value} = BINARY_DOUBLE_NAN THEN 'NaN'"
            f" WHEN {value} = BINARY_DOUBLE_INFINITY THEN 'Infinity'"
            f" WHEN {value} = -BINARY_DOUBLE_INFINITY THEN '-Infinity'"
            f" ELSE {_number(rounded)} END"
        )
    if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        return f"TO_CHAR(CAST({value} AS TIMESTAMP(9)), {_TIME_FORMAT})"
    if kind is Kind.BYTES:
        return f"LOWER(RAWTOHEX({value}))"
    if kind is Kind.BOOLEAN:
        return f"CASE WHEN {value} THEN 'true' WHEN NOT {value} THEN 'false' END"
    return value


@dataclass(frozen=True)
class OracleColumn:
    """A column as Oracle's side of a verify reads it."""

    value: str
    """Its SQL, as the loader selects it (SYS_EXTRACT_UTC for a zoned time…)."""
    kind: Kind
    lob: bool = False
    """A CLOB or NCLOB: hashed by DBMS_CRYPTO, which takes a LOB whole."""


def _digest(column: OracleColumn) -> str:
    if column.lob:
        digest = f"DBMS_CRYPTO.HASH({column.value}, 2)"  # 2: HASH_MD5
    else:
        digest = f"STANDARD_HASH({canonical_sql(column.value, column.kind)}, 'MD5')"
    return (
        f"CASE WHEN {column.value} IS NULL THEN '{NULL_MARKER}' ELSE LOWER(RAWTOHEX({digest})) END"
    )


def row_hash_sql(columns: Sequence[OracleColumn]) -> str:
    """The row's 60-bit hash as a NUMBER, as row_hash computes it."""
    joined = f" || CHR({ord(SEPARATOR)}) || ".join(_digest(c) for c in columns)
    hex_digits = f"SUBSTR(LOWER(RAWTOHEX(STANDARD_HASH({joined}, 'MD5'))), 1, {HASH_HEX_DIGITS})"
    return f"TO_NUMBER({hex_digits}, '{'X' * HASH_HEX_DIGITS}')"


def _within(keys: Relation, low: bool, high: bool) -> list[str]:
    conditions = []
    if low:
        conditions.append(beyond(keys, "low", ">=", ">", ">"))
    if high:
        conditions.append(beyond(keys, "high", "<=", "<", "<="))
    return conditions


def _where(conditions: list[str]) -> str:
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def _part(keys: Relation, first: int, last: int) -> str:
    """Which of the parts ``first``..``last`` a row falls in, as a binary search over the
    bounds :b{i}_1, :b{i}_2…"""
    if first == last:
        return str(first)
    middle = (first + last) // 2
    at_most = beyond(keys, f"b{middle}_", "<=", "<", "<=")
    return (
        f"CASE WHEN {at_most} THEN {_part(keys, first, middle)}"
        f" ELSE {_part(keys, middle + 1, last)} END"
    )


def checksums_sql(
    keys: Relation, columns: Sequence[OracleColumn], bounds: int, low: bool, high: bool
) -> str:
    """Count and hash sum of each of the ``bounds`` + 1 parts of a segment."""
    return (
        f"SELECT part, COUNT(*), SUM(h) FROM (SELECT {_part(keys, 0, bounds)} AS part,"
        f" {row_hash_sql(columns)} AS h FROM {keys.table}{_where(_within(keys, low, high))})"
        " GROUP BY part"
    )


def bounds_sql(keys: Relation, parts: int, low: bool, high: bool) -> str:
    """The last key of each of ``parts`` tiles of a segment, in key order."""
    rows = f"{keys.table}{_where(_within(keys, low, high))}"
    return tiles_sql(keys, parts, rows, keys.order)


def hashes_sql(keys: Relation, columns: Sequence[OracleColumn], low: bool, high: bool) -> str:
    """Every row of a segment: its key and its hash, in key order."""
    ascending = ", ".join(f"{k} ASC NULLS LAST" for k in keys.order)
    return (
        f"SELECT {', '.join(keys.order)}, {row_hash_sql(columns)} FROM {keys.table}"
        f"{_where(_within(keys, low, high))} ORDER BY {ascending}"
    )


def _among(keys: Relation, count: int) -> str:
    """The rows whose key is one of ``count`` keys, bound as :w{i}_1, :w{i}_2…"""
    wanted = [[f":w{i}_{j}" for j in range(1, len(keys.order) + 1)] for i in range(count)]
    if len(keys.order) == 1:
        return f"{keys.order[0]} IN ({', '.join(key[0] for key in wanted)})"
    tuples = ", ".join(f"({', '.join(key)})" for key in wanted)
    return f"({', '.join(keys.order)}) IN ({tuples})"


def pending_sql(relation: Relation, position: bool) -> str:
    """1 for a row the next run copies: its cursor is past :position (bound as the
    cursor's own type), or, with no ``position`` committed yet, any row; else 0. A NULL
    cursor is past no position: such rows are read by key."""
    if relation.cursor is None:
        return "0"
    if not position:
        return "1"
    return f"CASE WHEN {relation.cursor} > {relation.bind('position', 0)} THEN 1 ELSE 0 END"


def reread_sql(keys: Relation, columns: Sequence[OracleColumn], count: int, pending: str) -> str:
    """The key, hash and pending flag (``pending_sql``) of the rows with ``count`` keys."""
    return (
        f"SELECT {', '.join(keys.order)}, {row_hash_sql(columns)}, {pending}"
        f" FROM {keys.table} WHERE {_among(keys, count)}"
    )


def rows_sql(relation: Relation, keys: Relation, count: int) -> str:
    """The whole rows with ``count`` keys, selected as a run's batches select them."""
    return f"SELECT {', '.join(relation.select)} FROM {keys.table} WHERE {_among(keys, count)}"


def null_keys_sql(keys: Relation) -> str:
    """How many rows have a NULL in a key column."""
    either = " OR ".join(f"{k} IS NULL" for k in keys.order)
    return f"SELECT COUNT(*) FROM {keys.table} WHERE {either}"

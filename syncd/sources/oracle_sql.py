"""Oracle's SQL for a sync: the keyset batch query, the catalogue's questions, and quoting.

Every batch is one query, never OFFSET:

    WHERE c >= :after1 AND (c > :after1 OR k > :after2) AND c < :before
    ORDER BY c, k FETCH FIRST n ROWS ONLY

Its binds carry each column's own type, so Oracle compares like with like and
an index on (c, k) serves the query as a range scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import oracledb

from syncd.identifiers import TableName
from syncd.sources.oracle_types import OracleType

Binds = dict[str, tuple[Any, oracledb.DbType]]
"""Bind name to (value, the type it is bound as): a batch query's binds."""


@dataclass(frozen=True)
class Relation:
    """What a sync reads, quoted for Oracle."""

    table: str
    select: tuple[str, ...]
    order: tuple[str, ...]
    """The cursor (if any) then the key columns; the key columns alone for a backfill."""
    cursor: str | None
    """Rows whose cursor is NULL are not read, whether or not the order includes it."""
    local_time_cursor: bool = False
    """The cursor is a TIMESTAMP WITH LOCAL TIME ZONE. Its binds travel as TIMESTAMP WITH
    TIME ZONE at +00:00 and are cast back in the query, so that the index still serves:
    a LOCAL TIME ZONE bind's naive fields would be read in DBTIMEZONE, which need not be
    UTC, and every saved position would shift by its offset."""

    def bind(self, name: str, column: int) -> str:
        """The placeholder for a bind compared with order column ``column``."""
        if column == 0 and self.local_time_cursor:
            return f"CAST(:{name} AS TIMESTAMP WITH LOCAL TIME ZONE)"
        return f":{name}"


@dataclass(frozen=True)
class Bounds:
    """Which conditions one batch query carries; their values travel as binds."""

    after: bool = False
    """(order) > (:after1, :after2, …)"""
    since: bool = False
    """cursor >= :since, the saved cursor value less the lookback"""
    until: bool = False
    """(order) <= (:until1, :until2, …)"""
    before: bool = False
    """cursor < :before, the database clock less the lag"""
    scn: bool = False
    """AS OF SCN :scn"""
    null_cursor: bool = False
    """cursor IS NULL: the rows no cursor order holds, read by key"""


def batch_sql(relation: Relation, bounds: Bounds, limit: int | None) -> str:
    """The query for one batch of at most ``limit`` rows (a literal), or, without a limit,
    for the whole window in keyset order."""
    order = relation.order
    cursor = relation.cursor or order[0]
    conditions = []
    if bounds.after:
        conditions.append(beyond(relation, "after", ">=", ">", ">"))
    if bounds.since:
        conditions.append(f"{cursor} >= {relation.bind('since', 0)}")
    if bounds.until:
        conditions.append(beyond(relation, "until", "<=", "<", "<="))
    if bounds.before:
        conditions.append(f"{cursor} < {relation.bind('before', 0)}")
    bounded = bounds.since or bounds.before or (bounds.after and order[0] == relation.cursor)
    if relation.cursor is not None and bounds.null_cursor:
        conditions.insert(0, f"{relation.cursor} IS NULL")
    elif relation.cursor is not None and not bounded:
        # A NULL cursor has no place in the order; sqlglot spells IS NOT NULL this way.
        conditions.insert(0, f"NOT {relation.cursor} IS NULL")
    sql = f"SELECT {', '.join(relation.select)} FROM {relation.table}"
    if bounds.scn:
        sql += " AS OF SCN :scn"
    if conditions:
        sql += f" WHERE {' AND '.join(conditions)}"
    ascending = ", ".join(f"{column} ASC NULLS LAST" for column in order)
    sql += f" ORDER BY {ascending}"
    return sql if limit is None else sql + f" FETCH FIRST {int(limit)} ROWS ONLY"


def beyond(relation: Relation, name: str, loose: str, strict: str, last: str) -> str:
    """A row comparison written out column by column, each leading column first as a
    plain range (``loose``), so that Oracle can start an index range scan there."""
    order = relation.order
    sql = f"{order[-1]} {last} {relation.bind(f'{name}{len(order)}', len(order) - 1)}"
    for i in reversed(range(len(order) - 1)):
        column, bind = order[i], relation.bind(f"{name}{i + 1}", i)
        inner = f"({sql})" if " AND " in sql else sql
        sql = f"{column} {loose} {bind} AND ({column} {strict} {bind} OR {inner})"
    return sql


COLUMNS_SQL = (
    "SELECT COLUMN_NAME, DATA_TYPE, DATA_PRECISION, DATA_SCALE, NULLABLE FROM ALL_TAB_COLUMNS"
    " WHERE OWNER = COALESCE(:owner, SYS_CONTEXT('USERENV', 'CURRENT_SCHEMA'))"
    " AND TABLE_NAME = :table_name ORDER BY COLUMN_ID"
)
PRIMARY_KEY_SQL = (
    "SELECT cc.COLUMN_NAME FROM ALL_CONSTRAINTS c JOIN ALL_CONS_COLUMNS cc"
    " ON cc.OWNER = c.OWNER AND cc.CONSTRAINT_NAME = c.CONSTRAINT_NAME"
    " WHERE c.OWNER = COALESCE(:owner, SYS_CONTEXT('USERENV', 'CURRENT_SCHEMA'))"
    " AND c.TABLE_NAME = :table_name AND c.CONSTRAINT_TYPE = 'P' ORDER BY cc.POSITION"
)
NUM_ROWS_SQL = (
    "SELECT NUM_ROWS FROM ALL_TABLES"
    " WHERE OWNER = COALESCE(:owner, SYS_CONTEXT('USERENV', 'CURRENT_SCHEMA'))"
    " AND TABLE_NAME = :table_name"
)
LEADING_INDEX_SQL = (
    "SELECT COUNT(*) FROM ALL_IND_COLUMNS"
    " WHERE TABLE_OWNER = COALESCE(:owner, SYS_CONTEXT('USERENV', 'CURRENT_SCHEMA'))"
    " AND TABLE_NAME = :table_name AND COLUMN_POSITION = 1 AND COLUMN_NAME = :column_name"
)
NATIONAL_CHARSET_SQL = (
    "SELECT VALUE FROM NLS_DATABASE_PARAMETERS WHERE PARAMETER = 'NLS_NCHAR_CHARACTERSET'"
)
CLOCK_SQL = "SELECT SYS_EXTRACT_UTC(SYSTIMESTAMP) FROM DUAL"
WALL_CLOCK_SQL = "SELECT CAST(SYSTIMESTAMP AS TIMESTAMP) FROM DUAL"
"""The server's wall clock, in its operating system's zone: what SYSDATE gives."""
SCN_SQL = "SELECT CURRENT_SCN FROM V$DATABASE"


def null_cursors_sql(relation: Relation) -> str:
    """How many rows have a NULL cursor, which an index on the cursor answers."""
    return f"SELECT COUNT(*) FROM {relation.table} WHERE {relation.cursor} IS NULL"


def newest_sql(relation: Relation, scn: bool = False, before: bool = False) -> str:
    """The newest cursor value, as batches select it (an instant in UTC for a zoned one):
    MAX over the column itself, which an index answers at its end, and which passes over
    NULLs. ``scn``: AS OF SCN :scn; ``before``: below :before, the clock less the lag."""
    assert relation.cursor is not None
    newest = f"MAX({relation.cursor})"
    zoned = as_read(relation, relation.cursor) != relation.cursor
    sql = f"SELECT {f'SYS_EXTRACT_UTC({newest})' if zoned else newest} FROM {relation.table}"
    if scn:
        sql += " AS OF SCN :scn"
    if before:
        sql += f" WHERE {relation.cursor} < {relation.bind('before', 0)}"
    return sql


def as_read(relation: Relation, column: str) -> str:
    """``column`` (quoted) as the select list reads it: through SYS_EXTRACT_UTC if zoned."""
    zoned = f"SYS_EXTRACT_UTC({column})"
    return zoned if zoned in relation.select else column


def loaded_rows(keys: Relation, scn: bool) -> str:
    """The FROM clause and conditions of the rows a parallel load reads by ``keys``: every
    row whose cursor is not NULL (those are read by key afterwards), AS OF SCN :scn."""
    sql = keys.table + (" AS OF SCN :scn" if scn else "")
    return sql if keys.cursor is None else f"{sql} WHERE NOT {keys.cursor} IS NULL"


def extent_sql(keys: Relation, scn: bool, span: bool, count: bool) -> str:
    """With ``span``, the least and the greatest value of a parallel load's single key
    column; with ``count``, then how many rows it reads."""
    counted = []
    if span:
        (key,) = keys.order
        counted += [f"MIN({key})", f"MAX({key})"]
    if count:
        counted.append("COUNT(*)")
    return f"SELECT {', '.join(counted)} FROM {loaded_rows(keys, scn)}"


def tiles_sql(keys: Relation, tiles: int, rows: str, selected: Sequence[str]) -> str:
    """The last key of each of ``tiles`` NTILE tiles of ``rows`` (a FROM clause, with its
    conditions) in key order, each key column as ``selected`` says."""
    names = ", ".join(keys.order)
    ascending = ", ".join(f"{k} ASC NULLS LAST" for k in keys.order)
    descending = ", ".join(f"{k} DESC NULLS FIRST" for k in keys.order)
    tiled = f"SELECT {names}, NTILE({int(tiles)}) OVER (ORDER BY {ascending}) AS part FROM {rows}"
    ranked = (
        f"SELECT {names}, part, ROW_NUMBER() OVER (PARTITION BY part ORDER BY {descending})"
        f" AS tile_rank FROM ({tiled}) tiles"
    )
    # Named, though Oracle needs no name for a subquery: so that the fake Oracle of the
    # tests (PostgreSQL 15, which does) runs it too.
    return (
        f"SELECT {', '.join(selected)} FROM ({ranked}) ranked WHERE tile_rank = 1"
        " ORDER BY part ASC NULLS LAST"
    )


def null_keys_sql(table: str, columns: Sequence[str]) -> str:
    """How many rows hold NULL in each of ``columns``, which are quoted."""
    counts = ", ".join(f"COUNT(CASE WHEN {c} IS NULL THEN 1 END)" for c in columns)
    either = " OR ".join(f"{c} IS NULL" for c in columns)
    return f"SELECT {counts} FROM {table} WHERE {either}"


def catalogue_binds(table: TableName) -> dict[str, str | None]:
    """The binds naming ``table`` in the catalogue queries: its owner (or, without one,
    the session's schema) and its name."""
    return {"owner": table.schema, "table_name": table.name}


def selected(column: str, mapped: OracleType) -> str:
    """How a column is selected. No alias: ORDER BY would take an alias over the column
    and sort by the expression, which no index on the column serves."""
    if mapped.at_utc:
        return f"SYS_EXTRACT_UTC({column})"
    if mapped.serialized:
        return f"JSON_SERIALIZE({column} RETURNING CLOB)"
    return column


def quote(name: str) -> str:
    return oracledb.enquote_name(name, capitalize=False)

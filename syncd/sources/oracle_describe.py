"""What an Oracle table is to a sync, read from the catalogue: its columns and their types,
its key, the orders it is read in, and what keeps it from being read at all.

A sync's order is its cursor (if any) then its key; a backfill reads by key alone.
Each order is a keyset: the query's relation, the type each position value binds as,
and how a fetched row becomes a record and a position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import oracledb
import structlog

from syncd.config import OracleSourceConfig, SyncConfig
from syncd.errors import ConfigError, SourceError
from syncd.identifiers import TableName
from syncd.sources import Column, Shape, refuse_null_keys
from syncd.sources.oracle_session import OracleSession
from syncd.sources.oracle_sql import (
    COLUMNS_SQL,
    LEADING_INDEX_SQL,
    NATIONAL_CHARSET_SQL,
    PRIMARY_KEY_SQL,
    Relation,
    catalogue_binds,
    null_keys_sql,
    quote,
    selected,
)
from syncd.sources.oracle_types import OracleType, RowReader, oracle_type, refusal

log = structlog.get_logger("syncd.sources.oracle")

_NATIONAL_TEXT = ("NCHAR", "NVARCHAR2", "NCLOB")


@dataclass(frozen=True)
class Keyset:
    """One order to read in: the query's relation, how positions bind, how rows read."""

    relation: Relation
    binds: tuple[oracledb.DbType, ...]
    """The type each order column's position value is bound as."""
    reader: RowReader


@dataclass(frozen=True)
class Described:
    """A table as a sync reads it: what the target gets, and the keysets to read it by."""

    shape: Shape
    keysets: dict[bool, Keyset]
    """By (cursor, key), and by key alone (for a backfill)."""
    cursor_bind: oracledb.DbType | None
    cursor_is_time: bool
    zone_less: bool
    """The cursor is a DATE or TIMESTAMP: a wall-clock time in the application's zone."""
    data_types: dict[str, str]
    """Each column's Oracle type, as ALL_TAB_COLUMNS names it."""


async def describe_table(
    session: OracleSession, table: TableName, sync: SyncConfig, config: OracleSourceConfig
) -> Described:
    """``table`` as ``sync`` reads it, or a SourceError (or ConfigError) saying why it cannot."""
    names = catalogue_binds(table)
    rows = await session.query(COLUMNS_SQL, names, reading="ALL_TAB_COLUMNS")
    if not rows:
        raise SourceError(
            f"the source table {table} does not exist or {session.user} cannot see it"
            " (names are case-sensitive, and Oracle keeps unquoted names in upper case)"
        )
    found = {name: (data_type, int_or_none(p), int_or_none(s)) for name, data_type, p, s, _ in rows}
    nullable = {name for name, *_, null in rows if null != "N"}
    key = tuple(sync.key) if sync.key else await _primary_key(session, table, names)
    order = (*([sync.cursor] if sync.cursor else []), *key)
    wanted = set(order) | set(sync.columns or found)
    missing = [name for name in (*order, *(sync.columns or ())) if name not in found]
    if missing:
        raise SourceError(
            f"the source table {table} has no column "
            + ", ".join(repr(m) for m in dict.fromkeys(missing))
            + f" (it has {', '.join(found)})"
        )
    chosen = [name for name in found if name in wanted]
    types = {name: _type(table, name, *found[name]) for name in chosen}
    order_binds = tuple(_order_bind(name, found[name][0], types[name]) for name in order)
    cursor_is_time = sync.cursor is not None and types[sync.cursor].is_time
    zone_less = cursor_is_time and not types[sync.cursor or ""].at_utc
    if sync.lag is not None and zone_less and config.cursor_time_zone is None:
        raise ConfigError(
            f"sources.{sync.source}.cursor_time_zone: lag holds back rows newer than 'now',"
            f" and {sync.cursor} ({found[sync.cursor or ''][0]}) has no time zone: name the"
            " zone the application writes it in (such as America/New_York), or 'database'"
        )
    if (sync.lookback is not None or sync.lag is not None) and not cursor_is_time:
        raise SourceError(
            f"lookback and lag need a DATE or TIMESTAMP cursor; {sync.cursor!r} is"
            f" {found[sync.cursor or ''][0]}"
        )
    columns = tuple(
        Column(name=name, target_name=_target_name(name), pg_type=types[name].pg_type)
        for name in chosen
    )
    targets = [c.target_name for c in columns]
    if len(set(targets)) < len(targets):
        raise SourceError(
            "two source columns would have the same name in the target: " + ", ".join(targets)
        )
    relation = Relation(
        table=".".join(quote(part) for part in (table.schema, table.name) if part),
        select=tuple(selected(quote(name), types[name]) for name in chosen),
        order=tuple(quote(name) for name in order),
        cursor=quote(sync.cursor) if sync.cursor else None,
        local_time_cursor=sync.cursor is not None and types[sync.cursor].local_time,
    )
    await _refuse_national_text(
        session, table, [name for name in chosen if found[name][0] in _NATIONAL_TEXT]
    )
    await _refuse_null_keys(session, table, relation.table, [k for k in key if k in nullable])
    readers = {
        by_key: RowReader(
            chosen,
            [types[name] for name in chosen],
            [chosen.index(n) for n in (key if by_key else order)],
            [chosen.index(k) for k in key],
            sync.nul,
        )
        for by_key in (False, True)
    }
    missing_index = await _missing_index(session, names, order, relation)
    if missing_index is not None:
        log.warning(
            "no_usable_index",
            source=f"the source table {table}",
            reads="the whole window in one sorted query each run",
            suggestion=missing_index,
        )
    return Described(
        shape=Shape(columns=columns, key=key, cursor=sync.cursor, missing_index=missing_index),
        cursor_bind=order_binds[0] if sync.cursor else None,
        keysets={
            False: Keyset(relation, order_binds, readers[False]),
            True: Keyset(
                replace(relation, order=relation.order[-len(key) :], local_time_cursor=False),
                order_binds[-len(key) :],
                readers[True],
            ),
        },
        cursor_is_time=cursor_is_time,
        zone_less=zone_less,
        data_types={name: found[name][0] for name in chosen},
    )


def _type(
    table: TableName, name: str, data_type: str, precision: int | None, scale: int | None
) -> OracleType:
    mapped = oracle_type(data_type, precision, scale)
    if mapped is None:
        raise SourceError(refusal(data_type, name, str(table)))
    return mapped


def _order_bind(name: str, data_type: str, mapped: OracleType) -> oracledb.DbType:
    if mapped.bind is None:
        raise SourceError(
            f"{name} ({data_type}) cannot order a keyset: a key or cursor must be a number,"
            " text, RAW, DATE, or TIMESTAMP of at most microseconds"
        )
    return mapped.bind


async def _refuse_null_keys(
    session: OracleSession, table: TableName, quoted_table: str, nullable: list[str]
) -> None:
    if not nullable:
        return
    sql = null_keys_sql(quoted_table, [quote(name) for name in nullable])
    (counts,) = await session.query(sql, reading=str(table))
    refuse_null_keys(
        f"the source table {table}",
        {name: int(count) for name, count in zip(nullable, counts, strict=True)},
    )


async def _refuse_national_text(
    session: OracleSession, table: TableName, columns: list[str]
) -> None:
    """Thin mode reads NCHAR, NVARCHAR2 and NCLOB only in the AL16UTF16 national
    character set; in any other it fails on the first row, so say so beforehand."""
    if not columns:
        return
    ((charset,),) = await session.query(NATIONAL_CHARSET_SQL, reading="NLS_DATABASE_PARAMETERS")
    if charset != "AL16UTF16":
        raise SourceError(
            f"{', '.join(columns)} of {table}: python-oracledb's thin mode reads"
            f" national character columns only in AL16UTF16, and this database's national"
            f" character set is {charset}; read them through a view that selects"
            " TO_CHAR (or TO_CLOB) of each, or leave them out with 'columns'"
        )


async def _missing_index(
    session: OracleSession, names: dict[str, str | None], order: tuple[str, ...], relation: Relation
) -> str | None:
    """The CREATE INDEX the table lacks for its keyset to be read range by range, if any:
    an index leading with the first order column is enough."""
    binds = names | {"column_name": order[0]}
    ((indexes,),) = await session.query(LEADING_INDEX_SQL, binds, reading="ALL_IND_COLUMNS")
    if indexes:
        return None
    return f"CREATE INDEX ON {relation.table} ({', '.join(relation.order)})"


async def _primary_key(
    session: OracleSession, table: TableName, names: dict[str, str | None]
) -> tuple[str, ...]:
    rows = await session.query(PRIMARY_KEY_SQL, names, reading="ALL_CONSTRAINTS")
    if not rows:
        raise SourceError(f"the source table {table} has no primary key; name one with 'key'")
    return tuple(row[0] for row in rows)


_UNQUOTED = re.compile(r"[A-Z][A-Z0-9_$#]*")


def _target_name(name: str) -> str:
    """Oracle's upper-case unquoted names become PostgreSQL's lower-case ones."""
    return name.lower() if _UNQUOTED.fullmatch(name) else name


def int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)

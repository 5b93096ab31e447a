"""A PostgreSQL source: keyset reads that stream binary COPY bytes without decoding them.

Each batch is two statements in one read-only snapshot. The first finds where
the batch ends, walking only the (cursor, key) columns and the size of each
row; the second copies every row up to that bound in binary, streamed to the
target while it is read. The end position is then known before a single row
is decoded, and rows never pass through Python objects.

Every statement carries plain range predicates on the leading order column
next to its row comparison: the planner has statistics for those, none for
row comparisons, and without them it may scan the whole table for each batch.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import structlog

from syncd import clock, pg
from syncd.config import PostgresSourceConfig, SyncConfig
from syncd.errors import ConfigError, SourceError
from syncd.handoff import ByteStream
from syncd.identifiers import TableName, quote_ident
from syncd.sources import (
    Batch,
    Column,
    CopyBatch,
    Limits,
    LoadPlan,
    Position,
    Shape,
    SnapshotExpired,
    Window,
    refuse_null_keys,
)
from syncd.sources.postgres_plan import split_keys
from syncd.sources.postgres_sql import (
    DESCRIBE_SQL,
    LEADING_INDEX_SQL,
    PRIMARY_KEY_SQL,
    batch_bytes_sql,
    batch_end_sql,
    batch_last_row_sql,
    whole_window_end_sql,
)
from syncd.verify.postgres import Compared, PostgresSide

log = structlog.get_logger("syncd.sources.postgres")

_TIME_TYPES = ("timestamp", "date")


@asynccontextmanager
async def open_postgres_source(
    config: PostgresSourceConfig,
    sync: SyncConfig,
    connection: AbstractAsyncContextManager[asyncpg.Connection] | None = None,
) -> AsyncIterator[PostgresSource]:
    """The source of ``sync`` on a connection of its own, or on ``connection``: one lent by
    the daemon's pool for the source, which decides whether it may be used again."""
    async with connection or _own_connection(config) as conn:
        yield PostgresSource(conn, sync, config.cursor_time_zone)


@asynccontextmanager
async def _own_connection(config: PostgresSourceConfig) -> AsyncIterator[asyncpg.Connection]:
    conn = await pg.connect_to(config)
    try:
        yield conn
    finally:
        await _close(conn)


async def check_postgres(dsn: str, password: str | None) -> str:
    conn = await pg.connect(dsn, password)
    try:
        return f"PostgreSQL {await conn.fetchval('SHOW server_version')}"
    finally:
        await _close(conn)


async def _close(conn: asyncpg.Connection) -> None:
    try:
        await conn.close(timeout=5)
    except Exception:
        conn.terminate()


@dataclass(frozen=True)
class _Described:
    shape: Shape
    cast_types: dict[str, str]
    """Each order column's own source type, for casting positions back from text."""
    select_list: str
    """Every column, cast where its source type is one only the source database knows."""


class PostgresSource:
    def __init__(
        self, conn: asyncpg.Connection, sync: SyncConfig, cursor_time_zone: str | None = None
    ) -> None:
        self._conn = conn
        self._sync = sync
        self._cursor_time_zone = cursor_time_zone
        """The zone a zone-less cursor is written in, for reading 'now' as it counts time."""
        self._relation = (
            f"{TableName.parse(sync.table).sql} AS src"
            if sync.table is not None
            else f"({sync.query}) AS src"
        )
        self._described: _Described | None = None

    def abort(self) -> None:
        self._conn.terminate()

    async def null_cursors(self) -> int:
        cursor = self._sync.cursor
        if cursor is None:
            return 0
        count: int = await self._conn.fetchval(
            f"SELECT count(*) FROM {self._relation} WHERE {quote_ident(cursor)} IS NULL"
        )
        return count

    async def newest_cursor(self, where: str | None = None) -> str | None:
        """The newest cursor value, of the rows that satisfy ``where`` if given."""
        cursor = self._sync.cursor
        if cursor is None:
            return None
        column = quote_ident(cursor)
        # DESC NULLS FIRST is an (ASC NULLS LAST) index read backwards; NULLs are excluded.
        # Qualified, or ORDER BY would take the text cast of the select list.
        newest: str | None = await self._conn.fetchval(
            f"SELECT {column}::text FROM {self._relation}"
            f" WHERE {column} IS NOT NULL AND {where or 'true'}"
            f" ORDER BY src.{column} DESC NULLS FIRST LIMIT 1"
        )
        return newest

    @asynccontextmanager
    async def load_plan(self, rows_per_chunk: int) -> AsyncIterator[LoadPlan]:
        """Plan a parallel load in a snapshot exported from this connection, which lives
        until the block ends: the newest cursor value in it, and key ranges of about
        ``rows_per_chunk`` rows."""
        described = await self._ensure_described()
        key = described.shape.key
        where = self._where(described, Window(by_key=True), _Values(inline=True))
        async with self._conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await self._conn.fetchval("SELECT pg_export_snapshot()")
            bounds = await split_keys(
                self._conn,
                self._relation,
                key,
                [described.cast_types[name] for name in key],
                where,
                rows_per_chunk,
            )
            yield LoadPlan(bounds=bounds, since=await self.newest_cursor(where), snapshot=snapshot)

    async def comparison(self) -> PostgresSide:
        described = await self._ensure_described()
        shape = described.shape
        columns = [
            Compared(c.name, _as_wire(c.name, described.cast_types[c.name], c.pg_type), c.pg_type)
            for c in shape.columns
        ]
        cursor = None
        if shape.cursor is not None:
            # Compared with positions, which are in the cursor's own type's text form.
            cast = described.cast_types[shape.cursor]
            cursor = Compared(shape.cursor, quote_ident(shape.cursor), cast)
        return PostgresSide(self._conn, self._relation, columns, shape.key, cursor=cursor)

    async def describe(self) -> Shape:
        """The sync's columns; fails naming a missing column, or a key column holding NULL."""
        if self._described is None:
            self._described = await self._describe()
        return self._described.shape

    async def _describe(self) -> _Described:
        # A temporary view gives exact types (with typmods) for a table and a query alike.
        transaction = self._conn.transaction()
        await transaction.start()
        try:
            await self._conn.execute(
                f"CREATE TEMPORARY VIEW syncd_describe AS SELECT * FROM {self._relation}"
            )
            table = TableName.parse(self._sync.table).sql if self._sync.table else None
            attributes = await self._conn.fetch(DESCRIBE_SQL, table)
            key = tuple(self._sync.key) if self._sync.key else await self._primary_key()
        except asyncpg.PostgresError as exc:
            raise SourceError(f"cannot read {self._source_label}: {exc}") from None
        finally:
            await transaction.rollback()

        by_name = {row["attname"]: row for row in attributes}
        wanted = [*key, *([self._sync.cursor] if self._sync.cursor else [])]
        wanted += self._sync.columns or list(by_name)
        missing = [name for name in wanted if name not in by_name]
        if missing:
            raise SourceError(
                f"{self._source_label} has no column "
                + ", ".join(repr(m) for m in dict.fromkeys(missing))
                + f" (it has {', '.join(by_name)})"
            )
        chosen = [row for row in attributes if row["attname"] in set(wanted)]
        cursor = self._sync.cursor
        if cursor is not None:
            self._check_cursor_type(by_name[cursor]["wire_type"])
        await self._refuse_null_keys([name for name in key if not by_name[name]["attnotnull"]])
        order = (*([cursor] if cursor else []), *key)
        missing_index = await self._missing_index(order)
        if missing_index is not None:
            log.warning(
                "no_usable_index",
                source=self._source_label,
                reads="the whole window in one pass each run",
                suggestion=missing_index,
            )
        return _Described(
            shape=Shape(
                columns=tuple(
                    Column(
                        name=row["attname"], target_name=row["attname"], pg_type=row["wire_type"]
                    )
                    for row in chosen
                ),
                key=key,
                cursor=cursor,
                missing_index=missing_index,
            ),
            cast_types={row["attname"]: row["source_type"] for row in attributes},
            select_list=", ".join(
                _as_wire(row["attname"], row["source_type"], row["wire_type"]) for row in chosen
            ),
        )

    def _check_cursor_type(self, cursor_type: str) -> None:
        sync = self._sync
        if sync.lookback is not None and not cursor_type.startswith(_TIME_TYPES):
            raise SourceError(
                f"lookback needs a date or timestamp cursor; {sync.cursor!r} is {cursor_type}"
            )
        if sync.lag is None or not clock.is_zone_less(cursor_type):
            return
        if self._cursor_time_zone is None:
            raise ConfigError(
                f"sources.{sync.source}.cursor_time_zone: lag holds back rows newer than"
                f" 'now', and {sync.cursor!r} ({cursor_type}) has no time zone: name the zone"
                " the application writes it in, such as America/New_York"
            )

    async def _refuse_null_keys(self, nullable: list[str]) -> None:
        if not nullable:
            return
        counts = ", ".join(f"count(*) FILTER (WHERE {quote_ident(n)} IS NULL)" for n in nullable)
        either = " OR ".join(f"{quote_ident(n)} IS NULL" for n in nullable)
        found = await self._conn.fetchrow(f"SELECT {counts} FROM {self._relation} WHERE {either}")
        assert found is not None
        refuse_null_keys(self._source_label, dict(zip(nullable, found, strict=True)))

    async def _missing_index(self, order: tuple[str, ...]) -> str | None:
        """The CREATE INDEX a table lacks for its keyset to be read range by range, if any.

        An index leading with the first order column is enough: each batch is then a
        range of it, whatever follows. A query's plan is its author's to judge.
        """
        if self._sync.table is None:
            return None
        table = TableName.parse(self._sync.table).sql
        if await self._conn.fetchval(LEADING_INDEX_SQL, table, order[0]):
            return None
        return f"CREATE INDEX ON {table} ({', '.join(map(quote_ident, order))})"

    @property
    def _source_label(self) -> str:
        table = self._sync.table
        return "the sync's source query" if table is None else f"the source table {table}"

    async def _primary_key(self) -> tuple[str, ...]:
        names = await self._conn.fetch(PRIMARY_KEY_SQL, TableName.parse(self._sync.table or "").sql)
        if not names:
            raise SourceError(
                f"the source table {self._sync.table} has no primary key; name one with 'key'"
            )
        return tuple(row[0] for row in names)

    async def estimate_rows(self, window: Window) -> int | None:
        """A whole table's row count from its statistics, else the planner's guess."""
        described = await self._ensure_described()
        if window == Window() and self._sync.table is not None:
            tuples = await self._conn.fetchval(
                "SELECT reltuples FROM pg_class WHERE oid = $1::regclass",
                TableName.parse(self._sync.table).sql,
            )
            if tuples is not None and tuples >= 0:
                return int(tuples)
        parameters = _Values(inline=False)
        where = self._where(described, window, parameters)
        plan = await self._conn.fetchval(
            f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {self._relation} WHERE {where}", *parameters.args
        )
        return int(json.loads(plan)[0]["Plan"]["Plan Rows"])

    async def read(self, window: Window, limits: Limits) -> AsyncGenerator[Batch, None]:
        described = await self._ensure_described()
        order = self._order_columns(described.shape, window)
        one_pass = described.shape.missing_index is not None and not window.by_key
        while True:
            async with self._conn.transaction(isolation="repeatable_read", readonly=True):
                if window.snapshot is not None:
                    await self._import_snapshot(window.snapshot)
                found = await self._batch_end(described, order, window, limits, one_pass)
                if found is None:
                    return
                end, exhausted = found
                literals = _Values(inline=True)
                rows_sql = (
                    f"SELECT {described.select_list} FROM {self._relation}"
                    f" WHERE {self._where(described, window, literals)}"
                    f" AND {self._compare(described, order, '<=', end, literals)}"
                )
                stream = ByteStream()
                try:
                    # Closed here, before its COPY began, the stream must still end: the
                    # writer may already be waiting for its first chunk.
                    yield CopyBatch(stream=stream, end=end, exhausted=exhausted)
                    status = await self._conn.copy_from_query(
                        rows_sql, output=stream.put, format="binary"
                    )
                except BaseException as exc:
                    stream.fail(exc)
                    raise
                stream.finish(int(status.split()[-1]))
            if exhausted:
                return
            window = window.beyond(end)

    async def _batch_end(
        self,
        described: _Described,
        order: tuple[str, ...],
        window: Window,
        limits: Limits,
        one_pass: bool,
    ) -> tuple[Position, bool] | None:
        """Where the next batch of ``window`` ends, and whether the window ends with it;
        None when the window holds no row."""
        values = _Values(inline=False)
        where = self._where(described, window, values)
        if one_pass:
            last_sql = whole_window_end_sql(self._relation, order, where)
            bound = await self._conn.fetchrow(last_sql, *values.args)
            return None if bound is None else (tuple(bound), True)
        last_sql = batch_last_row_sql(self._relation, order, where, limits.rows)
        last = await self._conn.fetchrow(last_sql, *values.args)
        if last is None:
            return None
        end: Position = tuple(last[: len(order)])
        upto = _Values(inline=False)
        within = self._where(described, window, upto)
        within += " AND " + self._compare(described, order, "<=", end, upto)
        size = await self._conn.fetchval(batch_bytes_sql(self._relation, within), *upto.args)
        if size <= limits.bytes:
            return end, not last["full"]
        # These rows take more than a batch may: cut them where the limit is reached.
        byte_limit = values(limits.bytes, "bigint")
        end_sql = batch_end_sql(self._relation, order, where, byte_limit, limits.rows)
        bound = await self._conn.fetchrow(end_sql, *values.args)
        assert bound is not None
        exhausted = bound["available"] < limits.rows and bound["n"] == bound["available"]
        return tuple(bound[: len(order)]), exhausted

    async def _import_snapshot(self, snapshot: str) -> None:
        """Read this transaction at ``snapshot``, exported by a load's planner; it is gone
        once the planner's transaction ended, and the caller must read at a fresh one."""
        try:
            await self._conn.execute(f"SET TRANSACTION SNAPSHOT {_literal(snapshot)}")
        except asyncpg.InvalidParameterValueError as exc:
            raise SnapshotExpired(f"the load's snapshot is gone: {exc}") from None

    async def _ensure_described(self) -> _Described:
        await self.describe()
        assert self._described is not None
        return self._described

    def _order_columns(self, shape: Shape, window: Window) -> tuple[str, ...]:
        cursor = [] if shape.cursor is None or window.by_key else [shape.cursor]
        return (*cursor, *shape.key)

    def _where(self, described: _Described, window: Window, values: _Values) -> str:
        shape = described.shape
        order = self._order_columns(shape, window)
        conditions: list[str] = []
        if shape.cursor is not None and window.null_cursor:
            conditions.append(f"{quote_ident(shape.cursor)} IS NULL")
        elif shape.cursor is not None:
            cursor = quote_ident(shape.cursor)
            # A NULL cursor cannot be ordered against a position: such rows have a window
            # of their own.
            conditions.append(f"{cursor} IS NOT NULL")
            if self._sync.lag is not None:
                now = "now()"
                if clock.is_zone_less(shape.column(shape.cursor).pg_type):
                    now = f"(now() AT TIME ZONE {values(self._cursor_time_zone, 'text')})"
                conditions.append(f"{cursor} < {now} - {values(self._sync.lag, 'interval')}")
        if window.cursor_from is not None and shape.cursor is not None:
            cast = described.cast_types[shape.cursor]
            since = values(window.cursor_from, f"text::{cast}")
            if window.lookback is not None:
                since += f" - {values(window.lookback, 'interval')}"
            conditions.append(f"{quote_ident(shape.cursor)} >= {since}")
        elif window.after is not None:
            conditions.append(self._compare(described, order, ">", window.after, values))
        if window.until is not None:
            conditions.append(self._compare(described, order, "<=", window.until, values))
        return " AND ".join(conditions) or "true"

    @staticmethod
    def _compare(
        described: _Described,
        order: tuple[str, ...],
        operator: str,
        position: Position,
        values: _Values,
    ) -> str:
        """``(columns) OP (position)`` as a row comparison, with the leading column's plain
        range beside it, which the planner can estimate and start an index scan from."""
        if len(position) != len(order):
            raise SourceError(
                f"the saved position has {len(position)} values but the sync orders by"
                f" {len(order)} columns; the key or cursor changed: reset the sync"
            )
        binds = [
            values(text, f"text::{described.cast_types[name]}")
            for text, name in zip(position, order, strict=True)
        ]
        columns = [quote_ident(name) for name in order]
        if len(order) == 1:
            return f"{columns[0]} {operator} {binds[0]}"
        leading = f"{columns[0]} {operator[0]}= {binds[0]}"
        return f"{leading} AND ROW({', '.join(columns)}) {operator} ROW({', '.join(binds)})"


def _as_wire(name: str, source_type: str, wire_type: str) -> str:
    """A column as it travels: cast to a type every PostgreSQL has, where it is not one."""
    return quote_ident(name) + ("" if wire_type == source_type else f"::{wire_type}")


class _Values:
    """The values a statement compares with: parameters ($1, $2…), or quoted literals in
    its text. A COPY takes literals: given parameters, asyncpg would first prepare the
    statement to learn their types, two more round trips for every batch."""

    def __init__(self, *, inline: bool) -> None:
        self.inline = inline
        self.args: list[Any] = []

    def __call__(self, value: Any, cast: str) -> str:
        if self.inline:
            return f"{_literal(value)}::{cast}"
        self.args.append(value)
        return f"${len(self.args)}::{cast}"


def _literal(value: Any) -> str:
    """A value as a string literal (standard_conforming_strings is on in every session)."""
    if isinstance(value, timedelta):
        value = f"{value // timedelta(microseconds=1)} microseconds"
    elif value is None:
        return "NULL"
    return "'" + str(value).replace("'", "''") + "'"

"""A PostgreSQL source: keyset reads that stream binary COPY bytes without decoding them.

Each batch is read in one read-only snapshot. First its end: the last of its rows
by the (cursor, key) index, and the size of the rows up to it, which says whether
they fit ``batch_bytes`` (rows that do not are cut where the limit is reached).
Then every row up to that end is copied in binary, streamed to the target while
it is read. The end position is known before a single row is decoded, and rows
never pass through Python objects.

Every statement carries plain range predicates on the leading order column
next to its row comparison: the planner has statistics for those, none for
row comparisons, and without them it may scan the whole table for each batch.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg

from syncd import clock, pg
from syncd.config import PostgresSourceConfig, SyncConfig
from syncd.errors import SourceError
from syncd.handoff import ByteStream
from syncd.identifiers import TableName, quote_ident
from syncd.sources import (
    Batch,
    CopyBatch,
    Limits,
    LoadPlan,
    Position,
    Shape,
    SnapshotExpired,
    Window,
)
from syncd.sources.postgres_describe import Described, as_wire, describe_source
from syncd.sources.postgres_plan import split_keys
from syncd.sources.postgres_sql import (
    batch_bytes_sql,
    batch_end_sql,
    batch_last_row_sql,
    whole_window_end_sql,
)
from syncd.verify.postgres import Compared, PostgresSide


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
        self._described: Described | None = None

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
                await self._counted_rows(),
            )
            yield LoadPlan(bounds=bounds, since=await self.newest_cursor(where), snapshot=snapshot)

    async def comparison(self) -> PostgresSide:
        described = await self._ensure_described()
        shape = described.shape
        columns = [
            Compared(c.name, as_wire(c.name, described.cast_types[c.name], c.pg_type), c.pg_type)
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
            self._described = await describe_source(
                self._conn, self._sync, self._relation, self._cursor_time_zone
            )
        return self._described.shape

    async def estimate_rows(self, window: Window) -> int | None:
        """A whole table's row count from its statistics, else the planner's guess."""
        described = await self._ensure_described()
        if window == Window() and (counted := await self._counted_rows()) is not None:
            return counted
        parameters = _Values(inline=False)
        where = self._where(described, window, parameters)
        plan = await self._conn.fetchval(
            f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {self._relation} WHERE {where}", *parameters.args
        )
        return int(json.loads(plan)[0]["Plan"]["Plan Rows"])

    async def _counted_rows(self) -> int | None:
        """The table's rows as its last VACUUM or ANALYZE counted them; None for a query,
        or a table never counted."""
        if self._sync.table is None:
            return None
        tuples = await self._conn.fetchval(
            "SELECT reltuples FROM pg_class WHERE oid = $1::regclass",
            TableName.parse(self._sync.table).sql,
        )
        return int(tuples) if tuples is not None and tuples >= 0 else None

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
        described: Described,
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

    async def _ensure_described(self) -> Described:
        await self.describe()
        assert self._described is not None
        return self._described

    def _order_columns(self, shape: Shape, window: Window) -> tuple[str, ...]:
        cursor = [] if shape.cursor is None or window.by_key else [shape.cursor]
        return (*cursor, *shape.key)

    def _where(self, described: Described, window: Window, values: _Values) -> str:
        shape = described.shape
        order = self._order_columns(shape, window)
        conditions: list[str] = []
        if shape.cursor is not None and window.null_cursor:
            conditions.append(f"{quote_ident(shape.cursor)} IS NULL")
        elif shape.cursor is not None:
            cursor = quote_ident(shape.cursor)
            # A NULL cursor cannot be ordered against a position: such rows have a window
            # of their own. Where the column cannot hold one, saying so would only cost a
            # look at each row's heap tuple in scans that the index alone can answer.
            if not described.cursor_not_null:
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
        described: Described,
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

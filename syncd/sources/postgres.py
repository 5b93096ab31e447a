"""A PostgreSQL source: keyset reads that move binary COPY bytes without decoding them.

Each batch is two statements in one read-only snapshot. The first finds where
the batch ends by walking only the (cursor, key) columns; the second copies
every row up to that bound in binary. The end position is then known before a
single row is decoded, and rows never pass through Python objects.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from syncd import pg
from syncd.config import PostgresSourceConfig, SyncConfig
from syncd.errors import SourceError
from syncd.identifiers import TableName, quote_ident
from syncd.sources import Batch, Column, CopyBatch, Position, Shape, Window

_TIME_TYPES = ("timestamp", "date")


@asynccontextmanager
async def open_postgres_source(
    config: PostgresSourceConfig, sync: SyncConfig
) -> AsyncIterator[PostgresSource]:
    conn = await pg.connect(config.dsn, config.secret())
    try:
        yield PostgresSource(conn, sync)
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
    """Each column's own source type, for casting positions back from text."""


class PostgresSource:
    def __init__(self, conn: asyncpg.Connection, sync: SyncConfig) -> None:
        self._conn = conn
        self._sync = sync
        self._relation = (
            TableName.parse(sync.table).sql if sync.table is not None else f"({sync.query}) AS src"
        )
        self._described: _Described | None = None

    async def describe(self) -> Shape:
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
            attributes = await self._conn.fetch(_DESCRIBE_SQL)
            key = tuple(self._sync.key) if self._sync.key else await self._primary_key()
        except asyncpg.PostgresError as exc:
            raise SourceError(f"cannot read the source {self._source_label}: {exc}") from None
        finally:
            await transaction.rollback()

        by_name = {row["attname"]: row for row in attributes}
        wanted = [*key, *([self._sync.cursor] if self._sync.cursor else [])]
        wanted += self._sync.columns or list(by_name)
        missing = [name for name in wanted if name not in by_name]
        if missing:
            raise SourceError(
                f"the source {self._source_label} has no column "
                + ", ".join(repr(m) for m in dict.fromkeys(missing))
                + f" (it has {', '.join(by_name)})"
            )
        chosen = set(wanted)
        columns = tuple(
            Column(name=row["attname"], target_name=row["attname"], pg_type=row["target_type"])
            for row in attributes
            if row["attname"] in chosen
        )
        if self._sync.cursor is not None and self._sync.lookback is not None:
            cursor_type = by_name[self._sync.cursor]["target_type"]
            if not cursor_type.startswith(_TIME_TYPES):
                raise SourceError(
                    f"lookback needs a date or timestamp cursor; {self._sync.cursor!r}"
                    f" is {cursor_type}"
                )
        return _Described(
            shape=Shape(columns=columns, key=key, cursor=self._sync.cursor),
            cast_types={row["attname"]: row["source_type"] for row in attributes},
        )

    @property
    def _source_label(self) -> str:
        return self._sync.table or "query"

    async def _primary_key(self) -> tuple[str, ...]:
        names = await self._conn.fetch(
            _PRIMARY_KEY_SQL, TableName.parse(self._sync.table or "").sql
        )
        if not names:
            raise SourceError(
                f"the source table {self._sync.table} has no primary key; name one with 'key'"
            )
        return tuple(row[0] for row in names)

    async def estimate_rows(self, window: Window) -> int | None:
        described = await self._ensure_described()
        where, args = self._where(described, window)
        plan = await self._conn.fetchval(
            f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {self._relation} WHERE {where}", *args
        )
        return int(json.loads(plan)[0]["Plan"]["Plan Rows"])

    async def read(self, window: Window, batch_size: int) -> AsyncIterator[Batch]:
        described = await self._ensure_described()
        order = self._order_columns(described.shape)
        order_sql = ", ".join(quote_ident(c) for c in order)
        select_list = ", ".join(quote_ident(c.name) for c in described.shape.columns)
        while True:
            where, args = self._where(described, window)
            bound_sql = (
                f"SELECT {', '.join(f'{quote_ident(c)}::text' for c in order)} FROM"
                f" (SELECT {order_sql} FROM {self._relation} WHERE {where}"
                f" ORDER BY {order_sql} LIMIT {int(batch_size)}) AS batch"
                f" ORDER BY {', '.join(f'batch.{quote_ident(c)} DESC' for c in order)} LIMIT 1"
            )
            async with self._conn.transaction(isolation="repeatable_read", readonly=True):
                bound = await self._conn.fetchrow(bound_sql, *args)
                if bound is None:
                    return
                end: Position = tuple(bound)
                upper, upper_args = self._compare(described, order, "<=", end, len(args))
                chunks: list[bytes] = []
                status = await self._conn.copy_from_query(
                    f"SELECT {select_list} FROM {self._relation} WHERE {where} AND {upper}",
                    *args,
                    *upper_args,
                    output=_collect(chunks),
                    format="binary",
                )
            rows = int(status.split()[-1])
            yield CopyBatch(data=b"".join(chunks), rows=rows, end=end)
            if rows < batch_size:
                return
            window = Window(after=end, until=window.until)

    async def _ensure_described(self) -> _Described:
        await self.describe()
        assert self._described is not None
        return self._described

    def _order_columns(self, shape: Shape) -> tuple[str, ...]:
        return (*([shape.cursor] if shape.cursor else []), *shape.key)

    def _where(self, described: _Described, window: Window) -> tuple[str, list[Any]]:
        shape = described.shape
        order = self._order_columns(shape)
        conditions: list[str] = []
        args: list[Any] = []
        if shape.cursor is not None:
            # A NULL cursor cannot be ordered against a position; such rows are not read.
            conditions.append(f"{quote_ident(shape.cursor)} IS NOT NULL")
        if window.cursor_from is not None and shape.cursor is not None:
            cast = described.cast_types[shape.cursor]
            args += [window.cursor_from, window.lookback]
            conditions.append(f"{quote_ident(shape.cursor)} >= $1::text::{cast} - $2::interval")
        elif window.after is not None:
            condition, args = self._compare(described, order, ">", window.after, 0)
            conditions.append(condition)
        if window.until is not None:
            condition, until_args = self._compare(described, order, "<=", window.until, len(args))
            conditions.append(condition)
            args += until_args
        return " AND ".join(conditions) or "true", args

    @staticmethod
    def _compare(
        described: _Described,
        order: tuple[str, ...],
        operator: str,
        position: Position,
        offset: int,
    ) -> tuple[str, list[Any]]:
        """``(columns) OP (position)``: a row comparison, so one index range scan serves it."""
        if len(position) != len(order):
            raise SourceError(
                f"the saved position has {len(position)} values but the sync orders by"
                f" {len(order)} columns; the key or cursor changed: reset the sync"
            )
        binds = ", ".join(
            f"${offset + i + 1}::text::{described.cast_types[name]}" for i, name in enumerate(order)
        )
        columns = ", ".join(quote_ident(name) for name in order)
        if len(order) == 1:
            return f"{columns} {operator} {binds}", list(position)
        return f"ROW({columns}) {operator} ROW({binds})", list(position)


def _collect(chunks: list[bytes]) -> Any:
    async def append(chunk: bytes) -> None:
        chunks.append(bytes(chunk))

    return append


_DESCRIBE_SQL = """
SELECT a.attname,
       format_type(a.atttypid, a.atttypmod) AS source_type,
       CASE
           WHEN t.typtype = 'e' THEN 'text'
           WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod)
           ELSE format_type(a.atttypid, a.atttypmod)
       END AS target_type
  FROM pg_attribute a
  JOIN pg_type t ON t.oid = a.atttypid
 WHERE a.attrelid = 'pg_temp.syncd_describe'::regclass
   AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""

_PRIMARY_KEY_SQL = """
SELECT a.attname
  FROM pg_index i
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
 WHERE i.indrelid = $1::regclass AND i.indisprimary
 ORDER BY array_position(i.indkey::smallint[], a.attnum)
"""

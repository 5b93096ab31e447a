"""What a PostgreSQL source's rows are: their columns as they travel, the key and cursor
checked, and whether an index serves the keyset order."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import structlog

from syncd import clock
from syncd.config import SyncConfig
from syncd.errors import ConfigError, SourceError
from syncd.identifiers import TableName, quote_ident
from syncd.sources import Column, Shape, refuse_null_keys
from syncd.sources.postgres_sql import DESCRIBE_SQL, LEADING_INDEX_SQL, PRIMARY_KEY_SQL

log = structlog.get_logger("syncd.sources.postgres")

_TIME_TYPES = ("timestamp", "date")


@dataclass(frozen=True)
class Described:
    shape: Shape
    cast_types: dict[str, str]
    """Each order column's own source type, for casting positions back from text."""
    select_list: str
    """Every column, cast where its source type is one only the source database knows."""
    cursor_not_null: bool = False
    """The table's cursor column is declared NOT NULL."""


async def describe_source(
    conn: asyncpg.Connection, sync: SyncConfig, relation: str, cursor_time_zone: str | None
) -> Described:
    """The sync's columns; fails naming a missing column, or a key column holding NULL."""
    return await _Describer(conn, sync, relation, cursor_time_zone).describe()


class _Describer:
    def __init__(
        self,
        conn: asyncpg.Connection,
        sync: SyncConfig,
        relation: str,
        cursor_time_zone: str | None,
    ) -> None:
        self._conn = conn
        self._sync = sync
        self._relation = relation
        self._cursor_time_zone = cursor_time_zone

    async def describe(self) -> Described:
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
        return Described(
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
            cursor_not_null=cursor is not None and by_name[cursor]["attnotnull"],
            select_list=", ".join(
                as_wire(row["attname"], row["source_type"], row["wire_type"]) for row in chosen
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


def as_wire(name: str, source_type: str, wire_type: str) -> str:
    """A column as it travels: cast to a type every PostgreSQL has, where it is not one."""
    return quote_ident(name) + ("" if wire_type == source_type else f"::{wire_type}")

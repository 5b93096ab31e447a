"""The PostgreSQL target table: created to fit the source, checked before any write.

A batch lands in a temporary staging table by binary COPY, then one
INSERT … ON CONFLICT moves it into the target, converting each column to the
target's own type. A row is rewritten only when its image changes: compared
byte for byte (``*<>``), so that 1.0 and 1.00, -0 and 0, or 'a' and 'A' in a
case-insensitive column count as the changes they are, while a re-read row
that did not change costs no write and no dead tuple, and is counted as unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from syncd.errors import SchemaMismatch, SourceError, SyncdError, TargetError
from syncd.identifiers import TableName, quote_ident
from syncd.retry import is_retryable
from syncd.sources import Batch, Column, CopyBatch, Shape
from syncd.verify.postgres import Compared, PostgresSide

_STAGING = "syncd_staging"
LOCK_TIMEOUT_S = 5.0
"""How long altering the target table may wait for its lock."""
_BEFORE_UPSERT = "syncd_before_upsert"
_TEXT_TYPES = ("text", "text[]")
DELETED_COLUMN = "_syncd_deleted_at"
"""Set by a repair with ``deletes: soft`` on rows the source no longer has."""


class DirectCopyConflict(SyncdError):
    """A row came round again while copying straight into the table: upsert from here on."""


@dataclass(frozen=True)
class _TargetColumn:
    type: str
    """As format_type() writes it."""
    is_string: bool
    """Text-like (text, varchar, char, citext…), or an array of such."""


class TargetTable:
    """One sync's target table, bound to the connection that writes its batches."""

    def __init__(
        self,
        name: TableName,
        shape: Shape,
        type_overrides: dict[str, str] | None = None,
        nulled: list[str] | None = None,
        wait_for_flush: bool = False,
    ) -> None:
        self.name = name
        self.shape = shape
        self._overrides = type_overrides or {}
        self._nulled = nulled or []
        """Target columns the source no longer has: NULL in every row written."""
        # A batch's commit need not wait for its WAL to reach the disk: rows and position
        # commit together, so a server crash can only lose whole recent batches, which
        # the next run reads again. The run's final record is written durably.
        self._commit_setting = "" if wait_for_flush else "SET LOCAL synchronous_commit = off; "
        unknown = set(self._overrides) - {c.name for c in shape.columns}
        if unknown:
            raise SchemaMismatch(
                "'types' names columns the sync does not read: " + ", ".join(sorted(unknown))
            )
        self._column_list = ", ".join(quote_ident(c.target_name) for c in shape.columns)
        self._direct_copy_possible = False
        self._columns: dict[str, _TargetColumn] = {}
        self._upsert = ""
        self._backfill_upsert = ""

    def _upsert_sql(self, *, backfill: bool) -> str:
        """The upsert from staging. A backfill's rows were read in key order, perhaps
        before a run wrote a newer version of the same row: they never replace a row
        whose cursor is newer than theirs."""
        keys = {self.shape.column(k).target_name for k in self.shape.key}
        written = [c.target_name for c in self.shape.columns] + self._nulled
        values = [name for name in written if name not in keys]
        conflict = ", ".join(quote_ident(k) for k in keys)
        converted = [self._converted(c.target_name, c.pg_type) for c in self.shape.columns]
        converted += ["NULL"] * len(self._nulled)
        head = (
            f"INSERT INTO {self.name.sql} AS t ({', '.join(map(quote_ident, written))})"
            f" SELECT {', '.join(converted)} FROM pg_temp.{_STAGING} ON CONFLICT ({conflict})"
        )
        # A row a repair marked deleted that comes back is no longer deleted.
        marked = DELETED_COLUMN in self._columns
        if not values and not marked:
            return head + " DO NOTHING"
        assignments = ", ".join(
            [f"{quote_ident(v)} = EXCLUDED.{quote_ident(v)}" for v in values]
            + ([f"{quote_ident(DELETED_COLUMN)} = NULL"] if marked else [])
        )
        old = ", ".join(f"t.{quote_ident(v)}" for v in values)
        new = ", ".join(f"EXCLUDED.{quote_ident(v)}" for v in values)
        changes = [f"ROW({old})::record *<> ROW({new})::record"] if values else []
        changes += [f"t.{quote_ident(DELETED_COLUMN)} IS NOT NULL"] if marked else []
        condition = f"({' OR '.join(changes)})"
        if backfill and self.shape.cursor is not None:
            cursor = quote_ident(self.shape.column(self.shape.cursor).target_name)
            condition += f" AND t.{cursor} <= EXCLUDED.{cursor}"
        return f"{head} DO UPDATE SET {assignments} WHERE {condition}"

    async def follow(
        self, conn: asyncpg.Connection, add: list[Column], widen: list[Column]
    ) -> None:
        """Add new columns and widen grown ones, in the caller's transaction. A busy table
        fails the run at once, with that reason, rather than queueing every writer behind
        the ALTER's lock; the next run tries again."""
        if not add and not widen:
            return
        changes = [
            f"ADD COLUMN IF NOT EXISTS {quote_ident(c.target_name)}"
            f" {self._overrides.get(c.name, c.pg_type)}"
            for c in add
        ] + [
            f"ALTER COLUMN {quote_ident(c.target_name)} TYPE {c.pg_type}"
            for c in widen
            if c.name not in self._overrides  # a type of the config's own stays
        ]
        if changes:
            await self._alter(conn, ", ".join(changes), "; the next run tries again")

    async def _alter(self, conn: asyncpg.Connection, changes: str, hint: str = "") -> None:
        """ALTER the table in the caller's transaction, failing at once, with that reason,
        if its lock is not had within LOCK_TIMEOUT_S."""
        await conn.execute(f"SET LOCAL lock_timeout = '{int(LOCK_TIMEOUT_S * 1000)}ms'")
        try:
            await conn.execute(f"ALTER TABLE {self.name.sql} {changes}")
        except asyncpg.LockNotAvailableError:
            raise TargetError(
                f"the target table {self.name} is busy: it could not be altered within"
                f" {LOCK_TIMEOUT_S:g} s{hint}"
            ) from None

    def _converted(self, name: str, staged_type: str) -> str:
        """A staging column as the target column's type.

        Values the source sent as text (enums, composites, extension types) become the
        target's type through its input function. Other types convert as an INSERT
        converts them, which refuses a value that does not fit rather than cutting it
        short, as an explicit cast to varchar(n) or bit(n) would.
        """
        column = self._columns[name]
        if staged_type in _TEXT_TYPES and column.type != staged_type and not column.is_string:
            return f"{quote_ident(name)}::{column.type}"
        return quote_ident(name)

    async def prepare(self, conn: asyncpg.Connection) -> None:
        """Create the table if missing, else check it fits; then set up staging."""
        existing = await self._existing_columns(conn)
        if existing is None:
            await self._create(conn)
            existing = await self._existing_columns(conn)
            assert existing is not None
        missing = [c.target_name for c in self.shape.columns if c.target_name not in existing]
        if missing:
            raise SchemaMismatch(
                f"the target table {self.name} has no column "
                + ", ".join(repr(m) for m in missing)
                + "; add it or drop the table so syncd can create it"
            )
        self._columns = existing
        self._upsert = self._upsert_sql(backfill=False)
        self._backfill_upsert = self._upsert_sql(backfill=True)
        # Staging holds the values as the source sends them, in built-in types only, so
        # it never names a type that exists in the source database alone.
        staging_columns = ", ".join(
            f"{quote_ident(c.target_name)} {c.pg_type}" for c in self.shape.columns
        )
        await conn.execute(f"DROP TABLE IF EXISTS pg_temp.{_STAGING}")
        await conn.execute(
            f"CREATE TEMPORARY TABLE {_STAGING} ({staging_columns}) ON COMMIT DELETE ROWS"
        )
        await self._check_upsert_compiles(conn)
        self._direct_copy_possible = all(
            existing[c.target_name].type == c.pg_type for c in self.shape.columns
        )

    async def comparison(self, conn: asyncpg.Connection) -> PostgresSide:
        """The target's side of a verify: its rows read as the source's wire types."""
        existing = await self._existing_columns(conn)
        if existing is None:
            raise TargetError(f"the target table {self.name} does not exist yet: run the sync")
        missing = [c.target_name for c in self.shape.columns if c.target_name not in existing]
        if missing:
            raise SchemaMismatch(
                f"the target table {self.name} has no column " + ", ".join(map(repr, missing))
            )
        columns = [
            Compared(
                c.name,
                quote_ident(c.target_name)
                + ("" if existing[c.target_name].type == c.pg_type else f"::{c.pg_type}"),
                c.pg_type,
            )
            for c in self.shape.columns
        ]
        where = f"{quote_ident(DELETED_COLUMN)} IS NULL" if DELETED_COLUMN in existing else "true"
        return PostgresSide(conn, self.name.sql, columns, self.shape.key, where=where)

    async def add_deleted_column(self, conn: asyncpg.Connection) -> None:
        """Give the table the column that marks rows deleted, if it lacks it."""
        async with conn.transaction():
            await self._alter(
                conn, f"ADD COLUMN IF NOT EXISTS {quote_ident(DELETED_COLUMN)} timestamptz"
            )

    async def _existing_columns(self, conn: asyncpg.Connection) -> dict[str, _TargetColumn] | None:
        relation = await conn.fetchval("SELECT to_regclass($1)::oid", self.name.sql)
        if relation is None:
            return None
        rows = await conn.fetch(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod),"
            " coalesce(element.typcategory, t.typcategory) = 'S'"
            " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            " LEFT JOIN pg_type element ON element.oid = t.typelem AND t.typcategory = 'A'"
            " WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
            relation,
        )
        return {row[0]: _TargetColumn(row[1], row[2]) for row in rows}

    async def _create(self, conn: asyncpg.Connection) -> None:
        definitions = [
            f"{quote_ident(c.target_name)} {self._overrides.get(c.name, c.pg_type)}"
            for c in self.shape.columns
        ]
        keys = ", ".join(quote_ident(self.shape.column(k).target_name) for k in self.shape.key)
        try:
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.name.sql}"
                f" ({', '.join(definitions)}, PRIMARY KEY ({keys}))"
                # Room on each page lets an upsert update rows in place (HOT).
                " WITH (fillfactor = 90)"
            )
        except asyncpg.PostgresError as exc:
            raise TargetError(f"cannot create the target table {self.name}: {exc}") from None

    async def _check_upsert_compiles(self, conn: asyncpg.Connection) -> None:
        """Let PostgreSQL judge type compatibility and key uniqueness, writing nothing."""
        try:
            await conn.execute(f"EXPLAIN {self._upsert}")
        except asyncpg.InvalidColumnReferenceError:
            keys = ", ".join(self.shape.key)
            raise SchemaMismatch(
                f"the target table {self.name} needs a primary key or unique index on ({keys})"
            ) from None
        except asyncpg.PostgresError as exc:
            if is_retryable(exc):
                raise  # a lost connection says nothing about the table: the run retries
            raise SchemaMismatch(
                f"the target table {self.name} does not fit the source: {exc}"
            ) from None

    async def exists(self, conn: asyncpg.Connection) -> bool:
        return await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", self.name.sql)  # type: ignore[no-any-return]

    async def is_empty(self, conn: asyncpg.Connection) -> bool:
        return not await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {self.name.sql})")

    async def write(
        self, conn: asyncpg.Connection, batch: Batch, *, direct: bool, backfill: bool = False
    ) -> tuple[int, int]:
        """Write ``batch`` inside the caller's transaction; the rows read and the rows
        inserted or changed.

        With ``direct``, rows are copied straight into the table, which is only right
        while none of them is there yet: a row that is raises DirectCopyConflict, and the
        caller rolls the batch back and writes it again by upsert.
        """
        if direct and self._direct_copy_possible:
            if self._commit_setting:
                await conn.execute(self._commit_setting)
            try:
                rows = await self._copy(conn, batch, self.name.name, self.name.schema)
            except asyncpg.UniqueViolationError:
                raise DirectCopyConflict() from None
            return rows, rows
        rows = await self._copy(conn, batch, _STAGING, None)
        try:
            # One round trip: the savepoint keeps the staged rows if the upsert fails.
            upsert = self._backfill_upsert if backfill else self._upsert
            status = await conn.execute(
                f"{self._commit_setting}SAVEPOINT {_BEFORE_UPSERT}; {upsert}"
            )
        except asyncpg.CardinalityViolationError:
            keys = ", ".join(self.shape.key)
            raise SourceError(
                f"the key ({keys}) is not unique in the source: one batch holds a key twice"
            ) from None
        except asyncpg.DataError as exc:
            await conn.execute(f"ROLLBACK TO SAVEPOINT {_BEFORE_UPSERT}")
            culprit = await self._find_rejected_value(conn, rows)
            raise TargetError(
                f"the target table {self.name} refused a batch"
                + (f" at {culprit}" if culprit else "")
                + f": {exc}"
            ) from None
        return rows, int(status.split()[-1])

    async def _copy(
        self, conn: asyncpg.Connection, batch: Batch, table: str, schema: str | None
    ) -> int:
        columns = [c.target_name for c in self.shape.columns]
        if isinstance(batch, CopyBatch):
            status = await conn.copy_to_table(
                table, schema_name=schema, source=batch.stream, columns=columns, format="binary"
            )
            copied = int(status.split()[-1])
            if copied != batch.stream.rows:
                raise TargetError(
                    f"the target took {copied} rows of a batch of {batch.stream.rows}"
                )
            return copied
        status = await conn.copy_records_to_table(
            table, schema_name=schema, records=batch.records, columns=columns
        )
        return int(status.split()[-1])

    async def _find_rejected_value(self, conn: asyncpg.Connection, rows: int) -> str | None:
        """Name the row and column of the staged batch the target refused, so people can
        act on it. PostgreSQL's own message (say, "smallint out of range") names neither.

        Each column that converts on its way into the table is tried in turn, and the
        first failing one is bisected down to its row, each try in a savepoint of its own.
        """
        key_columns = [quote_ident(self.shape.column(k).target_name) for k in self.shape.key]
        keys = ", ".join(key_columns)
        keys_ascending = ", ".join(f"{k} ASC NULLS LAST" for k in key_columns)
        numbered = (
            f"SELECT *, row_number() OVER (ORDER BY {keys_ascending}) AS syncd_row"
            f" FROM pg_temp.{_STAGING}"
        )
        for column in self.shape.columns:
            target_type = self._columns[column.target_name].type
            if target_type == column.pg_type:
                continue
            cast = f"{quote_ident(column.target_name)}::{target_type}"
            if not await _fails(conn, f"SELECT {cast} FROM ({numbered}) AS s"):
                continue
            low, high = 1, rows  # the failing row is in [low, high]
            while low < high:
                middle = (low + high) // 2
                within = f"syncd_row BETWEEN {low} AND {middle}"
                if await _fails(conn, f"SELECT {cast} FROM ({numbered}) AS s WHERE {within}"):
                    high = middle
                else:
                    low = middle + 1
            key = await conn.fetchrow(
                f"SELECT {keys} FROM ({numbered}) AS s WHERE syncd_row = {low}"
            )
            assert key is not None
            shown = ", ".join(f"{name}={value!r}" for name, value in key.items())
            return f"column {column.target_name!r} ({target_type}) of the row {shown}"
        return None


async def _fails(conn: asyncpg.Connection, query: str) -> bool:
    try:
        async with conn.transaction():
            await conn.execute(query)
    except asyncpg.DataError:
        return True
    return False

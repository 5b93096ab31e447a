"""Verify's questions asked of an Oracle source, through the source's own session.

The statements are ``syncd.verify.oracle``'s; each goes through the source's query,
so it is bounded as every call of the session is, binds its values with their
columns' own types, and fails as the source's reads fail. The session compares and
sorts text in binary order (NLS_COMP and NLS_SORT are BINARY), PostgreSQL's "C".

A key travels between the two databases as the target's text of it: the target's
side reads its keys as ``(key)::text``, so the Oracle side writes each key value as
PostgreSQL would write it, and reads the target's bounds back into typed binds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import oracledb

from syncd.errors import SourceError
from syncd.sources import Shape
from syncd.sources.oracle_sql import Binds, Relation
from syncd.sources.oracle_types import RowReader, bind_value
from syncd.verify import oracle
from syncd.verify.canonical import Kind, kind_of
from syncd.verify.sides import Checksum, Key, Reread, Segment

_INCOMPARABLE = {
    "BLOB": "a BLOB's bytes cannot be written as hex inside Oracle's SQL",
    "JSON": "PostgreSQL rewrites a jsonb document's text",
}
_LOBS = ("CLOB", "NCLOB")


class Query(Protocol):
    """The source's way of running one statement and fetching all its rows."""

    async def __call__(
        self,
        sql: str,
        values: dict[str, Any] | None = None,
        *,
        types: dict[str, oracledb.DbType] | None = None,
        reading: str,
    ) -> list[Any]: ...


@dataclass(frozen=True)
class OracleTable:
    """What verify reads of a described Oracle source."""

    shape: Shape
    data_types: dict[str, str]
    """Each column's Oracle type, as ALL_TAB_COLUMNS names it."""
    relation: Relation
    """As a run reads it: its select list and, first in its order, the cursor."""
    keys: Relation
    """The key columns alone, in key order."""
    key_binds: tuple[oracledb.DbType, ...]
    cursor_bind: oracledb.DbType | None
    reader: RowReader
    """Turns the rows ``relation.select`` fetches into records the target writes."""


class OracleSide:
    """Verify's questions to an Oracle source about the rows of one sync."""

    def __init__(self, query: Query, table: OracleTable, reading: str) -> None:
        self._query = query
        self._table = table
        self._reading = reading
        shape = table.shape
        refused = [
            f"{c.name} ({table.data_types[c.name]}): {_INCOMPARABLE[table.data_types[c.name]]}"
            for c in shape.columns
            if table.data_types[c.name] in _INCOMPARABLE
        ]
        refused += [
            f"{c.name} ({c.pg_type}): Oracle has no canonical text for it yet"
            for c in shape.columns
            if kind_of(c.pg_type) is Kind.INTERVAL
        ]
        refused += [
            f"key {name} ({table.data_types[name]}): the driver fetches it without its offset"
            for name in shape.key
            if kind_of(shape.column(name).pg_type) is Kind.TIMESTAMPTZ
        ]
        if refused:
            raise SourceError(
                f"syncd verify cannot compare {reading}: {'; '.join(refused)};"
                " leave such columns out with 'columns' to verify the rest"
            )
        self._key_types = [shape.column(name).pg_type for name in shape.key]
        select = dict(zip((c.name for c in shape.columns), table.relation.select, strict=True))
        hashed = [*shape.key, *(c.name for c in shape.columns if c.name not in shape.key)]
        self._columns = [
            oracle.OracleColumn(
                select[name],
                kind_of(shape.column(name).pg_type),
                lob=table.data_types[name] in _LOBS,
            )
            for name in hashed
        ]

    async def _fetch(self, sql: str, binds: Binds) -> list[Any]:
        return await self._query(
            sql,
            {name: value for name, (value, _) in binds.items()},
            types={name: bind for name, (_, bind) in binds.items()},
            reading=self._reading,
        )

    def _bind(self, prefix: str, key: Key) -> Binds:
        """``key``, the target's text of it, as binds ``prefix``1, ``prefix``2…"""
        return {
            f"{prefix}{i}": (_bind_value(text, pg_type, bind), bind)
            for i, (text, pg_type, bind) in enumerate(
                zip(key, self._key_types, self._table.key_binds, strict=True), 1
            )
        }

    def _within(self, segment: Segment) -> Binds:
        binds: Binds = {}
        if segment.low is not None:
            binds |= self._bind("low", segment.low)
        if segment.high is not None:
            binds |= self._bind("high", segment.high)
        return binds

    def _key(self, values: Sequence[Any]) -> Key:
        return tuple(_key_text(v, t) for v, t in zip(values, self._key_types, strict=True))

    def _among(self, keys: Sequence[Key]) -> Binds:
        binds: Binds = {}
        for i, key in enumerate(keys):
            binds |= self._bind(f"w{i}_", key)
        return binds

    async def checksums(self, segment: Segment, bounds: Sequence[Key]) -> list[Checksum]:
        binds = self._within(segment)
        for i, bound in enumerate(bounds):
            binds |= self._bind(f"b{i}_", bound)
        sql = oracle.checksums_sql(
            self._table.keys,
            self._columns,
            len(bounds),
            low=segment.low is not None,
            high=segment.high is not None,
        )
        rows = await self._fetch(sql, binds)
        found = {int(part): Checksum(int(count), int(total)) for part, count, total in rows}
        return [found.get(i, Checksum(0, 0)) for i in range(len(bounds) + 1)]

    async def bounds(self, segment: Segment, parts: int) -> list[Key]:
        sql = oracle.bounds_sql(
            self._table.keys, parts, low=segment.low is not None, high=segment.high is not None
        )
        rows = await self._fetch(sql, self._within(segment))
        return [self._key(row) for row in rows[:-1]]

    async def hashes(self, segment: Segment) -> dict[Key, int]:
        sql = oracle.hashes_sql(
            self._table.keys,
            self._columns,
            low=segment.low is not None,
            high=segment.high is not None,
        )
        rows = await self._fetch(sql, self._within(segment))
        return {self._key(row[:-1]): int(row[-1]) for row in rows}

    async def reread(self, keys: Sequence[Key], position: str | None) -> dict[Key, Reread]:
        if not keys:
            return {}
        binds = self._among(keys)
        cursor_bind = self._table.cursor_bind
        if position is not None and cursor_bind is not None:
            binds["position"] = (bind_value(position, cursor_bind), cursor_bind)
        pending = oracle.pending_sql(self._table.relation, "position" in binds)
        sql = oracle.reread_sql(self._table.keys, self._columns, len(keys), pending)
        rows = await self._fetch(sql, binds)
        return {self._key(row[:-2]): Reread(int(row[-2]), row[-1] == 1) for row in rows}

    async def rows(self, keys: Sequence[Key]) -> list[tuple[Any, ...]]:
        if not keys:
            return []
        sql = oracle.rows_sql(self._table.relation, self._table.keys, len(keys))
        records, _ = self._table.reader.records(await self._fetch(sql, self._among(keys)))
        return records

    async def null_keys(self) -> int:
        ((count,),) = await self._fetch(oracle.null_keys_sql(self._table.keys), {})
        return int(count)

    async def remove(self, keys: Sequence[Key], marker: str | None) -> int:
        raise SourceError("verify deletes from the target only, never from an Oracle source")


def _key_text(value: Any, pg_type: str) -> str:
    """A key value as PostgreSQL writes it as ``pg_type``: the target's text of it."""
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, datetime):
        # PostgreSQL leaves out a fraction's trailing zeros, and a zero fraction.
        return value.isoformat(sep=" ", timespec="microseconds").rstrip("0").rstrip(".")
    if isinstance(value, Decimal) and pg_type.startswith("numeric("):
        scale = int(pg_type.removesuffix(")").split(",")[1])
        return format(value.quantize(Decimal(1).scaleb(-scale)), "f")
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _bind_value(text: str, pg_type: str, bind: oracledb.DbType) -> Any:
    """The value to bind for a key column, given the target's text of it."""
    if pg_type == "bytea":
        return bytes.fromhex(text.removeprefix("\\x"))
    return bind_value(text, bind)

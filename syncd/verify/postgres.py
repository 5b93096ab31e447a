"""Verify's questions in PostgreSQL's SQL, for a source and for the target alike.

Each column's canonical string and the row hash follow ``canonical`` to the byte.
Keys are compared as the sync's wire types, text in binary ("C") order, so that a
segment holds the same keys in both databases, whatever their collations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from syncd.identifiers import quote_ident
from syncd.verify.canonical import HASH_HEX_DIGITS, NULL_MARKER, SEPARATOR, Kind, kind_of
from syncd.verify.sides import Checksum, Key, Reread, Segment

_TIME_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US'
_STRING_TYPES = ("text", "character varying", "character")


def canonical_sql(value: str, kind: Kind) -> str:
    """The SQL for ``value``'s canonical string (NULL for NULL), as canonical_value."""
    if kind is Kind.NUMBER:
        return f"trim_scale(({value})::numeric)::text"
    if kind is Kind.FLOAT:
        # float8 to numeric keeps 15 significant digits (DBL_DIG), as FLOAT_DIGITS says.
        return f"trim_scale(({value})::float8::numeric)::text"
    if kind in (Kind.TIMESTAMPTZ, Kind.TIMESTAMP, Kind.DATE):
        wall = f"({value}) AT TIME ZONE 'UTC'" if kind is Kind.TIMESTAMPTZ else f"({value})"
        pattern = "YYYY-MM-DD" if kind is Kind.DATE else _TIME_FORMAT
        return (
            f"CASE WHEN isfinite({value}) THEN to_char({wall}, '{pattern}')"
            f" ELSE ({value})::text END"
        )
    if kind is Kind.TIME:
        return f"to_char(({value})::interval, 'HH24:MI:SS.US')"
    if kind is Kind.BYTES:
        return f"encode({value}, 'hex')"
    if kind is Kind.BOOLEAN:
        return f"CASE WHEN {value} THEN 'true' WHEN NOT {value} THEN 'false' END"
    if kind is Kind.CHAR:
        return f"rtrim(({value})::text, ' ')"
    if kind is Kind.INTERVAL:
        # date_trunc keeps the months and days of an interval: what is left is its time.
        return (
            f"(extract(year FROM {value}) * 12 + extract(month FROM {value}))::bigint::text"
            f" || ' ' || extract(day FROM {value})::bigint::text || ' ' ||"
            f" (extract(epoch FROM ({value}) - date_trunc('day', {value})) * 1000000)"
            "::bigint::text"
        )
    return f"({value})::text"


def row_hash_sql(columns: Sequence[tuple[str, Kind]]) -> str:
    """The row's 60-bit hash as a bigint: md5 of the column hashes joined, as row_hash."""
    parts = [
        f"coalesce(md5({canonical_sql(value, kind)}), '{NULL_MARKER}')" for value, kind in columns
    ]
    joined = f" || chr({ord(SEPARATOR)}) || ".join(parts)
    return f"('x' || left(md5({joined}), {HASH_HEX_DIGITS}))::bit({HASH_HEX_DIGITS * 4})::bigint"


@dataclass(frozen=True)
class Compared:
    """A column as one side reads it."""

    name: str
    """The column's name in the source, which the sync's key names."""
    value: str
    """Its SQL, already of the sync's wire type ``pg_type``."""
    pg_type: str


class PostgresSide:
    """Verify's questions to one PostgreSQL database, about the rows of ``relation``."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        relation: str,
        columns: Sequence[Compared],
        key: Sequence[str],
        *,
        where: str = "true",
        cursor: Compared | None = None,
    ) -> None:
        self._conn = conn
        self._relation = relation
        self._where = where
        """Which rows count: all, or on the target those not marked deleted."""
        self._columns = list(columns)
        """In the sync's order, as ``rows`` returns them."""
        by_name = {c.name: c for c in columns}
        key_columns = [by_name[name] for name in key]
        self._key_values = [c.value for c in key_columns]
        self._keys = [_ordered(c) for c in key_columns]
        self._key_types = [c.pg_type for c in key_columns]
        hashed = key_columns + [c for c in columns if c.name not in key]
        self._hash = row_hash_sql([(c.value, kind_of(c.pg_type)) for c in hashed])
        self._cursor = cursor

    def _bind(self, args: list[Any], key: Key) -> list[str]:
        binds = []
        for text, pg_type in zip(key, self._key_types, strict=True):
            args.append(text)
            binds.append(_ordered(Compared("", f"${len(args)}::text::{pg_type}", pg_type)))
        return binds

    def _compare(self, operator: str, key: Key, args: list[Any]) -> str:
        """The keys ``operator`` ``key``, with a plain range on the first key column that
        the planner can start an index scan from."""
        binds = self._bind(args, key)
        if len(binds) == 1:
            return f"{self._keys[0]} {operator} {binds[0]}"
        return (
            f"{self._keys[0]} {operator[0]}= {binds[0]}"
            f" AND ROW({', '.join(self._keys)}) {operator} ROW({', '.join(binds)})"
        )

    def _within(self, segment: Segment, args: list[Any]) -> str:
        conditions = [self._where]
        if segment.low is not None:
            conditions.append(self._compare(">", segment.low, args))
        if segment.high is not None:
            conditions.append(self._compare("<=", segment.high, args))
        return " AND ".join(conditions)

    def _part(self, bounds: Sequence[list[str]], first: int, last: int) -> str:
        """Which of the parts ``first``..``last`` a row falls in, as a binary search."""
        if first == last:
            return str(first)
        middle = (first + last) // 2
        keys, bound = self._keys, bounds[middle]
        at_most = (
            f"{keys[0]} <= {bound[0]}"
            if len(keys) == 1
            else f"ROW({', '.join(keys)}) <= ROW({', '.join(bound)})"
        )
        return (
            f"CASE WHEN {at_most} THEN {self._part(bounds, first, middle)}"
            f" ELSE {self._part(bounds, middle + 1, last)} END"
        )

    async def checksums(self, segment: Segment, bounds: Sequence[Key]) -> list[Checksum]:
        args: list[Any] = []
        within = self._within(segment, args)
        bound_binds = [self._bind(args, bound) for bound in bounds]
        part = self._part(bound_binds, 0, len(bounds))
        rows = await self._conn.fetch(
            f"SELECT {part} AS part, count(*), sum({self._hash})"
            f" FROM {self._relation} WHERE {within} GROUP BY 1",
            *args,
        )
        found = {row[0]: Checksum(row[1], int(row[2])) for row in rows}
        return [found.get(i, Checksum(0, 0)) for i in range(len(bounds) + 1)]

    async def bounds(self, segment: Segment, parts: int) -> list[Key]:
        args: list[Any] = []
        within = self._within(segment, args)
        keys = self._keys
        named = [f"k{i}" for i in range(len(keys))]
        ascending = ", ".join(f"{k} ASC NULLS LAST" for k in keys)
        descending = ", ".join(f"{k} DESC NULLS FIRST" for k in named)
        rows = await self._conn.fetch(
            f"SELECT DISTINCT ON (part) {', '.join(f'{k}::text' for k in named)}"
            f" FROM (SELECT {', '.join(f'{k} AS {n}' for k, n in zip(keys, named, strict=True))},"
            f" ntile({int(parts)}) OVER (ORDER BY {ascending}) AS part"
            f" FROM {self._relation} WHERE {within}) AS tiles"
            f" ORDER BY part, {descending}",
            *args,
        )
        return [tuple(row) for row in rows[:-1]]

    async def hashes(self, segment: Segment) -> dict[Key, int]:
        args: list[Any] = []
        within = self._within(segment, args)
        rows = await self._conn.fetch(
            f"SELECT {', '.join(f'({k})::text' for k in self._keys)}, {self._hash}"
            f" FROM {self._relation} WHERE {within}"
            f" ORDER BY {', '.join(f'{k} ASC NULLS LAST' for k in self._keys)}",
            *args,
        )
        return {tuple(row[:-1]): row[-1] for row in rows}

    def _among(self, keys: Sequence[Key], args: list[Any]) -> str:
        """The rows whose key is one of ``keys``, passed as one text array per column."""
        columns = [f"c{i}" for i in range(len(self._keys))]
        unnested = []
        for i in range(len(self._keys)):
            args.append([key[i] for key in keys])
            unnested.append(f"${len(args)}::text[]")
        casts = ", ".join(
            f"{c}::{pg_type}" for c, pg_type in zip(columns, self._key_types, strict=True)
        )
        return (
            f"{self._where} AND ROW({', '.join(self._key_values)}) IN (SELECT {casts}"
            f" FROM unnest({', '.join(unnested)}) AS wanted({', '.join(columns)}))"
        )

    async def reread(self, keys: Sequence[Key], position: str | None) -> dict[Key, Reread]:
        args: list[Any] = []
        among = self._among(keys, args)
        pending = "false"
        if self._cursor is not None:
            # Never committed: every row is still to be copied. A NULL cursor is no later
            # than any position; such rows are read by key, not by cursor.
            pending = "true"
            if position is not None:
                args.append(position)
                cursor = self._cursor
                pending = f"coalesce({cursor.value} > ${len(args)}::text::{cursor.pg_type}, false)"
        rows = await self._conn.fetch(
            f"SELECT {', '.join(f'({k})::text' for k in self._keys)}, {self._hash}, {pending}"
            f" FROM {self._relation} WHERE {among}",
            *args,
        )
        return {tuple(row[:-2]): Reread(row[-2], row[-1]) for row in rows}

    async def rows(self, keys: Sequence[Key]) -> list[tuple[Any, ...]]:
        args: list[Any] = []
        among = self._among(keys, args)
        rows = await self._conn.fetch(
            f"SELECT {', '.join(c.value for c in self._columns)}"
            f" FROM {self._relation} WHERE {among}",
            *args,
        )
        return [tuple(row) for row in rows]

    async def null_keys(self) -> int:
        """How many rows have a NULL in a key column: no segment holds them."""
        either = " OR ".join(f"{value} IS NULL" for value in self._key_values)
        count: int = await self._conn.fetchval(
            f"SELECT count(*) FROM {self._relation} WHERE {self._where} AND ({either})"
        )
        return count

    async def remove(self, keys: Sequence[Key], marker: str | None) -> int:
        """Delete the rows with these keys, or with ``marker``, set that column to now
        instead; how many rows that was. Call within the caller's transaction."""
        args: list[Any] = []
        among = self._among(keys, args)
        if marker is None:
            status = await self._conn.execute(f"DELETE FROM {self._relation} WHERE {among}", *args)
        else:
            status = await self._conn.execute(
                f"UPDATE {self._relation} SET {quote_ident(marker)} = clock_timestamp()"
                f" WHERE {among}",
                *args,
            )
        return int(status.split()[-1])


def _ordered(column: Compared) -> str:
    """A key column as it is ordered: text in binary order, whatever the collation."""
    if column.pg_type.startswith(_STRING_TYPES):
        return f'({column.value}) COLLATE "C"'
    return column.value

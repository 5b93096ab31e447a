"""Splitting a PostgreSQL source's keys into ranges for a parallel load.

A single integer key that fills its range densely is cut arithmetically between
its minimum and maximum, a look at each end of its index. Any other key (text,
composite, or an integer with gaps so wide that equal spans would hold very
unequal numbers of rows) is cut at quantiles: NTILE over the key order, one sort.
Every statement runs in the load's snapshot, so the ranges describe exactly the
rows the load reads.
"""

from __future__ import annotations

import math

import asyncpg

from syncd.identifiers import quote_ident
from syncd.sources import Position, even_spans

_INTEGER_TYPES = ("smallint", "integer", "bigint")


async def split_keys(
    conn: asyncpg.Connection,
    relation: str,
    key: tuple[str, ...],
    key_types: list[str],
    where: str,
    rows_per_chunk: int,
    rows_estimate: int | None = None,
) -> list[Position]:
    """The last key of each range but the last, ascending, for ranges of about
    ``rows_per_chunk`` rows of ``relation`` that satisfy ``where``.

    A positive ``rows_estimate`` (the table's statistics) stands in for counting the
    rows, a scan of every key while every worker waits for the plan: ranges only need
    to be about equal, and statistics a little stale only make them a little larger
    or smaller than asked.
    """
    rows = rows_estimate if rows_estimate else None
    if len(key) == 1 and key_types[0] in _INTEGER_TYPES:
        column = quote_ident(key[0])
        count = "NULL" if rows else "count(*)"
        row = await conn.fetchrow(
            f"SELECT min({column}), max({column}), {count} FROM {relation} WHERE {where}"
        )
        assert row is not None
        low, high = row[0], row[1]
        rows = rows or row[2]
        if low is None or not rows:
            return []
        spans = even_spans(low, high, rows, math.ceil(rows / rows_per_chunk))
        if spans is not None:
            return spans
    elif not rows:
        rows = await conn.fetchval(f"SELECT count(*) FROM {relation} WHERE {where}")
    chunks = math.ceil(rows / rows_per_chunk)
    if chunks <= 1:
        return []
    return await _quantiles(conn, relation, key, where, chunks)


async def _quantiles(
    conn: asyncpg.Connection, relation: str, key: tuple[str, ...], where: str, chunks: int
) -> list[Position]:
    columns = [quote_ident(name) for name in key]
    ascending = ", ".join(f"{c} ASC NULLS LAST" for c in columns)
    # Qualified: the select list's text casts carry the same names, and would sort as text.
    descending = ", ".join(f"tiles.{c} DESC NULLS FIRST" for c in columns)
    rows = await conn.fetch(
        f"SELECT DISTINCT ON (tile) {', '.join(f'tiles.{c}::text' for c in columns)}"
        f" FROM (SELECT {', '.join(columns)}, ntile({int(chunks)}) OVER (ORDER BY {ascending})"
        f" AS tile FROM {relation} WHERE {where}) AS tiles"
        f" ORDER BY tile, {descending}"
    )
    return [tuple(row) for row in rows[:-1]]

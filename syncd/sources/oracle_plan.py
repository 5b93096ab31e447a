"""Splitting an Oracle source's keys into ranges for a parallel load, AS OF one SCN.

As for PostgreSQL (``postgres_plan``): a single integer key that fills its range
densely is cut arithmetically between its least and greatest value, found by one
statement. Any other key (text, composite, a number
with a fraction or with gaps so wide that equal spans would hold very unequal
numbers of rows) is cut at NTILE quantiles, one sort. Each bound is written as a
batch's end is (``position_text``), so a chunk binds it as the keyset binds any
position, and ranges and reads agree on every comparison.

ROWID ranges (``DBMS_PARALLEL_EXECUTE.CREATE_CHUNKS_BY_ROWID``) are not used: a
chunk resumes after the last key it committed, and a ROWID range has no key order
to resume in.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from syncd.sources import Position, even_spans
from syncd.sources.oracle_describe import Described
from syncd.sources.oracle_sql import as_read, extent_sql, loaded_rows, tiles_sql
from syncd.sources.oracle_types import position_text

_INTEGER_TYPES = ("smallint", "integer", "bigint")


async def split_keys(
    query: Callable[[str], Awaitable[list[Any]]],
    described: Described,
    scn: bool,
    rows_per_chunk: int,
    rows_estimate: int | None,
) -> list[Position]:
    """The last key of each range but the last, ascending, for ranges of about
    ``rows_per_chunk`` of the rows a parallel load reads; ``query`` runs a statement,
    binding :scn if ``scn``.

    A positive ``rows_estimate`` (the table's statistics) stands in for counting the
    rows, a scan of every key while every worker waits for the plan: ranges only need
    to be about equal, and statistics a little stale only make them a little larger or
    smaller than asked.
    """
    keys = described.keysets[True].relation
    shape = described.shape
    span = len(shape.key) == 1 and _is_integer(shape.column(shape.key[0]).pg_type)
    rows = rows_estimate or None
    extent: list[Any] = []
    if span or rows is None:
        ((*extent,),) = await query(extent_sql(keys, scn, span=span, count=rows is None))
    if rows is None:
        rows = int(extent.pop())
    if not rows or (span and extent[0] is None):
        return []
    chunks = math.ceil(rows / rows_per_chunk)
    if chunks <= 1:
        return []
    if span:
        low, high = (int(value) for value in extent)
        spans = even_spans(low, high, rows, chunks)
        if spans is not None:
            return spans
    selected = [as_read(keys, column) for column in keys.order]
    tiles = await query(tiles_sql(keys, chunks, loaded_rows(keys, scn), selected))
    return [tuple(position_text(value) for value in tile) for tile in tiles[:-1]]


def _is_integer(pg_type: str) -> bool:
    """A NUMBER without a fraction: NUMBER(p) or NUMBER(p, s ≤ 0)."""
    return pg_type in _INTEGER_TYPES or (pg_type.startswith("numeric(") and pg_type.endswith(",0)"))

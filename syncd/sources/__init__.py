"""What the engine needs from a source database, and how to open one.

A source knows its own SQL dialect; the engine only speaks in positions and
batches. A new kind of database is one new module that implements ``Source``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from syncd.config import OracleSourceConfig, PostgresSourceConfig, SyncConfig
from syncd.errors import SourceError
from syncd.handoff import ByteStream

if TYPE_CHECKING:
    from syncd.verify.sides import Side

Position = tuple[str | None, ...]
"""A keyset position: the cursor value (when the sync has a cursor) then the key
values, each in the source's own text form, so that it survives JSON unchanged."""


@dataclass(frozen=True)
class Column:
    name: str
    """The column's name in the source."""
    target_name: str
    """The column's name in the PostgreSQL target."""
    pg_type: str
    """The PostgreSQL type that holds the column without loss, as format_type() writes it."""


@dataclass(frozen=True)
class Shape:
    """The columns a sync reads, in the order every batch carries them."""

    columns: tuple[Column, ...]
    key: tuple[str, ...]
    cursor: str | None
    missing_index: str | None = None
    """When no index leads with the first column of the keyset order, the statement that
    would make one; the source then reads each run in a single pass instead of by batches,
    each of which would have to scan the whole table."""

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


@dataclass(frozen=True)
class Window:
    """Which rows to read, in (cursor, key) order."""

    after: Position | None = None
    """Strictly after this position; None is the very start."""
    cursor_from: str | None = None
    """Instead of ``after``: from this cursor value minus ``lookback``, inclusive."""
    lookback: timedelta | None = None
    until: Position | None = None
    """Up to and including this position; None is the end of the source."""
    snapshot: str | None = None
    """The snapshot a resumed pass must keep reading at (an Oracle SCN), if it had one."""
    by_key: bool = False
    """In key order alone, the cursor aside, as a backfill reads the whole table."""
    null_cursor: bool = False
    """Only the rows whose cursor is NULL, in key order, which no other window holds."""

    def beyond(self, position: Position) -> Window:
        """The rest of this window after ``position``, where a batch ended."""
        return Window(
            after=position,
            until=self.until,
            snapshot=self.snapshot,
            by_key=self.by_key,
            null_cursor=self.null_cursor,
        )


@dataclass(frozen=True)
class Limits:
    """When a batch ends: at ``rows`` rows or once its rows take ``bytes``, whichever is first.
    A single row larger than ``bytes`` still makes a batch of its own."""

    rows: int
    bytes: int


@dataclass(frozen=True)
class CopyBatch:
    """Rows streamed as PostgreSQL binary COPY data for the shape's columns, read once."""

    stream: ByteStream
    end: Position
    exhausted: bool
    """No row followed this batch in its window when it was read."""
    snapshot: str | None = None
    values_cleaned: int = 0


@dataclass(frozen=True)
class RecordBatch:
    """Rows as Python values, for the shape's columns, to be encoded by the target."""

    records: list[tuple[Any, ...]]
    end: Position
    exhausted: bool
    """No row followed this batch in its window when it was read."""
    snapshot: str | None = None
    """The snapshot this batch was read at, saved with the position."""
    values_cleaned: int = 0
    """Values changed to fit PostgreSQL, such as text with NUL characters stripped."""

    @property
    def rows(self) -> int:
        return len(self.records)


Batch = CopyBatch | RecordBatch


@dataclass(frozen=True)
class LoadPlan:
    """How a parallel load reads the source: key ranges, at one snapshot, up to a cursor value."""

    bounds: list[Position]
    """The last key of each range but the last, ascending: range i holds the keys after
    bound i-1 up to and including bound i; the last range runs to the end."""
    since: str | None
    """The newest cursor value the snapshot holds, where reading goes on after the load;
    None without a cursor, or for an empty source."""
    snapshot: str | None
    """The snapshot every range is read at, while the planning source stays open."""


DENSE_ENOUGH = 4
"""An integer key spanning at most this many values per row is cut into equal spans."""


def even_spans(low: int, high: int, rows: int, chunks: int) -> list[Position] | None:
    """The last key of each of ``chunks`` equal spans of low..high but the last, or None
    when the keys are too sparse for equal spans to hold about equal numbers of rows."""
    span = high - low + 1
    if span > DENSE_ENOUGH * rows:
        return None
    step = math.ceil(span / chunks)
    return [(str(low + i * step - 1),) for i in range(1, chunks) if low + i * step <= high]


def refuse_null_keys(label: str, counts: dict[str, int]) -> None:
    """Stop before anything is written if a key column holds NULL: such a row has no
    place in the keyset order, comparisons with it are never true, and it and the rows
    after it in its batch would be skipped. ``counts`` are the NULLs by column."""
    holding = [f"{name!r} in {count} rows" for name, count in counts.items() if count]
    if holding:
        raise SourceError(
            f"the key of {label} holds NULL ({', '.join(holding)}): such rows cannot be"
            " ordered by the key, so nothing was copied; give them a key value or choose a"
            " key that is never NULL"
        )


class SnapshotExpired(Exception):
    """The source can no longer read at the pass's snapshot; the pass must start over."""


class Source(Protocol):
    async def describe(self) -> Shape:
        """The sync's columns with lossless PostgreSQL types; fails naming a missing column."""
        ...

    async def estimate_rows(self, window: Window) -> int | None:
        """A cheap guess at how many rows ``window`` holds, for progress and ETA."""
        ...

    async def null_cursors(self) -> int:
        """How many rows have a NULL cursor; 0 for a sync without a cursor."""
        ...

    async def newest_cursor(self) -> str | None:
        """The newest cursor value in the source, in a position's text form: how far the
        target could have come. None for an empty source or a sync without a cursor."""
        ...

    async def comparison(self) -> Side:
        """The source's side of a verify: its rows' hashes by key segments, in its dialect."""
        ...

    def abort(self) -> None:
        """Drop the connection at once, whatever it is doing: after this, every wait on it
        ends with an error, and it is never used again."""
        ...

    def read(self, window: Window, limits: Limits) -> AsyncGenerator[Batch, None]:
        """Batches within ``limits`` in keyset order, each ending at a key boundary.

        A streamed batch is read while the caller consumes it: the caller takes the
        next batch only after it has read the previous one's stream to the end.
        """
        ...


@runtime_checkable
class PlansLoads(Protocol):
    """A source that can split a load into key ranges read at one snapshot."""

    def load_plan(self, rows_per_chunk: int) -> AbstractAsyncContextManager[LoadPlan]:
        """The plan, in a snapshot that stays alive until the block ends."""
        ...


async def check_source(config: PostgresSourceConfig | OracleSourceConfig) -> str:
    """Connect once and say what answered, for ``syncd check-config``."""
    if isinstance(config, PostgresSourceConfig):
        from syncd.sources.postgres import check_postgres

        return await check_postgres(config.dsn, config.secret())
    from syncd.sources.oracle_session import check_oracle

    return await check_oracle(config)


def open_source(
    config: PostgresSourceConfig | OracleSourceConfig, sync: SyncConfig
) -> AbstractAsyncContextManager[Source]:
    """Connect to the source of ``sync``; the connection closes when the context exits."""
    if isinstance(config, PostgresSourceConfig):
        from syncd.sources.postgres import open_postgres_source

        return open_postgres_source(config, sync)
    from syncd.sources.oracle import open_oracle_source

    return open_oracle_source(config, sync)

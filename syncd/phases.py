"""Where a run reads: after its saved position, after a look-back re-read below it that
leaves the position pinned (longer by the hour a clock set back repeats), or on from a
parallel load's cursor value; and, by key, the rows whose cursor is NULL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from zoneinfo import ZoneInfo

import structlog

from syncd import clock
from syncd.config import DATABASE_TIME_ZONE, SyncConfig
from syncd.errors import SourceError
from syncd.sources import Position, Shape, Source, Window
from syncd.state import SyncState

log = structlog.get_logger("syncd.engine")


@dataclass(frozen=True)
class Phase:
    window: Window
    pinned: Position | None = None
    """Stored instead of each batch's end while re-reading below the saved position."""
    final: bool = True
    backfill: bool = False
    """Reads the whole table by key to fill in new columns; keeps a position of its own."""
    nulls: bool = False
    """Reads the rows whose cursor is NULL, by key; the saved position stays ``pinned``."""


def after_load(state: SyncState, sync: SyncConfig) -> list[Phase]:
    """What a run reads once its parallel load is done: on from the load's cursor value."""
    if sync.cursor is None or state.since is None:
        return []
    return [Phase(Window(cursor_from=state.since, lookback=sync.lookback))]


def plan_phases(
    state: SyncState,
    sync: SyncConfig,
    full_refresh: bool,
    lookback_done: bool,
    fall_back: timedelta = timedelta(),
) -> list[Phase]:
    """Where this attempt starts reading, as one or two keyset windows. ``fall_back`` is
    how far the cursor's clock was set back since the saved position: the stamps of that
    time repeat below it, and are re-read with the lookback."""
    position = state.position
    if full_refresh or (sync.cursor is None and state.is_complete):
        position = None
    if position is None and not full_refresh and state.since is not None:
        return after_load(state, sync)
    if position is None:
        return [Phase(Window())]
    if sync.cursor is None:
        return [Phase(Window(after=position, snapshot=state.snapshot))]
    lookback = (sync.lookback or timedelta()) + fall_back
    if lookback and not lookback_done:
        # Re-read the lookback window up to the saved position without moving it back,
        # so a crash during the re-read repeats the same window instead of drifting.
        reread = Window(cursor_from=position[0], lookback=lookback, until=position)
        return [Phase(reread, pinned=position, final=False), Phase(Window(after=position))]
    return [Phase(Window(after=position))]


def clock_fall_back(zone: str | None, shape: Shape, state: SyncState, announce: bool) -> timedelta:
    """How far a zone-less cursor's clock, written in ``zone``, was set back since the
    saved position; logged if ``announce``."""
    if zone in (None, DATABASE_TIME_ZONE) or shape.cursor is None or state.position is None:
        return timedelta()
    if not clock.is_zone_less(shape.column(shape.cursor).pg_type):
        return timedelta()
    gap = clock.fall_back_gap(ZoneInfo(zone), str(state.position[0]))
    if gap and announce:
        log.info("clock_fell_back", zone=zone, rereads=str(gap), since=state.position[0])
    return gap


async def rows_without_cursor(source: Source, sync: SyncConfig) -> int:
    """How many rows a run reads by key because their cursor is NULL; null_cursor: fail
    refuses the run while there are any, before anything is written."""
    if sync.cursor is None or sync.null_cursor == "skip":
        return 0
    count = await source.null_cursors()
    if count and sync.null_cursor == "fail":
        raise SourceError(
            f"{count} rows have a NULL cursor ({sync.cursor}), and null_cursor is 'fail':"
            " give them a value, or set null_cursor to include (read them by key each run)"
            " or skip (never read them)"
        )
    if count:
        log.warning("null_cursor_rows", rows=count, action="read by key")
    return count

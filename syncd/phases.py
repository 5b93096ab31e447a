"""Where a run reads: after its saved position, after a look-back re-read below it that
leaves the position pinned, or on from a parallel load's cursor value."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from syncd.config import SyncConfig
from syncd.sources import Position, Window
from syncd.state import SyncState


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

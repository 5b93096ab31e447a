"""Is the mirror fresh? How far the target is behind the source, in time where possible.

Three things are known about a sync: the newest cursor value in the source, the cursor
value the target has reached (its committed position), and when a run last succeeded.
With a time cursor the lag is the first less the second; with a number, nothing turns
rows into seconds, so the lag is the age of the last success while rows are waiting;
without a cursor it is the age of the last success. A sync is stale when its lag passes
its ``max_lag``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class Freshness:
    source_newest: str | None
    """The newest cursor value in the source, as last read."""
    synced_to: str | None
    """The cursor value the target has reached: its committed position."""
    lag_seconds: float | None
    """None while nothing tells: no successful run yet, or an empty source."""
    last_success_at: datetime | None
    stale: bool


def freshness(
    *,
    cursor_kind: str | None,
    source_newest: str | None,
    synced_to: str | None,
    last_success_at: datetime | None,
    max_lag: timedelta | None,
    now: datetime | None = None,
) -> Freshness:
    """``cursor_kind``: "time", "number", or None for a sync without a cursor."""
    now = now or datetime.now(UTC)
    since_success = None if last_success_at is None else (now - last_success_at).total_seconds()
    lag: float | None
    if cursor_kind == "time" and source_newest is not None and synced_to is not None:
        lag = max(0.0, (_instant(source_newest) - _instant(synced_to)).total_seconds())
    elif cursor_kind == "time" and source_newest is None:
        lag = 0.0  # an empty source: nothing to be behind
    elif cursor_kind == "number" and source_newest is not None and synced_to is not None:
        behind = _number(source_newest) > _number(synced_to)
        lag = since_success if behind else 0.0
    else:
        lag = since_success
    stale = max_lag is not None and (lag is None or lag > max_lag.total_seconds())
    return Freshness(source_newest, synced_to, lag, last_success_at, stale)


def _instant(text: str) -> datetime:
    """A time cursor's value; a zone-less one is compared with another as it is."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def _number(text: str) -> float:
    return float(text)

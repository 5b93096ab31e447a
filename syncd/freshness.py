"""Is the mirror fresh? How far the target is behind the source, in time where possible.

Three things are known about a sync: the newest cursor value in the source, the cursor
value the target has reached (its committed position), and when a run last succeeded.
With a time cursor the lag is the first less the second; with a number, nothing turns
rows into seconds, so the lag is the age of the last success while rows are waiting;
without a cursor it is the age of the last success. A sync is stale when its lag passes
its ``max_lag``.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.config import OracleSourceConfig, PostgresSourceConfig, SyncConfig
from syncd.pools import Connector

READ_BOUND_S = 15.0
"""The longest one look at the target or at a source may take, waiting for a connection
included: a slow database delays what is known by this much, never blocks it."""


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

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_success_at"] = self.last_success_at and self.last_success_at.isoformat()
        return data


def freshness(
    *,
    cursor_kind: str | None,
    source_newest: str | None,
    synced_to: str | None,
    last_success_at: datetime | None,
    max_lag: timedelta | None,
    unknown_since: datetime | None = None,
    now: datetime | None = None,
) -> Freshness:
    """``cursor_kind``: "time", "number", or None for any other cursor or none.

    A lag that cannot be told (nothing synced yet) makes the sync stale once it has been
    unknown for longer than ``max_lag`` since ``unknown_since``; at once without it.
    """
    now = now or datetime.now(UTC)
    since_success = None if last_success_at is None else (now - last_success_at).total_seconds()
    lag: float | None
    if cursor_kind == "time":
        # An empty source is behind by nothing; a target with nothing synced yet (or reset)
        # is behind by an unknown amount, not by zero.
        lag = _seconds_between(synced_to, source_newest) if source_newest is not None else 0.0
    elif cursor_kind == "number" and source_newest is not None and synced_to is not None:
        behind = _number(source_newest) > _number(synced_to)
        lag = since_success if behind else 0.0
    else:
        lag = since_success
    stale = False
    if max_lag is not None and lag is not None:
        stale = lag > max_lag.total_seconds()
    elif max_lag is not None:
        stale = unknown_since is None or now - unknown_since > max_lag
    return Freshness(source_newest, synced_to, lag, last_success_at, stale)


def kind_of_cursor(pg_type: str | None) -> str | None:
    """Either "time" or "number" for a cursor of the PostgreSQL type ``pg_type``; None for any
    other cursor (text, say), whose values say nothing about how far apart they are."""
    if pg_type is None:
        return None
    if pg_type == "date" or pg_type.startswith("timestamp"):
        return "time"
    if pg_type.split("(")[0] in _NUMBERS:
        return "number"
    return None


_NUMBERS = {"smallint", "integer", "bigint", "numeric", "real", "double precision"}


def _seconds_between(earlier: str | None, later: str) -> float | None:
    """None from nothing, or from values that are no instants Python knows: 'infinity',
    a year BC."""
    if earlier is None:
        return None
    try:
        return max(0.0, (_instant(later) - _instant(earlier)).total_seconds())
    except ValueError:
        return None


def _instant(text: str) -> datetime:
    """A time cursor's value; a zone-less one is compared with another as it is."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def _number(text: str) -> float:
    return float(text)


async def read_newest(
    connector: Connector,
    sync: SyncConfig,
    source: PostgresSourceConfig | OracleSourceConfig,
    *,
    describe: bool,
) -> tuple[str | None, str | None]:
    """The source's newest cursor value and, when ``describe``, what the cursor measures
    (see ``kind_of_cursor``), in at most ``READ_BOUND_S``."""
    async with asyncio.timeout(READ_BOUND_S):
        async with connector.open_source(sync, source) as reader:
            kind = None
            if describe:
                shape = await reader.describe()
                assert shape.cursor is not None
                kind = kind_of_cursor(shape.column(shape.cursor).pg_type)
            return await reader.newest_cursor(), kind

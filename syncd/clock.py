"""The clock a zone-less cursor was written by.

Applications fill DATE and TIMESTAMP columns from the server's local time (SYSDATE,
LOCALTIMESTAMP, now()::timestamp). Such a cursor is compared with "now" in the same
zone, never with UTC: west of UTC, a UTC clock runs hours ahead of every stamp, and
``lag`` would hold nothing back.

Where the zone keeps daylight saving time, its clock falls back an hour each autumn,
and the stamps of that hour repeat below positions already saved. A run whose saved
position lies before a fall-back re-reads the repeated time, on top of its lookback.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo


def is_zone_less(pg_type: str) -> bool:
    """A cursor of this type holds wall-clock times without a zone."""
    return pg_type == "date" or (
        pg_type.startswith("timestamp") and pg_type.endswith("without time zone")
    )


def wall_now(zone: ZoneInfo, now: datetime) -> datetime:
    """The zone's wall-clock time at the instant ``now``, as a zone-less cursor holds it."""
    return now.astimezone(zone).replace(tzinfo=None)


def fall_back_gap(zone: ZoneInfo, saved: str, now: datetime | None = None) -> timedelta:
    """How far the zone's clock was set back between the saved wall time and ``now``.

    The saved time is taken at its earlier reading where it is ambiguous, so that a
    position inside the repeated hour still counts as before the fall-back.
    """
    instant = now or datetime.now(UTC)
    before = datetime.fromisoformat(saved).replace(tzinfo=zone, fold=0).utcoffset()
    after = instant.astimezone(zone).utcoffset()
    assert before is not None and after is not None
    return max(before - after, timedelta())

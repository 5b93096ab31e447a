"""Opening PostgreSQL connections the same way everywhere."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from syncd.errors import SyncdError
from syncd.redact import redact

Conn = asyncpg.Connection | PoolConnectionProxy
"""A connection of its own or one borrowed from a pool: both speak the same protocol."""

# UTC and ISO styles make every value's text form exact and parseable, which
# positions rely on: they are stored as text and cast back in later queries.
SESSION_SETTINGS = {
    "application_name": "syncd",
    "timezone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
}


async def connect(
    dsn: str,
    password: str | None,
    *,
    connect_timeout: float = 10.0,
    statement_timeout: timedelta | None = None,
) -> asyncpg.Connection:
    """One connection with syncd's session settings; errors never carry the password."""
    settings = dict(SESSION_SETTINGS)
    if statement_timeout is not None:
        settings["statement_timeout"] = str(int(statement_timeout.total_seconds() * 1000))
    try:
        conn = await asyncpg.connect(
            dsn, password=password, timeout=connect_timeout, server_settings=settings
        )
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        raise SyncdError(f"{redact(dsn)}: login refused: {exc}") from None
    except asyncpg.InvalidCatalogNameError as exc:
        raise SyncdError(f"{redact(dsn)}: {exc}") from None
    except ValueError as exc:
        raise SyncdError(f"invalid PostgreSQL DSN {redact(dsn)}: {redact(str(exc))}") from None
    # A built-in type: asyncpg sets its codec without a round trip.
    await conn.set_type_codec(
        "interval",
        schema="pg_catalog",
        encoder=_interval_parts,
        decoder=tuple,
        format="tuple",
    )
    return conn


Interval = tuple[int, int, int]
"""An interval as PostgreSQL keeps it: (months, days, microseconds)."""


def _interval_parts(value: timedelta | Interval) -> Interval:
    """Intervals are written from a timedelta, or from their parts when they count months
    (an Oracle INTERVAL YEAR TO MONTH), which a timedelta cannot hold: a month has no
    fixed number of days. They are read back as their parts, losing nothing either."""
    if isinstance(value, timedelta):
        return 0, value.days, value.seconds * 1_000_000 + value.microseconds
    return value


async def create_pool(dsn: str, password: str | None) -> asyncpg.Pool:
    """A small pool for the API's reads; runs use connections of their own."""
    try:
        return await asyncpg.create_pool(
            dsn,
            password=password,
            min_size=1,
            max_size=4,
            timeout=10,
            command_timeout=30,
            server_settings=SESSION_SETTINGS,
        )
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        raise SyncdError(f"{redact(dsn)}: login refused: {exc}") from None

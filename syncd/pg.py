"""Opening PostgreSQL connections the same way everywhere."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from syncd.config import PostgresSourceConfig, TargetConfig
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
    # Quoting a literal doubles its quotes and nothing else; syncd's statements rely on it.
    "standard_conforming_strings": "on",
    # The server notices within two minutes that syncd's host has gone, and ends the
    # session, which releases the sync's lock for the next run.
    "tcp_keepalives_idle": "60",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "6",
}

CLIENT_MARGIN = timedelta(seconds=60)
"""How much longer than the server's statement_timeout the client waits for an answer:
the server's own, clearer error comes first, and a peer that vanished is still noticed."""


async def connect_to(database: TargetConfig | PostgresSourceConfig) -> asyncpg.Connection:
    """A connection to a configured database, with its timeouts."""
    try:
        return await open_to(database)
    except Exception as exc:
        explain_refusal(exc, database.dsn)
        raise


async def open_to(database: TargetConfig | PostgresSourceConfig) -> asyncpg.Connection:
    """The same, failing with the driver's own errors, for callers that sort them themselves."""
    return await _open(
        database.dsn,
        database.secret(),
        connect_timeout=database.connect_timeout.total_seconds(),
        statement_timeout=database.statement_timeout,
    )


async def connect(
    dsn: str,
    password: str | None,
    *,
    connect_timeout: float = 10.0,
    statement_timeout: timedelta | None = None,
) -> asyncpg.Connection:
    """One connection with syncd's session settings; errors never carry the password."""
    try:
        return await _open(
            dsn, password, connect_timeout=connect_timeout, statement_timeout=statement_timeout
        )
    except Exception as exc:
        explain_refusal(exc, dsn)
        raise


def explain_refusal(exc: Exception, dsn: str) -> None:
    """Raise, in plain words, a refusal to connect that no retry can mend: a login refused,
    a database that does not exist, a DSN that is not one. Anything else is left alone."""
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        raise SyncdError(f"{redact(dsn)}: login refused: {exc}") from None
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        raise SyncdError(f"{redact(dsn)}: {exc}") from None
    if isinstance(exc, ValueError):
        raise SyncdError(f"invalid PostgreSQL DSN {redact(dsn)}: {redact(str(exc))}") from None


async def _open(
    dsn: str, password: str | None, *, connect_timeout: float, statement_timeout: timedelta | None
) -> asyncpg.Connection:
    settings = dict(SESSION_SETTINGS)
    command_timeout = None
    if statement_timeout is not None:
        settings["statement_timeout"] = str(int(statement_timeout.total_seconds() * 1000))
        command_timeout = (statement_timeout + CLIENT_MARGIN).total_seconds()
    conn = await asyncpg.connect(
        dsn,
        password=password,
        timeout=connect_timeout,
        command_timeout=command_timeout,
        server_settings=settings,
    )
    # Built-in types: asyncpg sets their codecs without a round trip.
    await conn.set_type_codec(
        "interval", schema="pg_catalog", encoder=_interval_parts, decoder=tuple, format="tuple"
    )
    for name, encoder, decoder in _EXACT_TIMES:
        await conn.set_type_codec(
            name, schema="pg_catalog", encoder=encoder, decoder=decoder, format="tuple"
        )
    return conn


Interval = tuple[int, int, int]
"""An interval as PostgreSQL keeps it: (months, days, microseconds)."""


def _interval_parts(value: timedelta | Interval) -> Interval:
    """Intervals are written from a timedelta, or from their parts when they count months
    (an Oracle INTERVAL YEAR TO MONTH), which a timedelta cannot hold: a month has no
    fixed number of days. They are read back as their parts, losing nothing either."""
    if isinstance(value, timedelta):
        # Split as Oracle does, the sign on both parts: -(1 day 2 hours) is -1 day
        # -02:00, not timedelta's -2 days +22:00, which is another interval to an image.
        microseconds = value // timedelta(microseconds=1)
        sign = -1 if microseconds < 0 else 1
        days, rest = divmod(abs(microseconds), 86_400_000_000)
        return 0, sign * days, sign * rest
    return value


# asyncpg writes date.min, date.max, datetime.min and datetime.max as -infinity and
# infinity. They are real values in Oracle (DATE '0001-01-01', TIMESTAMP
# '9999-12-31 23:59:59.999999'), so syncd writes every date and time as the value it is.
_EPOCH = datetime(2000, 1, 1)
_EPOCH_DAY = _EPOCH.toordinal()
_MICROSECOND = timedelta(microseconds=1)
_INFINITY = 2**63 - 1
_DAY_INFINITY = 2**31 - 1


def _timestamp_parts(value: datetime) -> tuple[int]:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return ((value - _EPOCH) // _MICROSECOND,)


def _timestamp(parts: tuple[int]) -> datetime:
    (microseconds,) = parts
    if abs(microseconds) >= _INFINITY:
        return datetime.max if microseconds > 0 else datetime.min
    return _EPOCH + microseconds * _MICROSECOND


def _timestamptz(parts: tuple[int]) -> datetime:
    return _timestamp(parts).replace(tzinfo=UTC)


def _date_parts(value: date) -> tuple[int]:
    return (value.toordinal() - _EPOCH_DAY,)


def _date(parts: tuple[int]) -> date:
    (days,) = parts
    if abs(days) >= _DAY_INFINITY:
        return date.max if days > 0 else date.min
    return date.fromordinal(days + _EPOCH_DAY)


_EXACT_TIMES = (
    ("timestamp", _timestamp_parts, _timestamp),
    ("timestamptz", _timestamp_parts, _timestamptz),
    ("date", _date_parts, _date),
)

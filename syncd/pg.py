"""Opening PostgreSQL connections the same way everywhere."""

from __future__ import annotations

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
    dsn: str, password: str | None, *, connect_timeout: float = 10.0
) -> asyncpg.Connection:
    """One connection with syncd's session settings; errors never carry the password."""
    try:
        return await asyncpg.connect(
            dsn, password=password, timeout=connect_timeout, server_settings=SESSION_SETTINGS
        )
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        raise SyncdError(f"{redact(dsn)}: login refused: {exc}") from None
    except asyncpg.InvalidCatalogNameError as exc:
        raise SyncdError(f"{redact(dsn)}: {exc}") from None
    except ValueError as exc:
        raise SyncdError(f"invalid PostgreSQL DSN {redact(dsn)}: {redact(str(exc))}") from None


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

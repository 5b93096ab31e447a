"""The built-in demo: a realistic opportunities table to sync, made in seconds, and a
sales team at work on it, so that the mirror has something to keep up with."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from importlib import resources

import asyncpg
import structlog

from syncd.identifiers import TableName, quote_ident

DEMO_SYNC = "demo_opportunities"
DEMO_SCHEDULE = timedelta(seconds=5)
"""How often the demo's daemon syncs: often enough to watch the mirror keep up."""
DEMO_MAX_LAG = timedelta(minutes=1)
"""Well above what a run every DEMO_SCHEDULE leaves behind: the demo's mirror is fresh."""

log = structlog.get_logger("syncd.demo")


async def create_demo_source(conn: asyncpg.Connection, table: TableName, rows: int) -> None:
    """(Re)create ``table`` holding ``rows`` generated sales opportunities."""
    script = resources.files("syncd").joinpath("sql", "demo_opportunities.sql").read_text("utf-8")
    script = script.replace("{table}", table.sql).replace("{rows}", str(int(rows)))
    async with conn.transaction():
        if table.schema is not None:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table.schema)}")
        await conn.execute(f"DROP TABLE IF EXISTS {table.sql}")
        await conn.execute(script)


# What the team does, by weight: mostly moving deals on, some new ones, a rare deletion.
_WRITES = (
    (
        8,
        "UPDATE {table} SET stage = (ARRAY['Qualification', 'Proposal', 'Negotiation',"
        " 'Closed Won', 'Closed Lost'])[1 + floor(random() * 5)::int],"
        " amount = round((amount * (0.8 + random() * 0.4))::numeric, 2),"
        " last_update_date = clock_timestamp()"
        " WHERE opportunity_id = (SELECT opportunity_id FROM {table}"
        " ORDER BY random() LIMIT 1)",
    ),
    (
        3,
        "INSERT INTO {table} SELECT max(opportunity_id) + 1, 'New logo - Demo ' || count(*),"
        " 'Demo Corp', 'rep1@example.com', 'Prospecting', 5000, 'EUR', 10,"
        " current_date + 90, clock_timestamp(), clock_timestamp(), 'EMEA', 'Platform',"
        " NULL, 'Created by the demo writer' FROM {table}",
    ),
    (
        1,
        "DELETE FROM {table} WHERE opportunity_id = (SELECT opportunity_id FROM {table}"
        " ORDER BY random() LIMIT 1)",
    ),
)


@contextlib.asynccontextmanager
async def demo_writer(
    connect: Callable[[], Awaitable[asyncpg.Connection]], table: TableName, per_second: float
) -> AsyncIterator[None]:
    """Write to the demo source ``per_second`` times a second for as long as the block
    lasts; leaving the block stops the writer and closes its connection."""
    if per_second <= 0:
        yield
        return
    conn = await connect()
    statements = [sql.format(table=table.sql) for _, sql in _WRITES]
    weights = [weight for weight, _ in _WRITES]

    async def write_forever() -> None:
        while True:
            await conn.execute(random.choices(statements, weights)[0])
            await asyncio.sleep(1 / per_second)

    writing = asyncio.create_task(write_forever(), name="syncd-demo-writer")
    log.info("demo_writer_started", writes_per_second=per_second)
    try:
        yield
    finally:
        writing.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writing
        conn.terminate()

"""The built-in demo: a realistic opportunities table to sync, made in seconds."""

from __future__ import annotations

from importlib import resources

import asyncpg

from syncd.identifiers import TableName, quote_ident

DEMO_SYNC = "demo_opportunities"


async def create_demo_source(conn: asyncpg.Connection, table: TableName, rows: int) -> None:
    """(Re)create ``table`` holding ``rows`` generated sales opportunities."""
    script = resources.files("syncd").joinpath("sql", "demo_opportunities.sql").read_text("utf-8")
    script = script.replace("{table}", table.sql).replace("{rows}", str(int(rows)))
    async with conn.transaction():
        if table.schema is not None:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table.schema)}")
        await conn.execute(f"DROP TABLE IF EXISTS {table.sql}")
        await conn.execute(script)

"""A one-shot command imports what it needs and no more."""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from tests.helpers import create_items

ITEMS = {"table": "src.items", "cursor": "updated_at", "target_table": "public.items"}


async def test_a_sync_away_from_a_terminal_imports_neither_rich_nor_the_oracle_driver(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 10)
    _, path = make_config({"items": ITEMS})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "importtime", "-m", "syncd", "-c", str(path), "sync", "items",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await process.communicate()
    imported = {line.rsplit("|", 1)[-1].strip() for line in stderr.decode().splitlines()}

    assert process.returncode == 0, stderr.decode()[-2000:]
    assert await conn.fetchval("SELECT count(*) FROM public.items") == 10
    assert "structlog" in imported  # the list is the real one
    assert not {name for name in imported if name.startswith(("rich.", "oracledb"))}

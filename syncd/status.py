"""What a person or a program asks about a sync, gathered in one place."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from syncd.config import SyncConfig
from syncd.identifiers import TableName
from syncd.pg import Conn
from syncd.state import StateStore


@dataclass(frozen=True)
class SyncStatus:
    sync_name: str
    source: str
    target_table: str
    current_offset: int
    total_synced: int
    last_sync_at: datetime | None
    is_complete: bool
    total_in_db: int | None
    running: bool
    run_id: str | None
    position: list[str | None] | None
    last_error: str | None
    holder: str | None
    backfill: dict[str, Any] | None
    """New columns being filled in for existing rows: their names and the key reached."""

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_sync_at"] = self.last_sync_at.isoformat() if self.last_sync_at else None
        return data


async def count_rows(conn: Conn, table: TableName) -> int | None:
    """The rows in ``table`` now; None while it does not exist."""
    if await conn.fetchval("SELECT to_regclass($1)::oid", table.sql) is None:
        return None
    return int(await conn.fetchval(f"SELECT count(*) FROM {table.sql}"))


class RowCounts:
    """Rows in each table for the daemon's API, counted once per ``ttl`` seconds at most.

    count(*) reads the whole table, and whoever can reach the API may ask as often as they
    like: what they see is up to ``ttl`` old instead, unless the caller knows that the table
    changed since (``after``).
    """

    def __init__(self, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._counted: dict[str, tuple[float, Hashable, int | None]] = {}
        self._counting: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def __call__(self, conn: Conn, table: TableName, after: Hashable) -> int | None:
        """The rows in ``table``, counted within ``ttl`` and since ``after`` last changed:
        the runs that last finished writing the table, say, so that no count predates them."""
        # One count of a table at a time: those who waited for it take its result.
        async with self._counting[table.sql]:
            counted = self._counted.get(table.sql)
            if counted is None or counted[1] != after or self._clock() - counted[0] >= self._ttl:
                counted = self._clock(), after, await count_rows(conn, table)
                self._counted[table.sql] = counted
            return counted[2]


async def collect_status(
    conn: Conn,
    store: StateStore,
    name: str,
    sync: SyncConfig,
    count: Callable[[Conn, TableName], Awaitable[int | None]] = count_rows,
) -> SyncStatus:
    state = await store.load(conn, name)
    running = await store.is_running(conn, name)
    target = sync.target
    total_in_db = await count(conn, target)
    return SyncStatus(
        sync_name=name,
        source=sync.source,
        target_table=str(target),
        current_offset=state.current_offset,
        total_synced=state.total_synced,
        last_sync_at=state.last_sync_at,
        is_complete=state.is_complete,
        total_in_db=total_in_db,
        running=running,
        run_id=state.holder_run_id if running else None,
        position=list(state.position) if state.position is not None else None,
        last_error=state.last_error,
        holder=f"pid {state.holder_pid} on {state.holder_host}" if running else None,
        backfill={
            "columns": state.backfill_columns,
            "position": None if state.backfill_position is None else list(state.backfill_position),
        }
        if state.backfill_columns
        else None,
    )

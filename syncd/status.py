"""What a person or a program asks about a sync, gathered in one place."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from syncd.config import SyncConfig
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

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_sync_at"] = self.last_sync_at.isoformat() if self.last_sync_at else None
        return data


async def collect_status(conn: Conn, store: StateStore, name: str, sync: SyncConfig) -> SyncStatus:
    state = await store.load(conn, name)
    running = await store.is_running(conn, name)
    target = sync.target
    total_in_db = None
    if await conn.fetchval("SELECT to_regclass($1)::oid", target.sql) is not None:
        total_in_db = int(await conn.fetchval(f"SELECT count(*) FROM {target.sql}"))
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
    )

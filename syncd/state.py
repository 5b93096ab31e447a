"""syncd's bookkeeping in the target database: positions, runs and who holds a sync.

It lives in the target so that a batch's rows and its new position commit in
one transaction. Cross-process single flight is a session advisory lock on the
same connection that writes the batches: a writer that lost its lock has lost
its connection too, so it can never write unlocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any

from syncd.errors import AlreadyRunning
from syncd.identifiers import quote_ident
from syncd.pg import Conn

Position = tuple[str | None, ...]

_MIGRATIONS = (
    "0001_state.sql",
    "0002_snapshots_and_cleaning.sql",
    "0003_positions_as_json.sql",
    "0004_schema_changes.sql",
    "0005_verify.sql",
    "0006_chunks.sql",
)


def sql_text(name: str, schema: str) -> str:
    """A statement of syncd/sql/ for the state schema ``schema``."""
    text = resources.files("syncd").joinpath("sql", name).read_text(encoding="utf-8")
    return text.replace("{schema}", quote_ident(schema))


@dataclass(frozen=True)
class SyncState:
    sync_name: str
    position: Position | None
    current_offset: int
    total_synced: int
    last_sync_at: datetime | None
    is_complete: bool
    holder_host: str | None
    holder_pid: int | None
    holder_since: datetime | None
    holder_run_id: str | None
    last_error: str | None
    snapshot: str | None
    source_columns: list[tuple[str, str, str]] | None = None
    """The source's columns as the last run saw them: (name, type, target name)."""
    ignored_columns: list[str] = field(default_factory=list)
    dropped_columns: list[str] = field(default_factory=list)
    backfill_columns: list[str] = field(default_factory=list)
    """Columns being filled in for the rows already in the target."""
    backfill_position: Position | None = None
    since: str | None = None
    """After a parallel load, the cursor value reading goes on from until a batch commits."""


@dataclass(frozen=True)
class RunRecord:
    """One recorded run, as the runs table keeps it."""

    run_id: str
    sync_name: str
    trigger: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    batches: int
    rows_read: int
    rows_written: int
    rows_unchanged: int
    values_cleaned: int
    error: str | None
    duration_s: float | None
    """None while it runs."""


@dataclass(frozen=True)
class SchemaChange:
    """One change of a source column, as the run that noticed it recorded it."""

    at: datetime
    run_id: str | None
    column_name: str
    change: str
    old_type: str | None
    new_type: str | None
    action: str


class StateStore:
    """Reads and writes syncd's tables in ``schema``; every method takes the connection to use."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._table = f"{quote_ident(schema)}.sync_state"
        self._runs = f"{quote_ident(schema)}.runs"
        self._batch_commit = sql_text("batch_commit.sql", schema)

    def lock_key(self, sync_name: str) -> int:
        digest = hashlib.sha256(f"syncd:{self.schema}:{sync_name}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    async def migrate(self, conn: Conn) -> None:
        """Create or upgrade the state schema; safe when several processes start at once.

        A schema that is up to date is only read, so that a role with no right to
        create anything in the database can run syncd once the schema exists.
        """
        if await self._version(conn) == len(_MIGRATIONS):
            return
        schema = quote_ident(self.schema)
        versions = f"{schema}.schema_version"
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self.lock_key(":migrate"))
            if await conn.fetchval("SELECT to_regnamespace($1)", schema) is None:
                await conn.execute(f"CREATE SCHEMA {schema}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {versions} ("
                " version integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = {r[0] for r in await conn.fetch(f"SELECT version FROM {versions}")}
            for version, name in enumerate(_MIGRATIONS, start=1):
                if version not in applied:
                    await conn.execute(sql_text(name, self.schema))
                    await conn.execute(f"INSERT INTO {versions} (version) VALUES ($1)", version)

    async def _version(self, conn: Conn) -> int | None:
        """The newest migration applied, or None before the first."""
        versions = f"{quote_ident(self.schema)}.schema_version"
        if await conn.fetchval("SELECT to_regclass($1)", versions) is None:
            return None
        return await conn.fetchval(f"SELECT max(version) FROM {versions}")  # type: ignore[no-any-return]

    async def claim(self, conn: Conn, sync_name: str, run_id: str) -> None:
        """Take the sync's lock for this session, or raise AlreadyRunning naming the holder."""
        await self._ensure_row(conn, sync_name)
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_key(sync_name)):
            raise AlreadyRunning(await self._held_message(conn, sync_name))
        # Whoever ran before us is gone (we hold the lock), so its unfinished runs were cut off.
        await conn.execute(
            f"UPDATE {self._runs} SET status = 'interrupted', finished_at = clock_timestamp(),"
            " error = coalesce(error, 'the process running it stopped before it finished')"
            " WHERE sync_name = $1 AND status = 'running' AND run_id <> $2",
            sync_name,
            run_id,
        )
        await conn.execute(
            f"UPDATE {self._table} SET holder_host = $2, holder_pid = $3,"
            " holder_since = clock_timestamp(), holder_run_id = $4 WHERE sync_name = $1",
            sync_name,
            socket.gethostname(),
            os.getpid(),
            run_id,
        )

    async def _ensure_row(self, conn: Conn, sync_name: str) -> None:
        await conn.execute(
            f"INSERT INTO {self._table} (sync_name) VALUES ($1) ON CONFLICT DO NOTHING", sync_name
        )

    async def release(self, conn: Conn, sync_name: str, run_id: str) -> None:
        await conn.execute(
            f"UPDATE {self._table} SET holder_host = NULL, holder_pid = NULL,"
            " holder_since = NULL, holder_run_id = NULL"
            " WHERE sync_name = $1 AND holder_run_id = $2",
            sync_name,
            run_id,
        )
        await conn.execute("SELECT pg_advisory_unlock($1)", self.lock_key(sync_name))

    async def _held_message(self, conn: Conn, sync_name: str) -> str:
        row = await conn.fetchrow(
            f"SELECT holder_host, holder_pid, holder_since, holder_run_id"
            f" FROM {self._table} WHERE sync_name = $1",
            sync_name,
        )
        if row is None or row["holder_host"] is None:
            return f"sync {sync_name!r} is already running in another session"
        return (
            f"sync {sync_name!r} is already running: held by pid {row['holder_pid']}"
            f" on {row['holder_host']} since {row['holder_since']:%Y-%m-%d %H:%M:%S%z}"
            f" (run {row['holder_run_id']})"
        )

    async def is_running(self, conn: Conn, sync_name: str) -> bool:
        """Ask the lock itself: holder columns outlive a killed process, the lock does not.

        Reads pg_locks rather than trying the lock, so that two callers asking at
        once cannot each see the other's probe and both conclude "running".
        """
        key = self.lock_key(sync_name)
        return bool(
            await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND classid = (($1::bigint >> 32) & 4294967295)::oid"
                " AND objid = ($1::bigint & 4294967295)::oid AND objsubid = 1 AND granted)",
                key,
            )
        )

    async def load(self, conn: Conn, sync_name: str) -> SyncState:
        row = await conn.fetchrow(f"SELECT * FROM {self._table} WHERE sync_name = $1", sync_name)
        if row is None:
            return SyncState(sync_name, None, 0, 0, None, False, None, None, None, None, None, None)
        return SyncState(
            sync_name=row["sync_name"],
            position=_position_from_json(row["position"]),
            current_offset=row["current_offset"],
            total_synced=row["total_synced"],
            last_sync_at=row["last_sync_at"],
            is_complete=row["is_complete"],
            holder_host=row["holder_host"],
            holder_pid=row["holder_pid"],
            holder_since=row["holder_since"],
            holder_run_id=row["holder_run_id"],
            last_error=row["last_error"],
            snapshot=row["snapshot"],
            source_columns=(
                None
                if row["source_columns"] is None
                else [tuple(column) for column in json.loads(row["source_columns"])]
            ),
            ignored_columns=list(row["ignored_columns"]),
            dropped_columns=list(row["dropped_columns"]),
            backfill_columns=list(row["backfill_columns"]),
            backfill_position=_position_from_json(row["backfill_position"]),
            since=row["since"],
        )

    async def start_run(self, conn: Conn, sync_name: str, run_id: str, trigger: str) -> None:
        await conn.execute(
            # A retried first attempt may find the record its lost connection did write.
            f"INSERT INTO {self._runs} (run_id, sync_name, trigger) VALUES ($1, $2, $3)"
            " ON CONFLICT (run_id) DO NOTHING",
            run_id,
            sync_name,
            trigger,
        )

    async def commit_batch(
        self,
        conn: Conn,
        *,
        sync_name: str,
        run_id: str,
        position: Position | None,
        rows_read: int,
        rows_written: int,
        complete: bool,
        snapshot: str | None = None,
        values_cleaned: int = 0,
    ) -> None:
        """Record a batch; call inside the transaction that wrote its rows."""
        await conn.execute(
            self._batch_commit,
            sync_name,
            None if position is None else json.dumps(list(position)),
            rows_read,
            rows_written,
            rows_read - rows_written,
            complete,
            run_id,
            None if complete else snapshot,
            values_cleaned,
        )

    async def save_schema(
        self,
        conn: Conn,
        sync_name: str,
        *,
        columns: list[tuple[str, str, str]],
        ignored: list[str],
        dropped: list[str],
        backfill: list[str],
    ) -> None:
        """The source's columns as this run sees them, and what follows from a change;
        ``backfill`` starts a backfill of those columns from the first key."""
        await conn.execute(
            f"UPDATE {self._table} SET source_columns = $2::json, ignored_columns = $3,"
            " dropped_columns = $4,"
            " backfill_position = CASE WHEN cardinality($5::text[]) > 0 THEN NULL"
            " ELSE backfill_position END,"
            " backfill_columns = ARRAY(SELECT DISTINCT unnest(backfill_columns || $5::text[]))"
            " WHERE sync_name = $1",
            sync_name,
            json.dumps(columns),
            ignored,
            dropped,
            backfill,
        )

    async def record_changes(
        self,
        conn: Conn,
        sync_name: str,
        run_id: str,
        changes: list[tuple[str, str, str | None, str | None, str]],
    ) -> None:
        """History: (column, change, old type, new type, action) for each change."""
        await conn.executemany(
            f"INSERT INTO {quote_ident(self.schema)}.schema_changes"
            " (sync_name, run_id, column_name, change, old_type, new_type, action)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [(sync_name, run_id, *change) for change in changes],
        )

    async def commit_backfill(
        self,
        conn: Conn,
        *,
        sync_name: str,
        run_id: str,
        position: Position,
        rows_read: int,
        rows_written: int,
        done: bool,
    ) -> None:
        """Record a backfill batch; call inside the transaction that wrote its rows."""
        await conn.execute(
            f"UPDATE {self._table}"
            " SET backfill_position = CASE WHEN $3 THEN NULL ELSE $2::json END,"
            " backfill_columns = CASE WHEN $3 THEN '{}' ELSE backfill_columns END,"
            " total_synced = total_synced + $4 WHERE sync_name = $1",
            sync_name,
            json.dumps(list(position)),
            done,
            rows_written,
        )
        await conn.execute(
            f"UPDATE {self._runs} SET batches = batches + 1, rows_read = rows_read + $2,"
            " rows_written = rows_written + $3, rows_unchanged = rows_unchanged + $2 - $3"
            " WHERE run_id = $1",
            run_id,
            rows_read,
            rows_written,
        )

    async def finish_backfill(self, conn: Conn, sync_name: str) -> None:
        """The backfill read past the last key: every row has its new columns."""
        await conn.execute(
            f"UPDATE {self._table} SET backfill_columns = '{{}}', backfill_position = NULL"
            " WHERE sync_name = $1",
            sync_name,
        )

    async def mark_complete(self, conn: Conn, sync_name: str) -> None:
        """The source had no rows after the last full batch: the sync has caught up."""
        await conn.execute(
            f"UPDATE {self._table} SET is_complete = true, snapshot = NULL,"
            " last_sync_at = clock_timestamp()"
            " WHERE sync_name = $1",
            sync_name,
        )

    async def restart_pass(self, conn: Conn, sync_name: str) -> None:
        """Forget a pass's position and snapshot, keeping the counters."""
        await conn.execute(
            f"UPDATE {self._table} SET position = NULL, snapshot = NULL, is_complete = false"
            " WHERE sync_name = $1",
            sync_name,
        )

    async def finish_run(
        self, conn: Conn, sync_name: str, run_id: str, status: str, error: str | None
    ) -> None:
        async with conn.transaction():
            await conn.execute(
                f"UPDATE {self._runs} SET status = $2, error = $3, finished_at = clock_timestamp()"
                " WHERE run_id = $1",
                run_id,
                status,
                error,
            )
            if error is not None:
                await conn.execute(
                    f"UPDATE {self._table} SET last_error = $2 WHERE sync_name = $1",
                    sync_name,
                    error,
                )

    async def reset(self, conn: Conn, sync_name: str) -> None:
        """Start the sync over from the beginning; the target table's rows are left alone."""
        await self._ensure_row(conn, sync_name)
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_key(sync_name)):
            raise AlreadyRunning(
                await self._held_message(conn, sync_name) + "; reset refused while it runs"
            )
        try:
            await conn.execute(
                f"UPDATE {self._table} SET position = NULL, snapshot = NULL, current_offset = 0,"
                " total_synced = 0, last_sync_at = NULL, is_complete = false,"
                " backfill_columns = '{}', backfill_position = NULL, since = NULL,"
                " last_error = NULL, reset_at = clock_timestamp() WHERE sync_name = $1",
                sync_name,
            )
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", self.lock_key(sync_name))

    async def progress(self, conn: Conn) -> dict[str, tuple[Position | None, datetime | None]]:
        """Every sync's committed position and when its last successful run ended, whichever
        process ran it: what freshness is measured from."""
        rows = await conn.fetch(
            f"SELECT sync_name, position, (SELECT finished_at FROM {self._runs} AS r"
            "  WHERE r.sync_name = s.sync_name AND r.status = 'succeeded'"
            "  ORDER BY r.started_at DESC LIMIT 1)"
            f" FROM {self._table} AS s"
        )
        return {row[0]: (_position_from_json(row[1]), row[2]) for row in rows}

    async def runs(self, conn: Conn, sync_name: str, limit: int) -> list[RunRecord]:
        rows = await conn.fetch(
            f"SELECT run_id, sync_name, trigger, started_at, finished_at, status, batches,"
            f" rows_read, rows_written, rows_unchanged, values_cleaned, error,"
            f" extract(epoch FROM finished_at - started_at)::float8 AS duration_s FROM {self._runs}"
            " WHERE sync_name = $1 ORDER BY started_at DESC LIMIT $2",
            sync_name,
            limit,
        )
        return [RunRecord(**dict(row)) for row in rows]

    async def schema_changes(self, conn: Conn, sync_name: str, limit: int) -> list[SchemaChange]:
        """The sync's latest changes of source columns, newest first."""
        rows = await conn.fetch(
            f"SELECT at, run_id, column_name, change, old_type, new_type, action"
            f" FROM {quote_ident(self.schema)}.schema_changes"
            " WHERE sync_name = $1 ORDER BY at DESC, id DESC LIMIT $2",
            sync_name,
            limit,
        )
        return [SchemaChange(**dict(row)) for row in rows]


def _position_from_json(value: Any) -> Position | None:
    """Positions are JSON text (the json type, not jsonb), which keeps any string,
    NUL characters included, exactly as it was written."""
    if value is None:
        return None
    return tuple(json.loads(value))

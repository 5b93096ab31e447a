"""The chunks of a parallel load, kept in the state schema: plan, claims, leases, fencing.

A load splits the source's keys into ranges once, under the sync's lock, and
stores them with the cursor value it read up to. Workers of any process then
claim chunks one at a time. A claim gives the chunk a new fencing token and a
lease; every batch the worker commits renews the lease and checks the token in
the batch's own transaction, so a worker that lost its chunk (it stalled past
the lease, and another took the chunk over) has its batch rolled back, rows and
all, and can never write twice. A chunk taken over goes on after the last key
its earlier worker committed. The load is done when the table says no chunk is
left undone, whoever finished last.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta

from syncd.errors import SyncdError
from syncd.identifiers import quote_ident
from syncd.pg import Conn
from syncd.sources import LoadPlan, Position
from syncd.state import sql_text


def instance() -> str:
    """This process, as chunk records and log events name it: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Fenced(SyncdError):
    """Another worker took the chunk over: this worker's batch was rolled back."""


@dataclass(frozen=True)
class Load:
    load_id: str
    since: str | None
    snapshot: str | None


@dataclass(frozen=True)
class Claim:
    chunk: int
    after: Position | None
    """Where reading starts: the last key committed in the chunk, else its lower bound."""
    until: Position | None
    token: int
    reclaimed: bool
    """The chunk was taken from a worker whose lease ran out."""
    previous_owner: str | None


@dataclass(frozen=True)
class Progress:
    """How far a sync's load has come, over every worker of every process."""

    chunks: int
    done: int
    running: int
    rows_read: int
    instances: int
    """Processes that committed batches of this load."""


class ChunkStore:
    """Reads and writes the chunk tables in ``schema``; every method takes the connection."""

    def __init__(self, schema: str) -> None:
        self._loads = f"{quote_ident(schema)}.loads"
        self._chunks = f"{quote_ident(schema)}.chunks"
        self._state = f"{quote_ident(schema)}.sync_state"
        self._runs = f"{quote_ident(schema)}.runs"
        self._claim = sql_text("chunk_claim.sql", schema)
        self._commit = sql_text("chunk_commit.sql", schema)

    async def unfinished(self, conn: Conn, sync_name: str) -> Load | None:
        """The sync's load in progress, if one is."""
        row = await conn.fetchrow(
            f"SELECT load_id, since, snapshot FROM {self._loads}"
            " WHERE sync_name = $1 AND finished_at IS NULL",
            sync_name,
        )
        return None if row is None else Load(row[0], row[1], row[2])

    async def plan(self, conn: Conn, sync_name: str, plan: LoadPlan) -> Load:
        """Store a new load of ``plan``'s ranges in place of any earlier one."""
        load = Load(uuid.uuid4().hex, plan.since, plan.snapshot)
        lowers: list[Position | None] = [None, *plan.bounds]
        uppers: list[Position | None] = [*plan.bounds, None]
        async with conn.transaction():
            await conn.execute(f"DELETE FROM {self._chunks} WHERE sync_name = $1", sync_name)
            await conn.execute(
                f"INSERT INTO {self._loads} (sync_name, load_id, since, snapshot, planned_by)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (sync_name) DO UPDATE"
                " SET load_id = $2, since = $3, snapshot = $4, planned_by = $5,"
                " planned_at = clock_timestamp(), finished_at = NULL",
                sync_name,
                load.load_id,
                load.since,
                load.snapshot,
                instance(),
            )
            await conn.executemany(
                f"INSERT INTO {self._chunks} (sync_name, chunk, load_id, lower_bound, upper_bound)"
                " VALUES ($1, $2, $3, $4::json, $5::json)",
                [
                    (sync_name, number, load.load_id, _json(lower), _json(upper))
                    for number, (lower, upper) in enumerate(zip(lowers, uppers, strict=True))
                ],
            )
        return load

    async def claim(self, conn: Conn, sync_name: str, load: Load, lease: timedelta) -> Claim | None:
        """The next chunk nobody works on, now this worker's; None when there is none."""
        row = await conn.fetchrow(self._claim, sync_name, load.load_id, instance(), lease)
        if row is None:
            return None
        return Claim(
            chunk=row[0],
            after=_position(row[3]) or _position(row[1]),
            until=_position(row[2]),
            token=row[4],
            reclaimed=row[5],
            previous_owner=row[6],
        )

    async def record(
        self,
        conn: Conn,
        sync_name: str,
        claim: Claim,
        lease: timedelta,
        end: Position,
        rows_read: int,
        rows_written: int,
    ) -> None:
        """Record a batch of the claimed chunk inside its transaction, renewing the lease;
        raise Fenced, which rolls the batch back, if the chunk is no longer this claim's."""
        held = await conn.fetchval(
            self._commit,
            sync_name,
            claim.chunk,
            _json(end),
            rows_read,
            rows_written,
            lease,
            claim.token,
        )
        if held is None:
            raise Fenced(f"chunk {claim.chunk} of sync {sync_name!r} was taken over")

    async def finish(self, conn: Conn, sync_name: str, claim: Claim) -> bool:
        """Mark the claimed chunk done; False if it was taken over meanwhile."""
        status = await conn.execute(
            f"UPDATE {self._chunks} SET status = 'done', lease_until = NULL,"
            " finished_at = clock_timestamp()"
            " WHERE sync_name = $1 AND chunk = $2 AND token = $3 AND status = 'running'",
            sync_name,
            claim.chunk,
            claim.token,
        )
        return status == "UPDATE 1"

    async def release(self, conn: Conn, sync_name: str, claim: Claim) -> None:
        """Give an unfinished chunk back at once, for anyone to go on with."""
        await conn.execute(
            f"UPDATE {self._chunks} SET status = 'pending', lease_until = NULL"
            " WHERE sync_name = $1 AND chunk = $2 AND token = $3 AND status = 'running'",
            sync_name,
            claim.chunk,
            claim.token,
        )

    async def next_expiry(self, conn: Conn, sync_name: str, load: Load) -> float | None:
        """Seconds until another worker's lease runs out, when chunks are left but none
        is free; None once every chunk is done."""
        row = await conn.fetchrow(
            f"SELECT count(*) FILTER (WHERE status <> 'done'),"
            " greatest(extract(epoch FROM min(lease_until) FILTER (WHERE status = 'running')"
            " - clock_timestamp()), 0)::float8"
            f" FROM {self._chunks} WHERE sync_name = $1 AND load_id = $2",
            sync_name,
            load.load_id,
        )
        assert row is not None
        if not row[0]:
            return None
        return float(row[1] or 0.0)

    async def finish_load(
        self,
        conn: Conn,
        sync_name: str,
        load: Load,
        run_id: str,
        batches: int,
        rows_read: int,
        rows_written: int,
    ) -> None:
        """Every chunk is done: the sync reads on from the load's cursor value. The run
        ``run_id`` counts the batches and rows its own workers committed."""
        async with conn.transaction():
            await conn.execute(
                f"UPDATE {self._runs} SET batches = batches + $2, rows_read = rows_read + $3,"
                " rows_written = rows_written + $4, rows_unchanged = rows_unchanged + $3 - $4"
                " WHERE run_id = $1",
                run_id,
                batches,
                rows_read,
                rows_written,
            )
            await conn.execute(
                f"UPDATE {self._loads} SET finished_at = clock_timestamp(), snapshot = NULL"
                " WHERE sync_name = $1 AND load_id = $2",
                sync_name,
                load.load_id,
            )
            await conn.execute(
                f"UPDATE {self._state} SET since = $2, position = NULL, snapshot = NULL,"
                " is_complete = true, last_sync_at = clock_timestamp(), last_error = NULL,"
                " current_offset = current_offset + (SELECT sum(rows_read) FROM"
                f" {self._chunks} WHERE sync_name = $1),"
                " total_synced = total_synced + (SELECT sum(rows_written) FROM"
                f" {self._chunks} WHERE sync_name = $1)"
                " WHERE sync_name = $1",
                sync_name,
                load.since,
            )

    async def progress(self, conn: Conn, sync_name: str | None = None) -> dict[str, Progress]:
        """Each sync's load in progress, or its last one; only ``sync_name``'s if given."""
        rows = await conn.fetch(
            "SELECT sync_name, count(*), count(*) FILTER (WHERE status = 'done'),"
            " count(*) FILTER (WHERE status = 'running'), coalesce(sum(rows_read), 0)::bigint,"
            f" (SELECT count(DISTINCT worker) FROM {self._chunks} AS each,"
            "  unnest(each.workers) AS worker WHERE each.sync_name = c.sync_name)"
            f" FROM {self._chunks} AS c WHERE $1::text IS NULL OR sync_name = $1"
            " GROUP BY sync_name",
            sync_name,
        )
        return {row[0]: Progress(*row[1:]) for row in rows}


def _json(position: Position | None) -> str | None:
    return None if position is None else json.dumps(list(position))


def _position(text: str | None) -> Position | None:
    return None if text is None else tuple(json.loads(text))

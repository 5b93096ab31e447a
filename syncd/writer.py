"""A run's writing connection to the target: it holds the sync's lock, is opened again
after a loss, and records how the run ended even when the run itself failed."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import asyncpg
import structlog

from syncd import retry
from syncd.runs import RunRequest, RunResult

if TYPE_CHECKING:
    from syncd.engine import Engine

log = structlog.get_logger("syncd.engine")

CLOSE_S = 10.0
"""How long the run's final bookkeeping may take before it is given up on."""


class RunWriter:
    """The target connection that holds the sync's lock and writes its batches."""

    def __init__(self, engine: Engine, sync_name: str, request: RunRequest) -> None:
        self._engine = engine
        self._sync_name = sync_name
        self._request = request
        self._conn: asyncpg.Connection | None = None
        self._claimed = False
        """Whether this run ever held the lock, and so has a run record to finish."""

    @property
    def conn(self) -> asyncpg.Connection:
        assert self._conn is not None
        return self._conn

    @property
    def lost(self) -> bool:
        return self._conn is None or self._conn.is_closed()

    async def ensure_open(self) -> bool:
        """Connect and take the sync's lock, again after a lost connection; the first
        time, also bring the state schema up to date and record the run, and say so."""
        if not self.lost:
            return False
        await self._drop()
        first = not self._claimed
        store = self._engine.store
        conn = await self._engine.connect_target()
        if self._request.part is not None:
            self._conn = conn  # a part's reader holds no lock and keeps no run record
            return False
        try:
            if first:
                await store.migrate(conn)
            await store.claim(conn, self._sync_name, self._request.run_id)
            if first:
                await store.start_run(
                    conn, self._sync_name, self._request.run_id, self._request.trigger
                )
        except BaseException:
            await self._engine.connections.give_back_target(conn, clean=False)
            raise
        self._conn, self._claimed = conn, True
        return first

    async def discard_if_unusable(self, failure: Exception) -> None:
        """Drop the connection (and the lock with it) if the failure left it untrustworthy:
        still in a transaction because the rollback failed too, or with asyncpg's protocol
        in a confused state. The next attempt then reconnects and claims the lock again."""
        conn = self._conn
        if conn is None or conn.is_closed():
            return
        if conn.is_in_transaction() or isinstance(failure, retry.UNUSABLE_CONNECTION):
            await self._drop()

    async def close(self, result: RunResult) -> None:
        """Record how the run ended and let the lock go. Never raises: a failure here is
        logged, and must not take the place of the run's own outcome."""
        try:
            async with asyncio.timeout(CLOSE_S):
                await self._finish(result)
        except Exception as exc:
            log.warning("run_record_not_saved", error=self._engine.describe_error(exc))
        finally:
            await self._drop()

    async def _finish(self, result: RunResult) -> None:
        if not self._claimed:
            return
        try:
            await self._record(result)
        except Exception as exc:
            if self._conn is None or not retry.is_retryable(exc):
                raise
            # The session died under the run before it knew (a terminated backend it has not
            # read of yet): the record goes once more on a fresh one.
            await self._drop()
            await self._record(result)

    async def _record(self, result: RunResult) -> None:
        store = self._engine.store
        conn = self._conn
        if conn is None or conn.is_closed() or conn.is_in_transaction():
            await self._drop()
            conn = self._conn = await self._engine.connect_target()
        await store.finish_run(conn, self._sync_name, result.run_id, result.status, result.error)
        await store.release(conn, self._sync_name, result.run_id)
        # The lock is released and no transaction is open: the session may serve again.
        self._conn = None
        await self._engine.connections.give_back_target(conn, clean=True)

    async def _drop(self) -> None:
        """Give the connection up as unusable: it is closed, and the lock goes with it."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._engine.connections.give_back_target(conn, clean=False)

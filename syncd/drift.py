"""A run's part in schema drift: it tells what the source's columns did, keeps each
change in the history, and remembers the columns it saw.

What a change leads to is the policy's, decided in ``syncd.schema``; this module is
what a run does with that decision, on its target connection.
"""

from __future__ import annotations

import structlog

from syncd import schema
from syncd.config import SyncConfig
from syncd.pg import Conn
from syncd.sources import Shape
from syncd.state import StateStore, SyncState

log = structlog.get_logger("syncd.engine")


class RunDrift:
    """One run's dealings with the source's columns."""

    def __init__(self, store: StateStore, sync_name: str, sync: SyncConfig, run_id: str) -> None:
        self._store = store
        self._name = sync_name
        self._sync = sync
        self._run_id = run_id

    async def follow(self, conn: Conn, shape: Shape, state: SyncState) -> schema.Followed:
        """What the policy makes of the columns' changes since the last run; each change
        is logged, and, when the policy refuses one, kept in the history at once, since
        the refused run writes nothing else."""
        if state.source_columns is None:  # the first run to look: nothing to compare with
            return schema.Followed()
        followed = schema.follow(
            state.source_columns,
            shape,
            self._sync.schema_changes,
            state.ignored_columns,
            state.dropped_columns,
        )
        for change in followed.changes:
            log.warning(
                "schema_change",
                column=change.column,
                change=change.change,
                old_type=change.old_type,
                new_type=change.new_type,
                action=change.action,
            )
        for name in followed.ignored:
            if name not in {change.column for change in followed.changes}:
                log.info("schema_change", column=name, change="added", action="ignored")
        if followed.refused:
            await self._record(conn, followed)
        return followed

    async def save(
        self, conn: Conn, shape: Shape, state: SyncState, followed: schema.Followed
    ) -> None:
        """Remember the columns seen, in the transaction that altered the target."""
        columns = schema.columns_of(shape)
        if columns == state.source_columns and not followed.changes:
            return
        backfill = followed.backfill
        if backfill and self._sync.cursor is None:
            # A sync without a cursor re-reads every row each pass: start the pass over.
            await self._store.restart_pass(conn, self._name)
            backfill = []
        await self._store.save_schema(
            conn,
            self._name,
            columns=columns,
            ignored=followed.ignored,
            dropped=followed.dropped,
            backfill=backfill,
        )
        await self._record(conn, followed)

    async def _record(self, conn: Conn, followed: schema.Followed) -> None:
        history = [(c.column, c.change, c.old_type, c.new_type, c.action) for c in followed.changes]
        await self._store.record_changes(conn, self._name, self._run_id, history)

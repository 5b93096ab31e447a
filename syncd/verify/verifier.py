"""One verify of one sync: open both databases, search, classify, repair if asked, and
record the outcome in the state schema."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import asyncpg

from syncd import pg
from syncd.config import Config
from syncd.sources import open_source
from syncd.state import StateStore
from syncd.target import DELETED_COLUMN, TargetTable
from syncd.verify import history, repair
from syncd.verify.classify import classify
from syncd.verify.compare import search
from syncd.verify.report import Repaired, Report
from syncd.verify.sides import Key, Side

CLOSE_S = 5.0
"""How long closing the target connection may take."""


async def verify(
    config: Config,
    sync_name: str | None,
    *,
    repair_too: bool = False,
    confirm_deletes: bool = False,
    verify_id: str | None = None,
) -> Report:
    """Compare the sync's source with its target, moving rows only where they differ;
    with ``repair_too``, make the target equal, holding the sync's lock as a run does."""
    name, sync = config.sync(sync_name)
    verify_id = verify_id or uuid.uuid4().hex
    started_at, began = datetime.now(UTC), time.monotonic()
    store = StateStore(config.target.state_schema)
    async with _target(config) as conn:
        await store.migrate(conn)
        async with (
            _locked(store, conn, name, verify_id, repair_too),
            open_source(config.sources[sync.source], sync) as source,
        ):
            shape = await source.describe()
            source_side = await source.comparison()
            table = TargetTable(sync.target, shape, sync.types)
            target_side = await table.comparison(conn)
            found = await search(source_side, target_side)
            # Read before the source is read again: see classify.
            state = await store.load(conn, name)
            position = state.position[0] if state.position and shape.cursor else None
            classified = await classify(source_side, target_side, found.differing, position)
            report = Report(name, found, classified, time.monotonic() - began)
            record = _Record(store.schema, name, verify_id, started_at, began, repair_too)
            if not repair_too:
                await record.write(conn, report)
                return report
            policy = repair.DeletePolicy.of(sync.verify, confirm_deletes)
            sides = (source_side, target_side)
            return await _repair(conn, table, sides, report, policy, record)


@contextlib.asynccontextmanager
async def _target(config: Config) -> AsyncIterator[asyncpg.Connection]:
    conn = await pg.connect_to(config.target)
    try:
        yield conn
    finally:
        try:
            await conn.close(timeout=CLOSE_S)
        except Exception:
            conn.terminate()


@contextlib.asynccontextmanager
async def _locked(
    store: StateStore, conn: asyncpg.Connection, name: str, verify_id: str, held: bool
) -> AsyncIterator[None]:
    """The sync's lock, for a repair: no run writes the target meanwhile, and a run or a
    repair already going refuses this one (AlreadyRunning)."""
    if not held:
        yield
        return
    await store.claim(conn, name, verify_id)
    try:
        yield
    finally:
        if not conn.is_closed() and not conn.is_in_transaction():
            await store.release(conn, name, verify_id)


@dataclass(frozen=True)
class _Record:
    """Where and as what a verify's outcome is recorded."""

    schema: str
    sync_name: str
    verify_id: str
    started_at: datetime
    began: float
    """When the verify began, on the monotonic clock, for its duration."""
    repair: bool

    async def write(self, conn: asyncpg.Connection, report: Report) -> None:
        await history.record(
            conn,
            self.schema,
            verify_id=self.verify_id,
            sync_name=self.sync_name,
            started_at=self.started_at,
            repair=self.repair,
            result=report.as_json(),
        )


async def _repair(
    conn: asyncpg.Connection,
    table: TargetTable,
    sides: tuple[Side, Side],
    report: Report,
    policy: repair.DeletePolicy,
    record: _Record,
) -> Report:
    """Copy what is missing or different; then, in one transaction with the verify's
    record, delete what is extra as the sync's policy says, unless a guard refuses."""
    source, target = sides
    keys = report.classified.keys
    await table.prepare(conn)
    copied = await repair.copy(conn, table, source, keys["missing"] + keys["different"])
    extra = keys["extra"]
    refused = None
    if extra and policy.mode != "off":
        found = report.search
        null_keys = await target.null_keys()
        refused = repair.refusal(
            policy, len(extra), found.source_rows, found.target_rows, null_keys
        )
        if refused is None and policy.mode == "soft":
            await table.add_deleted_column(conn)
    deleted = 0
    async with conn.transaction():
        if extra and policy.mode != "off" and refused is None:
            back = await repair.back_in_source(source, extra)
            if back:
                refused = f"{back} of the {len(extra)} rows to delete are in the source again"
            else:
                deleted = await _delete(conn, target, extra, policy.mode, record)
        report = replace(
            report,
            duration_s=time.monotonic() - record.began,
            repaired=Repaired(copied=copied, deleted=deleted, refused=refused),
            remaining=report.classified.differences - copied - deleted,
        )
        await record.write(conn, report)
    return report


async def _delete(
    conn: asyncpg.Connection, target: Side, keys: list[Key], mode: str, record: _Record
) -> int:
    deleted = 0
    marker = DELETED_COLUMN if mode == "soft" else None
    for start in range(0, len(keys), repair.CHUNK_KEYS):
        deleted += await target.remove(keys[start : start + repair.CHUNK_KEYS], marker)
    await history.log_deletes(
        conn,
        record.schema,
        verify_id=record.verify_id,
        sync_name=record.sync_name,
        keys=keys,
        mode=mode,
    )
    return deleted

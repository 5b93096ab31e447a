"""The sync engine: one run of one sync, from its saved position to the end of the source.

Every batch commits its rows, its new position and its counters in one target
transaction, so a crash anywhere leaves the target before or after a whole
batch. Fetching batch N+1 overlaps writing batch N through a one-slot queue,
which bounds memory by batch size. A lost connection is retried from the last
committed position; nothing else needs remembering.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg
import structlog

from syncd import pg, retry
from syncd.config import Config, SyncConfig
from syncd.errors import RetriesExhausted, SourceError, SyncdError
from syncd.redact import scrub
from syncd.sources import Batch, Position, SnapshotExpired, Source, Window, open_source
from syncd.state import StateStore, SyncState
from syncd.target import TargetTable

log = structlog.get_logger("syncd.engine")


def new_run_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class RunRequest:
    sync_name: str
    trigger: str = "cli"
    batch_size: int | None = None
    full_refresh: bool = False
    run_id: str = field(default_factory=new_run_id)


@dataclass
class RunResult:
    run_id: str
    sync_name: str
    status: str = "running"
    batches: int = 0
    rows_read: int = 0
    rows_written: int = 0
    error: str | None = None

    @property
    def rows_unchanged(self) -> int:
        return self.rows_read - self.rows_written


@dataclass(frozen=True)
class BatchReport:
    sync_name: str
    run_id: str
    rows: int
    rows_written: int
    position: Position | None
    duration_s: float
    run_rows_read: int
    run_rows_per_s: float


class RunObserver(Protocol):
    def run_started(self, sync_name: str, run_id: str, rows_estimate: int | None) -> None: ...

    def batch_committed(self, report: BatchReport) -> None: ...


class _StopRequested(Exception):
    pass


@dataclass(frozen=True)
class _Phase:
    window: Window
    pinned: Position | None = None
    """Stored instead of each batch's end while re-reading below the saved position."""
    final: bool = True


class Engine:
    """Runs syncs against one target; dependencies come in, nothing is global."""

    def __init__(
        self,
        config: Config,
        *,
        observer: RunObserver | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.config = config
        self.store = StateStore(config.target.state_schema)
        self._observer = observer
        self._stop = stop or asyncio.Event()

    async def connect_target(self) -> asyncpg.Connection:
        return await pg.connect(self.config.target.dsn, self.config.target.secret())

    async def run(self, request: RunRequest) -> RunResult:
        """Run one sync to the end of its source (or until asked to stop)."""
        name, sync = self.config.sync(request.sync_name)
        result = RunResult(run_id=request.run_id, sync_name=name)
        # Every log line of the run, ours and the libraries', carries these.
        structlog.contextvars.bind_contextvars(
            sync_name=name, run_id=request.run_id, trigger=request.trigger
        )
        try:
            async with self._claimed(name, sync, request, result) as writer:
                log.info("run_started", batch_size=request.batch_size or sync.batch_size)
                await self._run_with_retries(name, sync, request, result, writer)
        finally:
            structlog.contextvars.unbind_contextvars("sync_name", "run_id", "trigger")
        return result

    @asynccontextmanager
    async def _claimed(
        self, name: str, sync: SyncConfig, request: RunRequest, result: RunResult
    ) -> AsyncIterator[_Writer]:
        writer = _Writer(self, name)
        await writer.open(request.run_id, first=True)
        try:
            await self.store.start_run(writer.conn, name, request.run_id, request.trigger)
            try:
                yield writer
                result.status = "succeeded"
            except _StopRequested:
                result.status = "cancelled"
            except asyncio.CancelledError:
                result.status, result.error = "cancelled", "cancelled before the run finished"
                raise
            except BaseException as exc:
                result.status, result.error = "failed", self._describe_error(exc)
                log.error("run_failed", error=result.error, exc_info=True)
                if isinstance(exc, Exception) and not isinstance(exc, SyncdError):
                    raise SyncdError(result.error) from exc
                raise
        finally:
            # The last bookkeeping write must happen even while we are being cancelled.
            await asyncio.shield(writer.close(result))
        if result.status == "succeeded":
            log.info(
                "run_finished",
                rows_read=result.rows_read,
                rows_written=result.rows_written,
                rows_unchanged=result.rows_unchanged,
                batches=result.batches,
            )

    def _describe_error(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        if not isinstance(exc, SyncdError):
            text = f"{type(exc).__name__}: {text}"
        return scrub(text, self.config.secrets())

    async def _run_with_retries(
        self, name: str, sync: SyncConfig, request: RunRequest, result: RunResult, writer: _Writer
    ) -> None:
        attempt = 0
        lookback_done = False
        source_config = self.config.sources[sync.source]
        while True:
            batches_before = result.batches
            try:
                await writer.ensure_open(request.run_id)
                async with open_source(source_config, sync) as source:
                    lookback_done = await self._run_once(
                        name, sync, request, result, writer, source, lookback_done
                    )
                return
            except SnapshotExpired as exc:
                attempt += 1
                if attempt >= sync.retry.attempts:
                    raise RetriesExhausted(f"gave up after {attempt} attempts: {exc}") from exc
                log.warning("snapshot_expired", attempt=attempt, error=self._describe_error(exc))
                await self.store.restart_pass(writer.conn, name)
            except Exception as exc:
                # Errors raised while unwinding a dead connection are not always typed as
                # connection errors, but a closed writer says what happened all the same.
                if not (retry.is_retryable(exc) or writer.lost):
                    raise
                attempt = 1 if result.batches > batches_before else attempt + 1
                if attempt >= sync.retry.attempts:
                    raise RetriesExhausted(
                        f"gave up after {attempt} attempts: {self._describe_error(exc)}"
                    ) from exc
                wait = retry.delay(sync.retry, attempt)
                log.warning(
                    "retrying",
                    attempt=attempt,
                    delay_s=round(wait, 3),
                    error=self._describe_error(exc),
                )
                await asyncio.sleep(wait)

    async def _run_once(
        self,
        name: str,
        sync: SyncConfig,
        request: RunRequest,
        result: RunResult,
        writer: _Writer,
        source: Source,
        lookback_done: bool,
    ) -> bool:
        conn = writer.conn
        shape = await source.describe()
        table = TargetTable(sync.target, shape, sync.types)
        await table.prepare(conn)
        state = await self.store.load(conn, name)
        phases = _plan(state, sync, request.full_refresh and result.batches == 0, lookback_done)
        if self._observer is not None and result.batches == 0:
            estimate = await source.estimate_rows(phases[-1].window)
            self._observer.run_started(name, request.run_id, estimate)
        direct = await table.is_empty(conn)
        batch_size = request.batch_size or sync.batch_size
        for phase in phases:
            direct = await self._run_phase(
                name, request, result, conn, source, table, phase, batch_size, direct
            )
            lookback_done = True
        return lookback_done

    async def _run_phase(
        self,
        name: str,
        request: RunRequest,
        result: RunResult,
        conn: asyncpg.Connection,
        source: Source,
        table: TargetTable,
        phase: _Phase,
        batch_size: int,
        direct: bool,
    ) -> bool:
        queue: asyncio.Queue[Batch | BaseException | None] = asyncio.Queue(maxsize=1)

        async def fetch() -> None:
            try:
                async for batch in source.read(phase.window, batch_size):
                    await queue.put(batch)
                await queue.put(None)
            except Exception as exc:
                await queue.put(exc)

        fetcher = asyncio.create_task(fetch(), name=f"syncd-fetch-{name}")
        started = time.monotonic()
        run_rows_at_start = result.rows_read
        try:
            reached_end = False
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                reached_end = phase.final and item.rows < batch_size
                batch_started = time.monotonic()
                async with conn.transaction():
                    written, direct = await _write(table, conn, item, direct)
                    await self.store.commit_batch(
                        conn,
                        sync_name=name,
                        run_id=request.run_id,
                        position=phase.pinned or item.end,
                        rows_read=item.rows,
                        rows_written=written,
                        complete=reached_end,
                        snapshot=item.snapshot,
                        values_cleaned=item.values_cleaned,
                    )
                result.batches += 1
                result.rows_read += item.rows
                result.rows_written += written
                elapsed = time.monotonic() - started
                report = BatchReport(
                    sync_name=name,
                    run_id=request.run_id,
                    rows=item.rows,
                    rows_written=written,
                    position=phase.pinned or item.end,
                    duration_s=time.monotonic() - batch_started,
                    run_rows_read=result.rows_read,
                    run_rows_per_s=(result.rows_read - run_rows_at_start) / elapsed
                    if elapsed
                    else 0.0,
                )
                log.info(
                    "batch_committed",
                    rows=item.rows,
                    rows_written=written,
                    position=list(report.position or ()),
                    duration_ms=round(report.duration_s * 1000, 1),
                    rows_per_s=round(report.run_rows_per_s),
                )
                if self._observer is not None:
                    self._observer.batch_committed(report)
                if self._stop.is_set():
                    raise _StopRequested
            if phase.final and not reached_end:
                await self.store.mark_complete(conn, name)
        finally:
            fetcher.cancel()
            await asyncio.gather(fetcher, return_exceptions=True)
        return direct


async def _write(
    table: TargetTable, conn: asyncpg.Connection, batch: Batch, direct: bool
) -> tuple[int, bool]:
    try:
        return await table.write(conn, batch, direct=direct)
    except asyncpg.CardinalityViolationError:
        keys = ", ".join(table.shape.key)
        raise SourceError(
            f"the key ({keys}) is not unique in the source: one batch holds a key twice"
        ) from None


def _plan(
    state: SyncState, sync: SyncConfig, full_refresh: bool, lookback_done: bool
) -> list[_Phase]:
    """Where this attempt starts reading, as one or two keyset windows."""
    position = state.position
    if full_refresh or (sync.cursor is None and state.is_complete):
        position = None
    if position is None:
        return [_Phase(Window())]
    if sync.cursor is None:
        return [_Phase(Window(after=position, snapshot=state.snapshot))]
    if sync.lookback is not None and not lookback_done:
        # Re-read the lookback window up to the saved position without moving it back,
        # so a crash during the re-read repeats the same window instead of drifting.
        reread = Window(cursor_from=position[0], lookback=sync.lookback, until=position)
        return [_Phase(reread, pinned=position, final=False), _Phase(Window(after=position))]
    return [_Phase(Window(after=position))]


class _Writer:
    """The target connection that holds the sync's lock and writes its batches."""

    def __init__(self, engine: Engine, sync_name: str) -> None:
        self._engine = engine
        self._sync_name = sync_name
        self._conn: asyncpg.Connection | None = None

    @property
    def conn(self) -> asyncpg.Connection:
        assert self._conn is not None
        return self._conn

    async def open(self, run_id: str, *, first: bool) -> None:
        conn = await self._engine.connect_target()
        try:
            if first:
                await self._engine.store.migrate(conn)
            await self._engine.store.claim(conn, self._sync_name, run_id)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn

    @property
    def lost(self) -> bool:
        return self._conn is None or self._conn.is_closed()

    async def ensure_open(self, run_id: str) -> None:
        """After a lost connection, reconnect and take the lock again before writing."""
        if not self.lost:
            return
        self._conn = None
        await self.open(run_id, first=False)

    async def close(self, result: RunResult) -> None:
        store = self._engine.store
        conn = self._conn
        try:
            if conn is None or conn.is_closed() or conn.is_in_transaction():
                if conn is not None:
                    conn.terminate()
                conn = self._conn = await self._engine.connect_target()
            await store.finish_run(
                conn, self._sync_name, result.run_id, result.status, result.error
            )
            await store.release(conn, self._sync_name, result.run_id)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("run_record_not_saved", error=self._engine._describe_error(exc))
        finally:
            if conn is not None:
                await conn.close(timeout=5)

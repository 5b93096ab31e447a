"""The sync engine: one run of one sync, from its saved position to the end of the source.

Every batch commits its rows, its new position and its counters in one target
transaction, so a crash anywhere leaves the target before or after a whole
batch. Fetching batch N+1 overlaps writing batch N through a one-slot queue,
which bounds memory by batch size. A lost connection is retried from the last
committed position; nothing else needs remembering.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace

import asyncpg
import structlog

from syncd import handoff, retry, schema
from syncd.chunks import ChunkStore
from syncd.config import Config, SyncConfig
from syncd.drift import RunDrift
from syncd.errors import RetriesExhausted, SourceError, SyncdError, TargetError
from syncd.freshness import kind_of_cursor
from syncd.load import LoadObserver, ParallelLoad
from syncd.parts import Part
from syncd.phases import Phase, after_load, clock_fall_back, plan_phases, rows_without_cursor
from syncd.pools import Connector, OwnConnections
from syncd.redact import scrub
from syncd.runs import BatchReport, RunObserver, RunRequest, RunResult
from syncd.sources import (
    Batch,
    Limits,
    PlansLoads,
    Position,
    Shape,
    SnapshotExpired,
    Source,
    Window,
)
from syncd.state import StateStore
from syncd.target import DirectCopyConflict, TargetTable
from syncd.writer import RunWriter

log = structlog.get_logger("syncd.engine")

FETCHER_UNWIND_S = 1.0
"""How long a cancelled fetcher may take to unwind before its source connection is
aborted under it (and as long again after that)."""


class _StopRequested(Exception):
    pass


class Engine:
    """Runs syncs against one target; dependencies come in, nothing is global."""

    def __init__(
        self,
        config: Config,
        *,
        observer: RunObserver | None = None,
        stop: asyncio.Event | None = None,
        connections: Connector | None = None,
    ) -> None:
        self.config = config
        self.store = StateStore(config.target.state_schema)
        self.observer = observer
        self.stop = stop or asyncio.Event()
        self.connections = connections or OwnConnections(config)
        """The daemon's pools, or by default connections of the run's own."""

    async def connect_target(self) -> asyncpg.Connection:
        return await self.connections.take_target()

    def describe_error(self, exc: BaseException) -> str:
        """An error as people should read it: typed when unexpected, never with a secret."""
        text = str(exc) or type(exc).__name__
        if not isinstance(exc, SyncdError):
            text = f"{type(exc).__name__}: {text}"
        return scrub(text, self.config.secrets())

    async def run(self, request: RunRequest) -> RunResult:
        """Run one sync to the end of its source (or until asked to stop)."""
        name, sync = self.config.sync(request.sync_name)
        run = _Run(self, name, sync, request)
        # Every log line of the run, ours and the libraries', carries these.
        structlog.contextvars.bind_contextvars(
            sync_name=name, run_id=request.run_id, trigger=request.trigger
        )
        try:
            await run.execute()
        finally:
            structlog.contextvars.unbind_contextvars("sync_name", "run_id", "trigger")
        return run.result

    async def run_part(self, request: RunRequest, part: Part, observer: RunObserver) -> RunResult:
        """Read one part of ``request``'s sync in a run of its own."""
        engine = Engine(
            self.config, observer=observer, stop=self.stop, connections=self.connections
        )
        own = RunRequest(
            request.sync_name, request.trigger, request.batch_size, run_id=request.run_id, part=part
        )
        return await engine.run(own)


class _Run:
    """One run of one sync: its request, its progress so far and its target connection."""

    def __init__(self, engine: Engine, name: str, sync: SyncConfig, request: RunRequest) -> None:
        self.engine = engine
        self.store = engine.store
        self.name = name
        self.sync = sync
        self.request = request
        self.limits = Limits(rows=request.batch_size or sync.batch_size, bytes=sync.batch_bytes)
        self.result = RunResult(run_id=request.run_id, sync_name=name)
        self.writer = RunWriter(engine, name, request)
        self.started = time.monotonic()
        self.lookback_done = False
        self.direct_allowed = True
        self.rows_estimate: int | None = None

    async def execute(self) -> None:
        result = self.result
        failure: BaseException | None = None
        try:
            await self._with_retries()
            result.status = "succeeded"
        except _StopRequested:
            result.status = "cancelled"
        except asyncio.CancelledError:
            result.status, result.error = "cancelled", "cancelled before the run finished"
            raise
        except BaseException as exc:
            result.status, result.error = "failed", self.engine.describe_error(exc)
            failure = exc
            if isinstance(exc, Exception) and not isinstance(exc, SyncdError):
                raise SyncdError(result.error) from exc
            raise
        finally:
            try:
                # The last bookkeeping write must happen even while we are being cancelled.
                await asyncio.shield(self.writer.close(result))
            finally:
                # Told after the record, as run_finished is: whoever reads the log and then
                # the runs table finds the run ended there too.
                if failure is not None and self.request.part is None:
                    log.error("run_failed", error=result.error, exc_info=failure)
        # A part is its run's: the run that leads or helps the load tells how that ended.
        if result.status == "succeeded" and self.request.part is None:
            log.info(
                "run_finished",
                rows_read=result.rows_read,
                rows_written=result.rows_written,
                rows_unchanged=result.rows_unchanged,
                batches=result.batches,
            )

    async def _with_retries(self) -> None:
        policy = self.sync.retry
        source_config = self.engine.config.sources[self.sync.source]
        attempt = 0
        while True:
            batches_before = self.result.batches
            try:
                if await self.writer.ensure_open():
                    log.info(
                        "run_started", batch_size=self.limits.rows, batch_bytes=self.limits.bytes
                    )
                async with self.engine.connections.open_source(self.sync, source_config) as source:
                    await self._attempt(source)
                return
            except DirectCopyConflict:
                # Not a failure: the batch is written again by upsert, from where it began.
                self.direct_allowed = False
            except SnapshotExpired as exc:
                if self.request.part is not None:
                    # Any snapshot will do for a part: the sync reads on from the load's
                    # cursor value afterwards, which catches what changed since.
                    log.warning("snapshot_lost", error=self.engine.describe_error(exc))
                    part = self.request.part
                    window = replace(part.window, snapshot=None)
                    self.request = replace(self.request, part=replace(part, window=window))
                    continue
                attempt += 1
                if attempt >= policy.attempts:
                    raise RetriesExhausted(f"gave up after {attempt} attempts: {exc}") from exc
                log.warning(
                    "snapshot_expired", attempt=attempt, error=self.engine.describe_error(exc)
                )
                await self.store.restart_pass(self.writer.conn, self.name)
            except Exception as exc:
                # Errors raised while unwinding a dead connection are not always typed as
                # connection errors, but a closed writer says what happened all the same.
                # Our own errors say what they mean.
                if isinstance(exc, SyncdError) or not (retry.is_retryable(exc) or self.writer.lost):
                    raise
                await self.writer.discard_if_unusable(exc)
                # A streak of failures counts; progress in between starts a new streak.
                attempt = 1 if self.result.batches > batches_before else attempt + 1
                error = self.engine.describe_error(exc)
                if attempt >= policy.attempts:
                    raise RetriesExhausted(f"gave up after {attempt} attempts: {error}") from exc
                wait = retry.delay(policy, attempt)
                log.warning("retrying", attempt=attempt, delay_s=round(wait, 3), error=error)
                await asyncio.sleep(wait)

    async def _attempt(self, source: Source) -> None:
        """Follow the source's columns, then read from the saved position to the end as
        one or two keyset phases, then go on with a backfill if one is under way."""
        conn = self.writer.conn
        shape = await source.describe()
        self.result.missing_index = shape.missing_index
        state = await self.store.load(conn, self.name)
        if self.request.part is not None:
            # Whoever planned the part followed the source's columns before handing it out.
            table = self._table(shape, state.ignored_columns, state.dropped_columns)
            await table.prepare(conn)
            part = self.request.part
            direct = part.direct and self.direct_allowed
            await self._phase(source, table, Phase(part.window, final=False), direct)
            return
        drift = RunDrift(self.store, self.name, self.sync, self.request.run_id)
        followed = await drift.follow(conn, shape, state)
        self.result.schema_changes += [change.action for change in followed.changes]
        if followed.refused:
            raise schema.refusal(followed.refused, self.sync.schema_changes)
        table = self._table(shape, followed.ignored, followed.dropped)
        async with conn.transaction():
            if await table.exists(conn):
                await table.follow(conn, followed.add, followed.widen)
            await drift.save(conn, shape, state, followed)
        await table.prepare(conn)
        state = await self.store.load(conn, self.name)
        full_refresh = self.request.full_refresh and self.result.batches == 0
        zone = self.engine.config.sources[self.sync.source].cursor_time_zone
        fall_back = clock_fall_back(zone, shape, state, announce=not self.lookback_done)
        phases = plan_phases(state, self.sync, full_refresh, self.lookback_done, fall_back)
        if self.rows_estimate is None:
            self.rows_estimate = await source.estimate_rows(phases[-1].window)
            if self.engine.observer is not None:
                self.engine.observer.run_started(self.name, self.request.run_id, self.rows_estimate)
        nulls = await rows_without_cursor(source, self.sync)
        direct = self.direct_allowed and await table.is_empty(conn)
        if (
            phases == [Phase(Window())]
            and isinstance(source, PlansLoads)
            and await self._load_in_parts(source, direct)
        ):
            state = await self.store.load(conn, self.name)
            phases, direct = after_load(state, self.sync), False
        for phase in phases:
            await self._phase(source, table, phase, direct)
            direct = False
            self.lookback_done = True
        state = await self.store.load(conn, self.name)
        if nulls:
            # Last, and final: the run is complete once these are read too.
            without_cursor = Window(by_key=True, null_cursor=True)
            phase = Phase(without_cursor, pinned=state.position, nulls=True)
            await self._phase(source, table, phase, direct=False)
        if state.backfill_columns:
            backfill = Phase(Window(after=state.backfill_position, by_key=True), backfill=True)
            await self._phase(source, table, backfill, direct=False)
        # One look at the end of the index, while the source is at hand: for freshness.
        self.result.source_newest = await source.newest_cursor()
        self.result.cursor_kind = kind_of_cursor(
            shape.column(shape.cursor).pg_type if shape.cursor else None
        )

    async def _load_in_parts(self, source: PlansLoads, direct: bool) -> bool:
        """Read the whole source as chunks, in parallel, if it holds more than one; say
        whether it did."""
        load = ParallelLoad(
            sync_name=self.name,
            sync=self.sync,
            chunks=ChunkStore(self.store.schema),
            conn=self.writer.conn,
            run_part=self._run_part,
            stop=self.engine.stop,
            observer=self.engine.observer,
        )
        try:
            finished = await load.lead(source, direct, self.rows_estimate)
        finally:
            self.result.batches += load.done.batches
            self.result.rows_read += load.done.rows_read
            self.result.rows_written += load.done.rows_written
        if self.engine.stop.is_set():
            raise _StopRequested
        if finished is None:
            return False
        await load.finish(finished, self.request.run_id)
        return True

    async def _run_part(self, part: Part) -> RunResult:
        """Read one part of this sync, reporting its batches as this run's."""
        observer = LoadObserver(
            self.engine.observer, self.request.run_id, self.started, lambda: self.rows_estimate
        )
        return await self.engine.run_part(self.request, part, observer)

    def _table(self, shape: Shape, ignored: list[str], dropped: list[str]) -> TargetTable:
        """The target table as this run writes it: without the columns it ignores, and with
        NULL in those the source dropped."""
        written = replace(shape, columns=tuple(c for c in shape.columns if c.name not in ignored))
        return TargetTable(
            self.sync.target,
            written,
            self.sync.types,
            nulled=dropped,
            wait_for_flush=self.engine.config.target.synchronous_commit == "on",
        )

    async def _phase(self, source: Source, table: TargetTable, phase: Phase, direct: bool) -> None:
        """Write one phase's batches while the next is fetched."""
        handed_over: asyncio.Queue[Batch] = asyncio.Queue(maxsize=1)
        fetcher = asyncio.create_task(
            self._fetch(source, phase.window, handed_over), name=f"syncd-fetch-{self.name}"
        )
        try:
            reached_end = False
            backfilled = 0
            previous_end: Position | None = None
            while (batch := await handoff.receive(handed_over, fetcher)) is not None:
                if batch.end == previous_end:
                    # The keyset did not move: the source compares positions otherwise than
                    # it orders rows (a bind of the wrong type, say), and would loop forever.
                    raise SourceError(
                        f"the source returned rows up to {list(batch.end)} twice: its"
                        " comparison of positions disagrees with its order"
                    )
                previous_end = batch.end
                reached_end = phase.final and batch.exhausted
                await self._commit(table, batch, phase, reached_end, direct)
                if self.engine.stop.is_set():
                    raise _StopRequested
                backfilled += phase.backfill
                if backfilled == self.request.backfill_batches and not reached_end:
                    self.result.backfill_remaining = True
                    return  # the rest in a later run
            if phase.backfill and not reached_end:
                await self.store.finish_backfill(self.writer.conn, self.name)
            elif phase.final and not reached_end:
                await self.store.mark_complete(self.writer.conn, self.name)
        except handoff.ReaderGone:
            # The writer lost its stream because the fetcher failed: that failure is the cause.
            await asyncio.wait({fetcher}, timeout=FETCHER_UNWIND_S)
            if fetcher.done() and not fetcher.cancelled() and fetcher.exception() is not None:
                raise fetcher.exception() from None  # type: ignore[misc]
            raise
        finally:
            await handoff.stop(fetcher, within=FETCHER_UNWIND_S, abort=source.abort)

    async def _fetch(
        self, source: Source, window: Window, handed_over: asyncio.Queue[Batch]
    ) -> None:
        """Read ``window`` batch by batch into ``handed_over``; errors end the task, and
        the writer, watching it, sees them at once."""
        rows_fetched = self.result.rows_read
        async with contextlib.aclosing(source.read(window, self.limits)) as batches:
            async for batch in batches:
                await handed_over.put(batch)
                # The estimate was only a guess: once it is passed, guess again at what is
                # left (here, between two batches, the source connection is free).
                rows_fetched += self.limits.rows
                if not batch.exhausted and (self.rows_estimate or 0) < rows_fetched:
                    remaining = await source.estimate_rows(window.beyond(batch.end))
                    self.rows_estimate = rows_fetched + (remaining or 0)

    async def _record(
        self, batch: Batch, position: Position | None, rows: int, written: int, complete: bool
    ) -> None:
        await self.store.commit_batch(
            self.writer.conn,
            sync_name=self.name,
            run_id=self.request.run_id,
            position=position,
            rows_read=rows,
            rows_written=written,
            complete=complete,
            snapshot=batch.snapshot,
            values_cleaned=batch.values_cleaned,
        )

    async def _commit(
        self, table: TargetTable, batch: Batch, phase: Phase, complete: bool, direct: bool
    ) -> None:
        """The batch's rows, position and counters in one transaction."""
        conn = self.writer.conn
        position = phase.pinned if phase.nulls else phase.pinned or batch.end
        began = time.monotonic()
        try:
            async with conn.transaction():
                rows, written = await table.write(
                    conn, batch, direct=direct, backfill=phase.backfill
                )
                if self.request.part is not None:
                    await self.request.part.ledger.record(conn, batch.end, rows, written)
                elif phase.backfill:
                    await self.store.commit_backfill(
                        conn,
                        sync_name=self.name,
                        run_id=self.request.run_id,
                        position=batch.end,
                        rows_read=rows,
                        rows_written=written,
                        done=batch.exhausted,
                    )
                else:
                    await self._record(batch, position, rows, written, complete)
        except TargetError as exc:
            raise TargetError(f"sync {self.name!r}: {exc}") from None
        if self.request.part is not None:
            # A retry after a lost connection goes on after this batch.
            part = self.request.part
            window = replace(part.window, after=batch.end)
            self.request = replace(self.request, part=replace(part, window=window))
        result = self.result
        result.batches += 1
        result.rows_read += rows
        result.rows_written += written
        elapsed = time.monotonic() - self.started
        if self.rows_estimate is not None:
            self.rows_estimate = max(self.rows_estimate, result.rows_read)
        report = BatchReport(
            sync_name=self.name,
            run_id=self.request.run_id,
            rows=rows,
            rows_written=written,
            position=position,
            duration_s=time.monotonic() - began,
            run_rows_read=result.rows_read,
            run_rows_per_s=result.rows_read / elapsed if elapsed else 0.0,
            rows_estimate=self.rows_estimate,
        )
        log.info(
            "batch_committed",
            rows=rows,
            rows_written=written,
            position=None if position is None else list(position),
            duration_ms=round(report.duration_s * 1000, 1),
            rows_per_s=round(report.run_rows_per_s),
        )
        if self.engine.observer is not None:
            self.engine.observer.batch_committed(report)

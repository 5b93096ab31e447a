"""A parallel load: an initial load or full refresh read as key ranges by several workers.

The run that holds the sync's lock plans the load, if none is under way, in a
snapshot exported from its source connection, which it keeps open until the
load is done so that every chunk reads the same data; a chunk read after the
snapshot is gone reads at a fresh one. Then its workers, and those of any other
process that finds the load (see ``help_load``), claim chunks until none is left
undone. The run then reads on from the cursor value the snapshot held, which
brings in whatever changed while the chunks were read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace

import structlog

from syncd.chunks import ChunkStore, Claim, Fenced, Load, instance
from syncd.config import SyncConfig
from syncd.handoff import task_group
from syncd.parts import Part
from syncd.pg import Conn
from syncd.runs import BatchReport, ChunkReport, ChunkState, RunObserver, RunResult
from syncd.sources import PlansLoads, Position, Window

log = structlog.get_logger("syncd.load")

POLL_S = 1.0
"""How often a worker with nothing to claim looks again while others' chunks are running."""
RELEASE_S = 5.0
"""How long giving an unfinished chunk back may take; its lease runs out anyway."""


@dataclass
class Done:
    """What this process's workers read and wrote."""

    batches: int = 0
    rows_read: int = 0
    rows_written: int = 0


class ParallelLoad:
    """One process's share of a sync's load: ``parallel`` workers and the claims they make."""

    def __init__(
        self,
        *,
        sync_name: str,
        sync: SyncConfig,
        chunks: ChunkStore,
        conn: Conn,
        run_part: Callable[[Part], Awaitable[RunResult]],
        stop: asyncio.Event,
        lead: bool = True,
        observer: RunObserver | None = None,
    ) -> None:
        self._name = sync_name
        self._sync = sync
        self._chunks = chunks
        self._conn = conn
        """The target connection claims go through, one statement at a time."""
        self._claiming = asyncio.Lock()
        self._run_part = run_part
        """Runs a part to its end and returns its RunResult; raises what the run raised."""
        self._stop = stop
        self._lead = lead
        """Whether this process leads the load, and so waits for others' chunks to end."""
        self._observer = observer
        """Told of each chunk this process's workers claim, commit, take over or lose."""
        self.done = Done()

    async def lead(
        self, source: PlansLoads, direct: bool, rows_estimate: int | None
    ) -> Load | None:
        """Plan a load, or find the one under way, and work it to its end; the load, or
        None when the source fits one chunk and is better read as one pass.

        The source's own estimate of its rows decides whether planning is worth its cost:
        counting the rows, or finding their quantiles, reads every key once.
        """
        async with AsyncExitStack() as planned:
            load = await self._chunks.unfinished(self._conn, self._name)
            if load is None and (rows_estimate or 0) <= self._sync.chunk_rows:
                return None
            if load is None:
                plan = await planned.enter_async_context(source.load_plan(self._sync.chunk_rows))
                if not plan.bounds:
                    return None
                load = await self._chunks.plan(self._conn, self._name, plan)
                log.info("load_planned", chunks=len(plan.bounds) + 1, since=plan.since)
            else:
                direct = False  # rows of earlier runs are there already
                log.info("load_resumed", load_id=load.load_id)
            await self.work(load, direct)
        return load

    async def work(self, load: Load, direct: bool) -> None:
        """Claim and read chunks with ``parallel`` workers until none is left undone, or
        until asked to stop."""
        async with task_group() as workers:
            for number in range(self._sync.parallel):
                workers.create_task(self._worker(load, direct), name=f"syncd-chunk-{number}")

    async def finish(self, load: Load, run_id: str) -> None:
        """Every chunk is done: the sync reads on from the load's cursor value, and the run
        that led the load counts what this process's workers did."""
        done = self.done
        await self._chunks.finish_load(
            self._conn, self._name, load, run_id, done.batches, done.rows_read, done.rows_written
        )
        log.info("load_finished", load_id=load.load_id, since=load.since)

    async def _worker(self, load: Load, direct: bool) -> None:
        while not self._stop.is_set():
            async with self._claiming:
                claim = await self._chunks.claim(
                    self._conn, self._name, load, self._sync.chunk_lease
                )
                wait = None
                if claim is None:
                    wait = await self._chunks.next_expiry(self._conn, self._name, load)
            if claim is not None:
                await self._read(load, claim, direct)
            elif wait is None or not self._lead:
                return  # every chunk is done, or others read those left
            else:
                await asyncio.sleep(min(max(wait, 0.05), POLL_S))

    async def _read(self, load: Load, claim: Claim, direct: bool) -> None:
        event = "chunk_reclaimed" if claim.reclaimed else "chunk_claimed"
        log.info(event, chunk=claim.chunk, instance=instance(), token=claim.token,
                 previous_owner=claim.previous_owner, after=_shown(claim.after))  # fmt: skip
        began = time.monotonic()
        window = Window(after=claim.after, until=claim.until, by_key=True, snapshot=load.snapshot)
        ledger = _ChunkLedger(self._chunks, self._name, claim, self._sync)
        part = Part(window, ledger, direct=direct and not claim.reclaimed)
        try:
            await self._tell(load, claim, "reclaimed" if claim.reclaimed else "claimed")
            result = await self._run_part(part)
        except Fenced:
            log.warning("chunk_lost", chunk=claim.chunk, instance=instance())
            await self._tell(load, claim, "lost")
            return
        except BaseException:
            await asyncio.shield(self._release(claim))
            raise
        self.done.batches += result.batches
        self.done.rows_read += result.rows_read
        self.done.rows_written += result.rows_written
        if result.status != "succeeded":
            await self._release(claim)
            return
        async with self._claiming:
            finished = await self._chunks.finish(self._conn, self._name, claim)
        if finished:
            elapsed = round(time.monotonic() - began, 3)
            log.info("chunk_committed", chunk=claim.chunk, instance=instance(),
                     rows=result.rows_read, duration_s=elapsed)  # fmt: skip
            await self._tell(load, claim, "committed", result.rows_read)
        else:
            log.warning("chunk_lost", chunk=claim.chunk, instance=instance())
            await self._tell(load, claim, "lost")

    async def _tell(
        self, load: Load, claim: Claim, state: ChunkState, rows: int | None = None
    ) -> None:
        """Tell the observer of a chunk's change, with the load's progress as it now is."""
        if self._observer is None:
            return
        async with self._claiming:
            progress = await self._chunks.progress(self._conn, self._name)
        report = ChunkReport(self._name, load.load_id, claim.chunk, state, instance(), rows,
                             progress[self._name])  # fmt: skip
        self._observer.chunk_changed(report)

    async def _release(self, claim: Claim) -> None:
        try:
            async with asyncio.timeout(RELEASE_S), self._claiming:
                await self._chunks.release(self._conn, self._name, claim)
        except Exception as exc:
            log.warning("chunk_not_released", chunk=claim.chunk, error=type(exc).__name__)


class LoadObserver:
    """Reports each part's batches to the run that leads the load, as that run's own."""

    def __init__(
        self,
        observer: RunObserver | None,
        run_id: str,
        started: float,
        rows_estimate: Callable[[], int | None],
    ) -> None:
        self._observer = observer
        self._run_id = run_id
        self._started = started
        self._rows_estimate = rows_estimate
        self._rows_read = 0

    def run_started(self, sync_name: str, run_id: str, rows_estimate: int | None) -> None:
        """A part's start is no news: the load's run has started already."""

    def batch_committed(self, report: BatchReport) -> None:
        self._rows_read += report.rows
        if self._observer is None:
            return
        elapsed = time.monotonic() - self._started
        self._observer.batch_committed(
            replace(
                report,
                run_id=self._run_id,
                run_rows_read=self._rows_read,
                run_rows_per_s=self._rows_read / elapsed if elapsed else 0.0,
                rows_estimate=self._rows_estimate(),
            )
        )

    def chunk_changed(self, report: ChunkReport) -> None:
        """A part reads one chunk and never loads in chunks itself: nothing comes here."""


class _ChunkLedger:
    """Records a chunk's batches through its claim: each renews the lease, or is refused."""

    def __init__(self, chunks: ChunkStore, sync_name: str, claim: Claim, sync: SyncConfig):
        self._chunks = chunks
        self._name = sync_name
        self._claim = claim
        self._lease = sync.chunk_lease

    async def record(self, conn: Conn, end: Position, rows_read: int, rows_written: int) -> None:
        await self._chunks.record(
            conn, self._name, self._claim, self._lease, end, rows_read, rows_written
        )


def _shown(position: Position | None) -> list[str | None] | None:
    return None if position is None else list(position)

"""The runner owns execution: every run, whoever asked for it, starts here.

Runs wait in one queue and at most ``max_concurrent_runs`` execute at once, each only while
its source has a connection to spare and no server is turning connections away. The queue
is fair across syncs, first come first started, and holds at most one pending run per sync:
a later trigger is folded into it. The runner gives single flight per sync within the
process (the engine's advisory lock gives it across processes), keeps what is live about
each run for the API, and drains on shutdown: queued runs never start, running syncs are
asked to stop once their batch in flight commits, and are cancelled only after a grace
period.

While runs wait, those going for longer than ``long_run`` hold at most all slots but one:
when a long run would take the last, it gives its slot up after its batch in flight
commits and queues again to continue where it stopped. A sync's ten-million-row initial
load therefore never keeps the others' small runs from their schedules.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from syncd.config import Config
from syncd.engine import Engine
from syncd.errors import AlreadyRunning, Busy, NotAccepting, SyncdError
from syncd.helping import help_load
from syncd.metrics import Metrics
from syncd.notify import Notifier
from syncd.pools import Connections
from syncd.runs import BatchReport, ChunkReport, RunRequest, RunResult, new_run_id
from syncd.subscribers import Subscribers

log = structlog.get_logger("syncd.runner")

RESUME = "resume"
"""The trigger of a run that continues one which gave its slot up."""
SEED_BATCH_SIZE = 1000
"""The batch size of an API start that names none, as the seed's API had it."""
BACKFILL_BATCHES = 20
"""Backfill batches a run does before it queues again behind the other syncs' runs: a
large table's new column is filled in without holding up anyone's schedule."""


@dataclass
class LiveRun:
    """A run that is queued or running; the same object all along, through its slices."""

    run_id: str
    sync_name: str
    trigger: str
    batch_size: int
    """The batch size the run uses: the one asked for, or the sync's own."""
    requested_batch_size: int | None
    full_refresh: bool
    queued_at: datetime
    state: Literal["queued", "running", "ended"] = "queued"
    started_at: datetime | None = None
    source: str | None = None
    """The source it reads, from when it started."""
    rows_read: int = 0
    rows_written: int = 0
    rows_per_second: float = 0.0
    rows_estimate: int | None = None
    position: list[str | None] | None = None
    task: asyncio.Task[RunResult] = field(init=False, repr=False)
    admitted: asyncio.Future[bool] = field(init=False, repr=False)
    """True once the run has a slot; False if it is never to start."""
    not_started_because: str = "syncd stopped before the run started"
    stop: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    """Set to have the run stop after its batch in flight: syncd stops, or the run yields."""
    yielding: bool = False
    started_monotonic: float = 0.0
    progressed_at: float = field(default_factory=time.monotonic, repr=False)
    """When the run last started or committed a batch (monotonic clock)."""
    stall_reported: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.admitted = asyncio.get_running_loop().create_future()

    def started(self, source: str) -> None:
        self.state, self.source = "running", source
        self.started_at = datetime.now(UTC)
        self.started_monotonic = self.progressed_at = time.monotonic()
        self.admitted.set_result(True)

    def continued(self) -> None:
        """Queue again as the run that continues this one, from where it stopped."""
        self.run_id, self.trigger, self.full_refresh = new_run_id(), RESUME, False
        self.state, self.started_at, self.queued_at = "queued", None, datetime.now(UTC)
        self.rows_read = self.rows_written = 0
        self.rows_per_second, self.rows_estimate, self.position = 0.0, None, None
        self.admitted = asyncio.get_running_loop().create_future()
        self.stop, self.yielding, self.stall_reported = asyncio.Event(), False, False


class Runner:
    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics,
        notifier: Notifier,
        connections: Connections | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._notifier = notifier
        self._connections = connections
        """The daemon's pools; without them, each run opens connections of its own."""
        self._accepting = True
        self._runs: dict[str, LiveRun] = {}
        """Every queued or running run, by sync."""
        self._queue: list[str] = []
        """The syncs whose run waits for a slot, first come first."""
        self._readmission: asyncio.TimerHandle | None = None
        self._last: dict[str, RunResult] = {}
        self.subscribers = Subscribers()
        """Whoever follows the runs and batches live: the event stream's pages."""

    @property
    def config(self) -> Config:
        return self._config

    def reconfigure(self, config: Config) -> None:
        """New runs use ``config``; runs already going keep the config they started with.
        Queued runs of syncs it no longer has never start."""
        self._config = config
        for name in [name for name in self._queue if name not in config.syncs]:
            self._queue.remove(name)
            live = self._runs[name]
            live.not_started_because = "the sync was removed from the configuration"
            live.admitted.set_result(False)
        self._admit()

    def live(self, sync_name: str) -> LiveRun | None:
        """The sync's run while it runs."""
        live = self._runs.get(sync_name)
        return live if live is not None and live.state == "running" else None

    def queued(self, sync_name: str) -> LiveRun | None:
        """The sync's run while it waits for a slot."""
        live = self._runs.get(sync_name)
        return live if live is not None and live.state == "queued" else None

    def queue_position(self, sync_name: str) -> int | None:
        """1 for the run that starts next, None for a sync with no run queued."""
        return self._queue.index(sync_name) + 1 if sync_name in self._queue else None

    def counts(self) -> dict[str, int]:
        running = sum(live.state == "running" for live in self._runs.values())
        return {
            "running": running,
            "queued": len(self._queue),
            "max_concurrent_runs": self._config.max_concurrent_runs,
        }

    def last_result(self, sync_name: str) -> RunResult | None:
        return self._last.get(sync_name)

    def trigger(
        self,
        sync_name: str | None,
        *,
        trigger: str,
        batch_size: int | None = None,
        full_refresh: bool = False,
    ) -> LiveRun:
        """Queue a run, started at once if a slot is free, and return it; raise Busy if the
        sync is already running. A sync already queued keeps its place and its run, which
        takes what this trigger asks for: its batch size, and a full refresh.

        Deliberately synchronous: nothing can interleave between the check and the
        registration, so concurrent triggers yield exactly one run.
        """
        if not self._accepting:
            raise NotAccepting()
        name, sync = self._config.sync(sync_name)
        live = self._runs.get(name)
        if live is not None and live.state == "running":
            raise Busy(f"sync {name!r} is already running (run {live.run_id})", run_id=live.run_id)
        if live is not None:
            if batch_size is not None:
                live.batch_size = live.requested_batch_size = batch_size
            live.full_refresh |= full_refresh
            log.debug("run_coalesced", sync_name=name, run_id=live.run_id, trigger=trigger)
            return live
        if batch_size is None and trigger == "http" and "batch_size" not in sync.model_fields_set:
            # The seed's API ran 1,000 rows a batch when asked for no size, and so does
            # this one; schedules and the command line use the sync's batch_size (10,000).
            batch_size = SEED_BATCH_SIZE
        live = LiveRun(
            run_id=new_run_id(),
            sync_name=name,
            trigger=trigger,
            batch_size=batch_size or sync.batch_size,
            requested_batch_size=batch_size,
            full_refresh=full_refresh,
            queued_at=datetime.now(UTC),
        )
        live.task = asyncio.create_task(self._run(live), name=f"syncd-run-{name}")
        self._runs[name] = live
        self._enqueue(live)
        return live

    def _enqueue(self, live: LiveRun) -> None:
        self._queue.append(live.sync_name)
        self._admit()
        if live.state == "queued":
            position = self.queue_position(live.sync_name)
            log.info("run_queued", sync_name=live.sync_name, run_id=live.run_id,
                     trigger=live.trigger, position=position, **self.counts())  # fmt: skip
            self.publish({"type": "run_queued", "sync_name": live.sync_name,
                           "run_id": live.run_id, "position": position})  # fmt: skip

    def _admit(self) -> None:
        if self._accepting and not self._backing_off():
            self._start_queued()
        self._metrics.runs_queued(len(self._queue))

    def _backing_off(self) -> bool:
        """While a server turns connections away, no run starts: each would only wait."""
        backoff = self._connections.backoff.remaining if self._connections else 0.0
        if backoff > 0 and self._readmission is None:
            self._readmission = asyncio.get_running_loop().call_later(backoff, self._readmit)
        return backoff > 0

    def _start_queued(self) -> None:
        """Start queued runs, oldest first, while a slot is free and their source has a
        connection to spare."""
        running = [live for live in self._runs.values() if live.state == "running"]
        for name in list(self._queue):
            if len(running) >= self._config.max_concurrent_runs:
                break
            source = self._config.syncs[name].source
            reading = sum(live.source == source for live in running)
            if reading >= self._config.sources[source].max_connections:
                continue  # its turn comes when a run of the same source ends
            self._queue.remove(name)
            live = self._runs[name]
            live.started(source)
            running.append(live)

    def _readmit(self) -> None:
        self._readmission = None
        self._admit()

    async def _run(self, live: LiveRun) -> RunResult:
        """The run's task: it waits for a slot, runs, and while it yields its slot to others,
        queues again; whatever ends it, it ends as a recorded outcome, never "running"."""
        earlier: RunResult | None = None
        """The slices before this one, summed, when the run gave its slot up."""
        try:
            while await live.admitted:
                result = await self._slice(live)
                if earlier is not None:
                    result = _summed(earlier, result)
                if not (live.yielding or result.backfill_remaining) or not self._accepting:
                    return result
                log.info("run_yielded", sync_name=live.sync_name, run_id=live.run_id,
                         ran_s=round(time.monotonic() - live.started_monotonic, 1),
                         reason="backfill" if result.backfill_remaining else "long run",
                         **self.counts())  # fmt: skip
                earlier = result
                live.continued()
                self._enqueue(live)
            never = RunResult(
                live.run_id, live.sync_name, "cancelled", error=live.not_started_because
            )
            return never if earlier is None else _summed(earlier, never)
        finally:
            if self._runs.get(live.sync_name) is live:
                del self._runs[live.sync_name]
            with contextlib.suppress(ValueError):
                self._queue.remove(live.sync_name)
            self._admit()

    async def _slice(self, live: LiveRun) -> RunResult:
        """One run of the engine, from the slot it was given until it ends."""
        name = live.sync_name
        request = RunRequest(
            sync_name=name,
            trigger=live.trigger,
            batch_size=live.requested_batch_size,
            full_refresh=live.full_refresh,
            run_id=live.run_id,
            backfill_batches=BACKFILL_BATCHES,
        )
        engine = Engine(
            self._config,
            observer=_Observer(self, live),
            stop=live.stop,
            connections=self._connections,
        )
        self._metrics.run_started(name)
        self.publish({"type": "run_started", "sync_name": name, "run_id": live.run_id})
        result = RunResult(run_id=request.run_id, sync_name=name)
        try:
            result = await engine.run(request)
        except AlreadyRunning as exc:
            # Another process runs the sync: if it is loading, its chunks are ours to share.
            helped = await help_load(engine, request)
            if helped is not None:
                result = helped
            else:
                result.status, result.error = "skipped", str(exc)
                log.info("run_skipped_busy", sync_name=name, reason=str(exc))
        except SyncdError as exc:
            result.status, result.error = "failed", str(exc)
        except asyncio.CancelledError:
            result.status = "cancelled"
            raise
        except Exception as exc:
            result.status, result.error = "failed", engine.describe_error(exc)
            log.error("run_failed", sync_name=name, run_id=request.run_id,
                      error=result.error, exc_info=True)  # fmt: skip
        finally:
            live.state = "ended"  # its slot is free
            self._last[name] = result
            self._metrics.run_finished(result)
            self._notifier.status(
                f"{result.sync_name}: {result.status}, {result.rows_read} rows read,"
                f" {result.rows_written} written"
            )
            self.publish(
                {"type": "run_finished", "sync_name": result.sync_name, "run_id": result.run_id,
                 "status": result.status, "error": result.error}
            )  # fmt: skip
        return result

    def healthy(self) -> bool:
        """False while any run has made no progress for longer than stall_timeout: every
        wait on a database is bounded, so such a run is stuck, and only a restart helps."""
        limit = self._config.stall_timeout.total_seconds()
        now = time.monotonic()
        stalled = [
            live
            for live in self._runs.values()
            if live.state == "running" and now - live.progressed_at > limit
        ]
        for live in stalled:
            if not live.stall_reported:
                live.stall_reported = True
                log.error(
                    "run_stalled",
                    sync_name=live.sync_name,
                    run_id=live.run_id,
                    idle_s=round(now - live.progressed_at),
                    stall_timeout_s=limit,
                )
        return not stalled

    async def wait(self, live: LiveRun) -> RunResult:
        """The run's result, once it has run; the run itself goes on if the waiter is cancelled."""
        return await asyncio.shield(live.task)

    async def drain(self, grace: float) -> None:
        """Start nothing new; let runs commit their batch in flight; cancel them after ``grace``."""
        self._accepting = False
        for name in self._queue:
            self._runs[name].admitted.set_result(False)
        self._queue.clear()
        self._metrics.runs_queued(0)
        for live in self._runs.values():
            live.stop.set()
        tasks = [live.task for live in self._runs.values()]
        if not tasks:
            return
        log.info("draining", runs=len(tasks), grace_s=grace)
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def publish(self, event: dict[str, Any]) -> None:
        # A batch's event says how far its run has come; a page's bar also needs the estimate
        # that this is measured against, which the run learnt after its run_started went out.
        # Subscribers may take the event when the run is over: the estimate is added now.
        if event["type"] == "batch_committed":
            live = self._runs[event["sync_name"]]  # a batch commits only while its run is live
            event = event | {"source_rows_estimate": live.rows_estimate}
        else:
            event = event | {"runs": self.counts()}  # for a page's count of runs and queue
        self.subscribers.send(event)

    def note_batch(self, live: LiveRun, report: BatchReport) -> None:
        live.progressed_at = time.monotonic()
        live.rows_estimate = report.rows_estimate
        live.rows_read = report.run_rows_read
        live.rows_written += report.rows_written
        live.rows_per_second = report.run_rows_per_s
        live.position = list(report.position) if report.position is not None else None
        self._metrics.batch_committed(report)
        self.publish(
            {"type": "batch_committed", "sync_name": live.sync_name, "run_id": live.run_id,
             "rows": report.rows, "run_rows_read": report.run_rows_read,
             "rows_per_second": round(report.run_rows_per_s, 1)}
        )  # fmt: skip
        if self._should_yield(live):
            live.yielding = True
            live.stop.set()  # the engine stops once this batch is done with

    def _should_yield(self, live: LiveRun) -> bool:
        """Whether ``live`` is a long run holding the one slot long runs must leave free
        while others wait. Whichever long run commits a batch first gives its slot up."""
        if not self._queue or live.stop.is_set():
            return False
        now = time.monotonic()
        limit = self._config.long_run.total_seconds()
        long_runs = [
            other
            for other in self._runs.values()
            if other.state == "running"
            and not other.stop.is_set()  # one giving its slot up already does not count
            and now - other.started_monotonic > limit
        ]
        return live in long_runs and len(long_runs) >= self._config.max_concurrent_runs


def _summed(before: RunResult, last: RunResult) -> RunResult:
    """A run's outcome over its slices: the last slice's, with every slice's rows."""
    return replace(
        last,
        batches=before.batches + last.batches,
        rows_read=before.rows_read + last.rows_read,
        rows_written=before.rows_written + last.rows_written,
        schema_changes=before.schema_changes + last.schema_changes,
    )


class _Observer:
    """Feeds one run's progress into the runner's live view."""

    def __init__(self, runner: Runner, live: LiveRun) -> None:
        self._runner = runner
        self._live = live

    def run_started(self, sync_name: str, run_id: str, rows_estimate: int | None) -> None:
        self._live.rows_estimate = rows_estimate

    def batch_committed(self, report: BatchReport) -> None:
        self._runner.note_batch(self._live, report)

    def chunk_changed(self, report: ChunkReport) -> None:
        self._runner.publish({"type": "chunk", "run_id": self._live.run_id} | asdict(report))

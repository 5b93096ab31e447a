"""The runner owns execution: every run, whoever asked for it, starts here.

It gives single flight per sync within the process (the engine's advisory lock
gives it across processes), keeps what is live about each run for the API, and
drains on shutdown: running syncs are asked to stop once their batch in flight
commits, and are cancelled only after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from syncd.config import Config
from syncd.engine import BatchReport, Engine, RunRequest, RunResult
from syncd.errors import AlreadyRunning, SyncdError, Unavailable
from syncd.metrics import Metrics
from syncd.notify import Notifier

log = structlog.get_logger("syncd.runner")


class Busy(SyncdError):
    """The sync is already running."""

    exit_code = 75

    def __init__(self, message: str | None = None, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


class NotAccepting(SyncdError):
    """syncd is shutting down and starts no new runs."""


@dataclass
class LiveRun:
    run_id: str
    sync_name: str
    trigger: str
    batch_size: int
    started_at: datetime
    rows_read: int = 0
    rows_written: int = 0
    rows_per_second: float = 0.0
    rows_estimate: int | None = None
    position: list[str | None] | None = None
    task: asyncio.Task[RunResult] = field(init=False, repr=False)
    progressed_at: float = field(default_factory=time.monotonic, repr=False)
    """When the run last started or committed a batch (monotonic clock)."""
    stall_reported: bool = field(default=False, repr=False)


class Runner:
    def __init__(self, config: Config, *, metrics: Metrics, notifier: Notifier) -> None:
        self._config = config
        self._metrics = metrics
        self._notifier = notifier
        self._stop = asyncio.Event()
        self._accepting = True
        self._live: dict[str, LiveRun] = {}
        self._last: dict[str, RunResult] = {}
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()

    @property
    def config(self) -> Config:
        return self._config

    def reconfigure(self, config: Config) -> None:
        """New runs use ``config``; runs already going keep the config they started with."""
        self._config = config

    def live(self, sync_name: str) -> LiveRun | None:
        return self._live.get(sync_name)

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
        """Start a run now and return at once; raise Busy if one is already going.

        Deliberately synchronous: nothing can interleave between the check and
        the registration, so concurrent triggers yield exactly one run.
        """
        if not self._accepting:
            raise NotAccepting()
        name, sync = self._config.sync(sync_name)
        running = self._live.get(name)
        if running is not None:
            raise Busy(
                f"sync {name!r} is already running (run {running.run_id})", run_id=running.run_id
            )
        request = RunRequest(
            sync_name=name, trigger=trigger, batch_size=batch_size, full_refresh=full_refresh
        )
        live = LiveRun(
            run_id=request.run_id,
            sync_name=name,
            trigger=trigger,
            batch_size=batch_size or sync.batch_size,
            started_at=datetime.now(UTC),
        )
        engine = Engine(self._config, observer=_Observer(self, live), stop=self._stop)
        live.task = asyncio.create_task(self._run(engine, request, live), name=f"syncd-run-{name}")
        self._live[name] = live
        self._metrics.run_started(name)
        self._publish({"type": "run_started", "sync_name": name, "run_id": live.run_id})
        return live

    async def _run(self, engine: Engine, request: RunRequest, live: LiveRun) -> RunResult:
        """The run's task: whatever ends it, it ends as a recorded outcome, never "running"."""
        result = RunResult(run_id=request.run_id, sync_name=request.sync_name)
        try:
            result = await engine.run(request)
        except AlreadyRunning as exc:
            result.status, result.error = "skipped", str(exc)
            log.info("run_skipped_busy", sync_name=request.sync_name, reason=str(exc))
        except SyncdError as exc:
            result.status, result.error = "failed", str(exc)
        except asyncio.CancelledError:
            result.status = "cancelled"
            raise
        except Exception as exc:
            result.status, result.error = "failed", engine.describe_error(exc)
            log.error(
                "run_failed",
                sync_name=request.sync_name,
                run_id=request.run_id,
                error=result.error,
                exc_info=True,
            )
        finally:
            del self._live[request.sync_name]
            self._last[request.sync_name] = result
            self._metrics.run_finished(result)
            self._notifier.status(
                f"{result.sync_name}: {result.status}, {result.rows_read} rows read,"
                f" {result.rows_written} written"
            )
            self._publish(
                {"type": "run_finished", "sync_name": result.sync_name, "run_id": result.run_id,
                 "status": result.status, "error": result.error}
            )  # fmt: skip
        return result

    def healthy(self) -> bool:
        """False while any run has made no progress for longer than stall_timeout: every
        wait on a database is bounded, so such a run is stuck, and only a restart helps."""
        limit = self._config.stall_timeout.total_seconds()
        now = time.monotonic()
        stalled = [live for live in self._live.values() if now - live.progressed_at > limit]
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
        """The run's result; the run itself goes on if the waiter is cancelled."""
        return await asyncio.shield(live.task)

    async def drain(self, grace: float) -> None:
        """Start nothing new; let runs commit their batch in flight; cancel them after ``grace``."""
        self._accepting = False
        self._stop.set()
        tasks = [live.task for live in self._live.values()]
        if not tasks:
            return
        log.info("draining", runs=len(tasks), grace_s=grace)
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def subscription(self, limit: int) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """Events about runs and batches, for live pages; slow readers miss events, not memory.

        At most ``limit`` subscriptions at once; one more is refused as Unavailable.
        """
        if len(self._subscribers) >= limit:
            raise Unavailable(
                f"{limit} event streams are open, as many as syncd serves; try again later"
            )
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=100)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    def _publish(self, event: dict[str, Any]) -> None:
        # A batch's event says how far its run has come; a page's bar also needs the estimate
        # that this is measured against, which the run learnt after its run_started went out.
        # Subscribers may take the event when the run is over: the estimate is added now.
        if event["type"] == "batch_committed":
            live = self._live[event["sync_name"]]  # a batch commits only while its run is live
            event = event | {"source_rows_estimate": live.rows_estimate}
        for queue in self._subscribers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(event)

    def note_batch(self, live: LiveRun, report: BatchReport) -> None:
        live.progressed_at = time.monotonic()
        live.rows_estimate = report.rows_estimate
        live.rows_read = report.run_rows_read
        live.rows_written += report.rows_written
        live.rows_per_second = report.run_rows_per_s
        live.position = list(report.position) if report.position is not None else None
        self._metrics.batch_committed(report)
        self._publish(
            {"type": "batch_committed", "sync_name": live.sync_name, "run_id": live.run_id,
             "rows": report.rows, "run_rows_read": report.run_rows_read,
             "rows_per_second": round(report.run_rows_per_s, 1)}
        )  # fmt: skip


class _Observer:
    """Feeds one run's progress into the runner's live view."""

    def __init__(self, runner: Runner, live: LiveRun) -> None:
        self._runner = runner
        self._live = live

    def run_started(self, sync_name: str, run_id: str, rows_estimate: int | None) -> None:
        self._live.rows_estimate = rows_estimate

    def batch_committed(self, report: BatchReport) -> None:
        self._runner.note_batch(self._live, report)

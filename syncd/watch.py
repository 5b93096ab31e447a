"""The daemon's watch on freshness: how far each sync's target is behind its source.

Every few seconds it reads, in one query to the target, each sync's committed position
and its last successful run, whichever process ran it. The source's newest cursor value
comes from the end of each run; while a sync is idle, the watch asks the source itself,
at most once per ``freshness_interval``, through the index, so that a sync nobody runs
still shows the rows piling up. What it finds goes to the metrics, to the API and, when
a sync turns stale or fresh again, to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from syncd.chunks import ChunkStore
from syncd.config import SyncConfig
from syncd.freshness import READ_BOUND_S, Freshness, freshness, read_newest
from syncd.metrics import Metrics
from syncd.pools import Connections
from syncd.redact import scrub
from syncd.runner import Runner
from syncd.runs import RunResult
from syncd.state import StateStore

log = structlog.get_logger("syncd.watch")

TICK_S = 2.0
"""How often the target's positions are read: one small query for every sync at once."""


@dataclass
class _Sync:
    """What the watch knows of one sync between looks."""

    source_newest: str | None = None
    cursor_kind: str | None = None
    kind_known: bool = False
    read_at: float | None = None
    """When ``source_newest`` was read (monotonic); None before the first look."""
    seen_result: RunResult | None = None
    read_error: str | None = None
    freshness: Freshness | None = None
    unknown_since: datetime | None = None
    """Since when the lag cannot be told: a first load is given max_lag before it is stale."""


class FreshnessWatch:
    def __init__(
        self,
        runner: Runner,
        store: StateStore,
        connections: Connections,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runner = runner
        self._store = store
        self._connections = connections
        self._metrics = metrics
        self._clock = clock
        self._syncs: dict[str, _Sync] = {}
        self._target_error: str | None = None

    def freshness(self, sync_name: str) -> Freshness | None:
        """As last computed; None before the watch first reached the target."""
        known = self._syncs.get(sync_name)
        return None if known is None else known.freshness

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self._watch(), name="freshness watch")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while True:
            await self.look()
            await asyncio.sleep(min(TICK_S, self._runner.config.freshness_interval.total_seconds()))

    async def look(self) -> None:
        """One round: the target's positions, the sources that are due, then each verdict."""
        config = self._runner.config
        for gone in set(self._syncs) - set(config.syncs):
            del self._syncs[gone]
            self._metrics.forget_freshness(gone)
        try:
            async with asyncio.timeout(READ_BOUND_S):
                async with self._connections.target.connection(patient=False) as conn:
                    progress = await self._store.progress(conn)
                    loads = await ChunkStore(self._store.schema).progress(conn)
        except Exception as exc:
            # The daemon's readiness already says the target is away: one line is enough.
            error = scrub(f"{type(exc).__name__}: {exc}", config.secrets())
            if error != self._target_error:
                log.warning("freshness_unknown", reason="the target did not answer", error=error)
            self._target_error = error
            return
        self._target_error = None
        for name, sync in config.syncs.items():
            known = self._syncs.setdefault(name, _Sync())
            await self._learn_newest(name, sync, known, config.freshness_interval.total_seconds())
            position, last_success_at = progress.get(name, (None, None))
            synced_to = position[0] if position is not None and sync.cursor else None
            known.unknown_since = known.unknown_since or datetime.now(UTC)
            seen = freshness(
                cursor_kind=known.cursor_kind if sync.cursor else None,
                source_newest=known.source_newest,
                synced_to=synced_to,
                last_success_at=last_success_at,
                max_lag=sync.max_lag,
                unknown_since=known.unknown_since,
            )
            if seen.lag_seconds is not None:
                known.unknown_since = None
            self._judge(name, sync, known.freshness, seen)
            known.freshness = seen
            self._metrics.freshness_seen(name, seen)
            if name in loads:
                self._metrics.load_seen(name, loads[name])

    async def _learn_newest(self, name: str, sync: SyncConfig, known: _Sync, every: float) -> None:
        result = self._runner.last_result(name)
        if result is not None and result is not known.seen_result:
            known.seen_result = result
            if result.status == "succeeded":
                known.source_newest = result.source_newest
                known.cursor_kind, known.kind_known = result.cursor_kind, True
                known.read_at = self._clock()
                return
        due = known.read_at is None or self._clock() - known.read_at >= every
        if sync.cursor is None or self._runner.live(name) is not None or not due:
            return
        known.read_at = self._clock()
        source = self._runner.config.sources[sync.source]
        try:
            known.source_newest, kind = await read_newest(
                self._connections, sync, source, describe=not known.kind_known
            )
            if not known.kind_known:
                known.cursor_kind, known.kind_known = kind, True
            known.read_error = None
        except Exception as exc:
            error = scrub(f"{type(exc).__name__}: {exc}", self._runner.config.secrets())
            if error != known.read_error:
                log.warning("freshness_read_failed", sync_name=name, error=error,
                            kept=known.source_newest)  # fmt: skip
            known.read_error = error

    def _judge(self, name: str, sync: SyncConfig, before: Freshness | None, now: Freshness) -> None:
        """One line when a sync turns stale, and one when it is fresh again."""
        was_stale = before is not None and before.stale
        if now.stale == was_stale:
            return
        max_lag_s = None if sync.max_lag is None else sync.max_lag.total_seconds()
        fields = {"sync_name": name, "lag_seconds": now.lag_seconds, "max_lag_s": max_lag_s,
                  "synced_to": now.synced_to, "source_newest": now.source_newest}  # fmt: skip
        if now.stale:
            log.warning("sync_stale", **fields, last_success_at=_iso(now))
        else:
            log.info("sync_fresh", **fields)
        self._runner.publish({"type": "freshness", "sync_name": name, "stale": now.stale,
                              "lag_seconds": now.lag_seconds, "max_lag_seconds": max_lag_s,
                              "last_success_at": now.last_success_at})  # fmt: skip


def _iso(seen: Freshness) -> str | None:
    return None if seen.last_success_at is None else seen.last_success_at.isoformat()

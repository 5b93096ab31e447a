"""Prometheus metrics, kept in a registry of the daemon's own (no process globals)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from syncd.chunks import Progress
from syncd.freshness import Freshness
from syncd.pools import PoolUse
from syncd.runs import BatchReport, RunResult


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["sync_name"]
        self.rows_read = Counter(
            "syncd_rows_read", "Rows read from the source.", labels, registry=self.registry
        )
        self.rows_written = Counter(
            "syncd_rows_written",
            "Rows inserted or changed in the target.",
            labels,
            registry=self.registry,
        )
        self.rows_unchanged = Counter(
            "syncd_rows_unchanged",
            "Rows re-read that were already up to date.",
            labels,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "syncd_batch_duration_seconds",
            "Time to write and commit one batch.",
            labels,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.runs = Counter(
            "syncd_runs", "Finished runs by outcome.", [*labels, "status"], registry=self.registry
        )
        self.schema_changes = Counter(
            "syncd_schema_changes",
            "Changes of a source's columns, by what the sync did about them.",
            [*labels, "action"],
            registry=self.registry,
        )
        self.running = Gauge(
            "syncd_running",
            "1 while a run of the sync is in progress.",
            labels,
            registry=self.registry,
        )
        self.last_success = Gauge(
            "syncd_last_success_timestamp_seconds",
            "When the last run succeeded (Unix time).",
            labels,
            registry=self.registry,
        )
        self.since_success = Gauge(
            "syncd_seconds_since_last_success", "Seconds since the last successful run.", labels,
            registry=self.registry,
        )  # fmt: skip
        self.lag = Gauge(
            "syncd_lag_seconds",
            "How far the target is behind the source (NaN while unknown): see the README.",
            labels,
            registry=self.registry,
        )
        self.stale = Gauge(
            "syncd_sync_stale", "1 while the sync is behind by more than its max_lag.", labels,
            registry=self.registry,
        )  # fmt: skip
        self.queued = Gauge(
            "syncd_runs_queued", "Runs waiting for a slot to start.", registry=self.registry
        )
        self.load_chunks = Gauge(
            "syncd_load_chunks",
            "Chunks of the sync's parallel load in progress, or of its last, over every"
            " process, by state: total, done, running.",
            [*labels, "state"],
            registry=self.registry,
        )
        self.load_rows_read = Gauge(
            "syncd_load_rows_read", "Rows the chunks of the sync's parallel load have read.",
            labels, registry=self.registry,
        )  # fmt: skip
        self.verify_rows = Gauge(
            "syncd_verify_rows",
            "Rows the sync's last verify found, by kind: missing, extra, different, pending.",
            [*labels, "kind"],
            registry=self.registry,
        )
        self.verify_success = Gauge(
            "syncd_verify_last_success_timestamp_seconds",
            "When a verify of the sync last ended, equal or not (Unix time).",
            labels,
            registry=self.registry,
        )

    def track_pools(self, use: Callable[[], list[PoolUse]]) -> None:
        """Report what the pools hold, as they hold it when scraped."""
        self.registry.register(_PoolCollector(use))

    def runs_queued(self, count: int) -> None:
        self.queued.set(count)

    def run_started(self, sync_name: str) -> None:
        self.running.labels(sync_name).set(1)

    def batch_committed(self, report: BatchReport) -> None:
        self.rows_read.labels(report.sync_name).inc(report.rows)
        self.rows_written.labels(report.sync_name).inc(report.rows_written)
        self.rows_unchanged.labels(report.sync_name).inc(report.rows - report.rows_written)
        self.batch_seconds.labels(report.sync_name).observe(report.duration_s)

    def run_finished(self, result: RunResult) -> None:
        self.running.labels(result.sync_name).set(0)
        self.runs.labels(result.sync_name, result.status).inc()
        for action in result.schema_changes:
            self.schema_changes.labels(result.sync_name, action).inc()

    def freshness_seen(self, sync_name: str, seen: Freshness) -> None:
        self.lag.labels(sync_name).set(math.nan if seen.lag_seconds is None else seen.lag_seconds)
        self.stale.labels(sync_name).set(seen.stale)
        if seen.last_success_at is not None:
            # From the state store, so that a run by another process counts too.
            finished = seen.last_success_at.timestamp()
            self.last_success.labels(sync_name).set(finished)
            self.since_success.labels(sync_name).set_function(lambda: time.time() - finished)

    def load_seen(self, sync_name: str, load: Progress) -> None:
        for state, chunks in (("total", load.chunks), ("done", load.done),
                              ("running", load.running)):  # fmt: skip
            self.load_chunks.labels(sync_name, state).set(chunks)
        self.load_rows_read.labels(sync_name).set(load.rows_read)

    def forget_freshness(self, sync_name: str) -> None:
        """A sync removed from the configuration has no freshness to report."""
        for gauge in (self.lag, self.stale, self.last_success, self.since_success):
            with contextlib.suppress(KeyError):
                gauge.remove(sync_name)

    def verify_finished(self, sync_name: str, counts: dict[str, int]) -> None:
        for kind, rows in counts.items():
            self.verify_rows.labels(sync_name, kind).set(rows)
        self.verify_success.labels(sync_name).set(time.time())

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PoolCollector:
    def __init__(self, use: Callable[[], list[PoolUse]]) -> None:
        self._use = use

    def collect(self) -> Iterator[GaugeMetricFamily]:
        connections = GaugeMetricFamily(
            "syncd_pool_connections",
            "Connections of each pool (target, source:NAME), in use or idle.",
            labels=["pool", "state"],
        )
        limit = GaugeMetricFamily(
            "syncd_pool_max_connections", "The most each pool may open.", labels=["pool"]
        )
        waiting = GaugeMetricFamily(
            "syncd_pool_waiting", "Runs and requests waiting for a connection.", labels=["pool"]
        )
        for use in self._use():
            connections.add_metric([use.pool, "in_use"], use.in_use)
            connections.add_metric([use.pool, "idle"], use.idle)
            limit.add_metric([use.pool], use.max)
            waiting.add_metric([use.pool], use.waiting)
        yield from (connections, limit, waiting)

"""Many syncs in one daemon: what it completes, how far behind it falls, and what it takes.

Run from the repository root, as root (the server is a private PostgreSQL cluster run as
the postgres OS user); about a quarter of an hour at the defaults:

    .venv/bin/python -m tests.benchmarks.bench_many [--syncs 10 100 500] [--every 5s]
        [--window 60] [--big 2000000] [--big-syncs 100]

For each number of syncs it starts a cluster with max_connections = 40
(tests/chaos/cluster.py), makes that many tables of 2,000 rows in a source database, and
runs ``syncd run`` syncing each into a target database every ``--every``, with the default
budgets (4 runs at once, 4 source and 6 target connections). Once every initial load is
done, a writer gives 1% of each table's rows a new cursor value every interval, for
``--window`` seconds; every target must then equal its source. From that window:

- runs completed per minute, beside the runs the schedules ask for (syncs x 60 / interval);
- lag, from a row's change to the commit of the batch that carried it (the daemon's log),
  median and p99 over every change;
- the most sessions of syncd's that pg_stat_activity showed at once, sampled every 50 ms,
  by database;
- the daemon's peak RSS and its CPU time over the window (100% = one core), and /healthz p99.

Then ``--big``: the same with ``--big-syncs`` small syncs and one more sync whose first run
loads a ``--big``-row table; the window lasts as long as that load.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from syncd.units import parse_duration
from tests.chaos.cluster import PrivateCluster
from tests.daemon import Daemon
from tests.many import Fleet, lags, make_fleet, watching

ROWS = 2000


@dataclass
class Figures:
    syncs: int
    every: str
    runs_per_minute: float
    asked_per_minute: float
    lag_p50: float
    lag_p99: float
    peak_source: int
    peak_target: int
    rss_mib: float
    cpu_percent: float
    healthz_p99_ms: float
    failed_runs: int
    big_rows: int = 0
    big_load_s: float = 0.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--syncs", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--every", default="5s", help="each sync's interval (5s)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured (60)")
    parser.add_argument("--big", type=int, default=2_000_000, help="rows of the big load")
    parser.add_argument("--big-syncs", type=int, default=100, help="small syncs beside it")
    return parser.parse_args()


async def measure(syncs: int, every: str, window: float, big: int = 0) -> Figures:
    interval = parse_duration(every).total_seconds()  # type: ignore[union-attr]
    cluster = await PrivateCluster.create(max_connections=40)
    try:
        fleet = await make_fleet(cluster.server, syncs, ROWS, big=big)
        with tempfile.TemporaryDirectory() as workdir:
            daemon = Daemon(fleet.config(Path(workdir) / "config.yaml", every), Path(workdir))
            await daemon.start()
            try:
                figures = await _measure(daemon, fleet, cluster.server, interval, window, every)
                figures.big_rows = big
                return figures
            finally:
                await daemon.stop()
    finally:
        await cluster.destroy()


async def _measure(
    daemon: Daemon, fleet: Fleet, server: str, interval: float, window: float, every: str
) -> Figures:
    await daemon.wait_ready()
    await _until(lambda: set(fleet.names) <= _synced(daemon), within=600)
    touches = []
    async with watching(server, daemon) as watch:
        began, runs_before = time.monotonic(), len(daemon.events("run_finished"))
        round_ = 0
        while True:
            touches.append(await fleet.touch(round_=round_))
            round_ += 1
            elapsed = time.monotonic() - began
            if fleet.big and "big" in _synced(daemon):
                break
            if not fleet.big and elapsed >= window:
                break
            await asyncio.sleep(max(0.0, interval * round_ - elapsed))
        measured = time.monotonic() - began
        runs = len(daemon.events("run_finished")) - runs_before
    differ = await fleet.converge(within=300)
    if differ:
        raise SystemExit(f"{len(differ)} targets never caught up: {differ[:5]}")
    found = sorted(lags(daemon, touches))
    big_load = 0.0
    if fleet.big:
        (finished,) = [e for e in daemon.events("run_finished") if e["sync_name"] == "big"][:1]
        (started,) = [e for e in daemon.events("run_started") if e["sync_name"] == "big"][:1]
        big_load = (_at(finished) - _at(started)).total_seconds()
    return Figures(
        syncs=len(fleet.names),
        every=every,
        runs_per_minute=runs * 60 / measured,
        asked_per_minute=len(fleet.names) * 60 / interval,
        lag_p50=statistics.median(found),
        lag_p99=statistics.quantiles(found, n=100)[98],
        peak_source=watch.peak_connections.get("source", 0),
        peak_target=watch.peak_connections.get("target", 0),
        rss_mib=max(watch.rss_bytes) / 2**20,
        cpu_percent=100 * watch.cpu_seconds / measured,
        healthz_p99_ms=watch.healthz_p99_ms(),
        failed_runs=len(daemon.events("run_failed")),
        big_load_s=big_load,
    )


def _synced(daemon: Daemon) -> set[str]:
    return {e["sync_name"] for e in daemon.events("run_finished")}


def _at(event: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(event["timestamp"]))


async def _until(condition: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("the initial loads did not end in time")
        await asyncio.sleep(1)


def table(rows: list[Figures]) -> str:
    header = (
        "| syncs | interval | runs/min completed (asked) | lag p50 / p99 | peak connections"
        " source / target (budget 4 / 6) | peak RSS | daemon CPU | /healthz p99 | failed runs |"
    )
    lines = [header, "|" + "---|" * 9]
    for f in rows:
        syncs = f"{f.syncs} + 1 loading {f.big_rows:,} rows" if f.big_rows else str(f.syncs)
        lines.append(
            f"| {syncs} | {f.every} | {f.runs_per_minute:,.0f} ({f.asked_per_minute:,.0f})"
            f" | {f.lag_p50:.1f} s / {f.lag_p99:.1f} s | {f.peak_source} / {f.peak_target}"
            f" | {f.rss_mib:.0f} MiB | {f.cpu_percent:.0f}% | {f.healthz_p99_ms:.0f} ms"
            f" | {f.failed_runs} |"
        )
    return "\n".join(lines)


async def main() -> None:
    args = parse_args()
    rows = []
    for syncs in args.syncs:
        rows.append(await measure(syncs, args.every, args.window))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    if args.big:
        figures = await measure(args.big_syncs, args.every, args.window, big=args.big)
        rows.append(figures)
        print(f"big load: {args.big:,} rows in {figures.big_load_s:.0f} s", flush=True)
    print(table(rows))


if __name__ == "__main__":
    asyncio.run(main())

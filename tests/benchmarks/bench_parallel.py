"""Parallel loads against the COPY pipe: syncd with 1, 2 and 4 workers, one pipe, two pipes.

Run from the repository root (about five minutes at the defaults on 2 cores):

    .venv/bin/python tests/benchmarks/bench_parallel.py [--rows 1000000] [--repeats 3]

For each layout of a ``--rows``-row demo table (``syncd.demo.create_demo_source``) it
measures, ``--repeats`` times in turn, so that each repetition's figures share the
machine's state:

- one raw binary COPY pipe (``psql | psql``) into a table with a primary key;
- two such pipes at once, each over half the keys, into the same table;
- ``syncd sync``'s initial load with ``parallel`` 1, 2 and 4 (default ``chunk_rows``),
  by engine time (run_started..run_finished in its log) and process time.

Ratios are pipe time ÷ syncd time within a repetition; the table gives their medians.
Layouts: ``correlated`` (the cursor grows with the key and the physical order) and
``shuffled-cursor`` (the same keys in physical order, the cursor values scattered over
them, as years of updates leave a table). Once per layout it also loads with
``batch_size`` 200,000 and reports the process's peak RSS, and, over every batch of the
``parallel: 2`` loads, the median write time of the last 10 ÷ the first 10.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_sync import (
    COPY_TABLE,
    CURSOR,
    KEY,
    SOURCE_TABLE,
    SYNC_NAME,
    TARGET_TABLE,
    SyncRun,
    admin_execute_on,
    copy_out_sql,
    copy_pipe_psql,
    create_source,
    fresh_databases,
    reset_copy_table,
    run_syncd,
    write_config,
)

from syncd.identifiers import TableName, quote_ident

LAYOUTS = ("correlated", "shuffled-cursor")
WORKERS = (1, 2, 4)
BIG_BATCH = 200_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    parser.add_argument(
        "--server",
        default=os.environ.get("SYNCD_BENCH_SERVER", "postgresql://postgres@127.0.0.1:5432"),
    )
    parser.add_argument("--syncd", default=str(Path(sys.executable).parent / "syncd"))
    return parser.parse_args()


async def scatter_cursor(source_dsn: str) -> None:
    """Cursor values spread over the keys at random, the rows kept in key order."""
    table = TableName.parse(SOURCE_TABLE).sql
    await admin_execute_on(
        source_dsn,
        f"UPDATE {table} SET {quote_ident(CURSOR)} = timestamptz '2024-06-01 00:00:00+00'"
        f" + (hashint8({quote_ident(KEY)}) & 1073741823) * interval '1 millisecond'",
        f"CLUSTER {table} USING {quote_ident(TableName.parse(SOURCE_TABLE).name + '_pkey')}",
    )


def two_pipes(source_dsn: str, target_dsn: str, columns: list[tuple[str, str]], rows: int) -> float:
    """Two ``psql | psql`` pipes at once, over the lower and the upper half of the keys."""
    table = TableName.parse(COPY_TABLE).sql
    select_list = ", ".join(quote_ident(name) for name, _ in columns)
    halves = (f"{quote_ident(KEY)} <= {rows // 2}", f"{quote_ident(KEY)} > {rows // 2}")
    started = time.perf_counter()
    pipes = []
    for half in halves:
        out = subprocess.Popen(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", source_dsn, "-c",
             f"COPY ({copy_out_sql(columns)} WHERE {half}) TO STDOUT (FORMAT binary)"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        into = subprocess.Popen(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target_dsn, "-c",
             f"COPY {table} ({select_list}) FROM STDIN (FORMAT binary)"],
            stdin=out.stdout,
        )  # fmt: skip
        assert out.stdout is not None
        out.stdout.close()
        pipes.append((out, into))
    for out, into in pipes:
        if into.wait() or out.wait():
            raise RuntimeError("a COPY pipe failed")
    return time.perf_counter() - started


def load(args: argparse.Namespace, workdir: Path, source_dsn: str, target_dsn: str,
         name: str, **sync: object) -> SyncRun:  # fmt: skip
    """A fresh initial load by ``syncd sync`` into an empty target."""
    asyncio.run(
        admin_execute_on(
            target_dsn,
            f"DROP TABLE IF EXISTS {TableName.parse(TARGET_TABLE).sql}",
            "DROP SCHEMA IF EXISTS syncd CASCADE",
            "CHECKPOINT",
        )
    )
    config_path = workdir / f"{name}.yaml"
    # Workers and the planner each hold a source connection.
    write_config(config_path, source_dsn, target_dsn, {"max_connections": 8}, **sync)
    command = [args.syncd, "-c", str(config_path), "sync", SYNC_NAME]
    run = run_syncd(command, workdir / f"{name}.jsonl")
    if run.rows_written != args.rows:
        raise RuntimeError(f"{name} wrote {run.rows_written} rows, not {args.rows}")
    return run


def pipe_into_fresh_table(
    target_dsn: str, columns: list[tuple[str, str]], pipe: Callable[[], float]
) -> float:
    asyncio.run(reset_copy_table(target_dsn, columns))
    elapsed = pipe()
    asyncio.run(admin_execute_on(target_dsn, f"DROP TABLE {TableName.parse(COPY_TABLE).sql}"))
    return elapsed


def drift(runs: list[SyncRun]) -> float:
    """Median write time of the last 10 batches over the first 10, over every load given."""
    ratios = []
    for run in runs:
        written = [float(b["duration_ms"]) for b in run.of("batch_committed")]
        ratios.append(statistics.median(written[-10:]) / statistics.median(written[:10]))
    return statistics.median(ratios)


def measure(args: argparse.Namespace, layout: str, workdir: Path) -> list[str]:
    with fresh_databases(args.server, "syncd_par") as (source_dsn, target_dsn):
        columns = asyncio.run(create_source(source_dsn, args.rows))
        if layout == "shuffled-cursor":
            asyncio.run(scatter_cursor(source_dsn))
        asyncio.run(
            admin_execute_on(
                source_dsn, f"VACUUM (ANALYZE) {TableName.parse(SOURCE_TABLE).sql}", "CHECKPOINT"
            )
        )
        one: list[float] = []
        two: list[float] = []
        engine: dict[int, list[float]] = {n: [] for n in WORKERS}
        wall: dict[int, list[float]] = {n: [] for n in WORKERS}
        loads_of_two: list[SyncRun] = []
        for repeat in range(args.repeats):
            one.append(
                pipe_into_fresh_table(
                    target_dsn, columns, lambda: copy_pipe_psql(source_dsn, target_dsn, columns)[0]
                )
            )
            two.append(
                pipe_into_fresh_table(
                    target_dsn,
                    columns,
                    lambda: two_pipes(source_dsn, target_dsn, columns, args.rows),
                )
            )
            for workers in WORKERS:
                run = load(args, workdir, source_dsn, target_dsn, f"{layout}-p{workers}-{repeat}",
                           parallel=workers, batch_size=args.batch_size)  # fmt: skip
                engine[workers].append(run.engine_s)
                wall[workers].append(run.wall_s)
                if workers == 2:
                    loads_of_two.append(run)
            print(f"{layout} #{repeat + 1}: pipe {one[-1]:.2f}s, two pipes {two[-1]:.2f}s, "
                  + ", ".join(f"p{n} {engine[n][-1]:.2f}s" for n in WORKERS),
                  file=sys.stderr, flush=True)  # fmt: skip
        big = load(args, workdir, source_dsn, target_dsn, f"{layout}-rss",
                   parallel=2, batch_size=BIG_BATCH)  # fmt: skip
        lines = []
        for workers in WORKERS:
            by_one = statistics.median(p / s for p, s in zip(one, engine[workers], strict=True))
            by_two = statistics.median(p / s for p, s in zip(two, engine[workers], strict=True))
            by_wall = statistics.median(p / s for p, s in zip(one, wall[workers], strict=True))
            lines.append(
                f"| {layout} | {workers} | {statistics.median(engine[workers]):.2f} s"
                f" / {statistics.median(wall[workers]):.2f} s | {by_one:.2f}x ({by_wall:.2f}x)"
                f" | {by_two:.2f}x |"
            )
        lines.append(
            f"| {layout} | pipes: one {statistics.median(one):.2f} s, two"
            f" {statistics.median(two):.2f} s | batch {BIG_BATCH:,}: peak RSS"
            f" {big.peak_rss_kb / 1024:.0f} MB | last 10 ÷ first 10 batch writes"
            f" (parallel 2): {drift(loads_of_two):.2f} | |"
        )
        return lines


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="syncd-parallel-"))
    rows = []
    try:
        for layout in args.layouts:
            rows += measure(args, layout, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"syncd parallel load: {args.rows:,} rows, batch_size {args.batch_size:,},"
          f" medians of {args.repeats}, {os.cpu_count()} CPUs")  # fmt: skip
    print()
    print("| layout | parallel | syncd load (engine / process) | ÷ one pipe (by process)"
          " | ÷ two pipes |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(row)
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    print(f"\nCommand: `{command}`; took {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()

"""Does a batch cost the same whatever the size of the table? syncd against the COPY pipe
at several table sizes, with the cursor in or out of physical order, with and without an
index on it.

Run from the repository root (it takes about a quarter of an hour at the defaults):

    .venv/bin/python tests/benchmarks/bench_scaling.py [--sizes 1000000 4000000 10000000]

For each size it makes a source table (``syncd.demo.create_demo_source``) and, in that
same run, measures for each layout:

- the raw binary COPY pipe (``psql | psql``) into a table with a primary key;
- ``syncd sync``'s initial load (engine time, from its log, and process wall time);
- a catch-up after 1% of the rows got a new cursor value;
- the median time between commits of the last 10 full batches over the first 10.

Layouts: ``correlated`` (the cursor grows with the physical order, index on
(cursor, key)), ``shuffled`` (the same rows in random physical order, same index),
``no-index`` (correlated, without the cursor index: syncd reads each run in one pass).
The ratio to the pipe at 1M and at the largest size, and the drift within a load, are
what to compare; timings are noisy on a small machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench_sync import (
    COPY_TABLE,
    CURSOR,
    KEY,
    SOURCE_TABLE,
    SYNC_NAME,
    admin_execute,
    admin_execute_on,
    checkpoint,
    copy_pipe_psql,
    create_source,
    dsn,
    reset_copy_table,
    run_syncd,
    touch_one_percent,
    write_config,
)

from syncd.identifiers import TableName, quote_ident

LAYOUTS = ("correlated", "shuffled", "no-index")


@dataclass(frozen=True)
class Figures:
    rows: int
    layout: str
    pipe_s: float
    engine_s: float
    wall_s: float
    catchup_engine_s: float
    catchup_wall_s: float
    drift: float | None
    batches: int

    @property
    def ratio(self) -> float:
        return self.pipe_s / self.engine_s


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000, 10_000_000])
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument(
        "--server",
        default=os.environ.get("SYNCD_BENCH_SERVER", "postgresql://postgres@127.0.0.1:5432"),
    )
    parser.add_argument("--syncd", default=str(Path(sys.executable).parent / "syncd"))
    return parser.parse_args()


async def lay_out(source_dsn: str, layout: str) -> None:
    """Give the source table the layout; it starts correlated, with the cursor index."""
    table = TableName.parse(SOURCE_TABLE).sql
    if layout == "shuffled":
        await admin_execute_on(
            source_dsn,
            f"CREATE TABLE shuffled AS SELECT * FROM {table} ORDER BY random()",
            f"DROP TABLE {table}",
            f"ALTER TABLE shuffled RENAME TO {quote_ident(TableName.parse(SOURCE_TABLE).name)}",
            f"ALTER TABLE {table} ADD PRIMARY KEY ({quote_ident(KEY)})",
            f"CREATE INDEX ON {table} ({quote_ident(CURSOR)}, {quote_ident(KEY)})",
        )
    elif layout == "no-index":
        await admin_execute_on(
            source_dsn,
            f"DROP INDEX {TableName.parse(SOURCE_TABLE).schema or 'public'}"
            f".opportunities_{CURSOR}_{KEY}_idx",
        )
    await admin_execute_on(source_dsn, f"VACUUM (ANALYZE) {table}", "CHECKPOINT")


def measure(args: argparse.Namespace, rows: int, layout: str, workdir: Path) -> Figures:
    suffix = uuid.uuid4().hex[:10]
    source_db, target_db = f"syncd_scale_src_{suffix}", f"syncd_scale_tgt_{suffix}"
    source_dsn, target_dsn = dsn(args.server, source_db), dsn(args.server, target_db)
    created: list[str] = []
    try:
        for name in (source_db, target_db):
            asyncio.run(admin_execute(args.server, f'CREATE DATABASE "{name}"'))
            created.append(name)
        columns = asyncio.run(create_source(source_dsn, rows))
        asyncio.run(lay_out(source_dsn, layout))

        asyncio.run(reset_copy_table(target_dsn, columns))
        pipe_s, copied = copy_pipe_psql(source_dsn, target_dsn, columns)
        assert copied == rows, copied
        asyncio.run(admin_execute_on(target_dsn, f"DROP TABLE {TableName.parse(COPY_TABLE).sql}"))

        config_path = workdir / f"{layout}-{rows}.yaml"
        write_config(config_path, source_dsn, target_dsn, batch_size=args.batch_size)
        command = [args.syncd, "-c", str(config_path), "sync", SYNC_NAME]
        asyncio.run(checkpoint(target_dsn))
        initial = run_syncd(command, workdir / f"{layout}-{rows}-initial.jsonl")
        assert initial.rows_read == rows, initial.rows_read
        touched = asyncio.run(touch_one_percent(source_dsn))
        asyncio.run(checkpoint(target_dsn))
        catchup = run_syncd(command, workdir / f"{layout}-{rows}-catchup.jsonl")
        assert catchup.rows_read == touched, (catchup.rows_read, touched)
        return Figures(
            rows=rows,
            layout=layout,
            pipe_s=pipe_s,
            engine_s=initial.engine_s,
            wall_s=initial.wall_s,
            catchup_engine_s=catchup.engine_s,
            catchup_wall_s=catchup.wall_s,
            drift=commit_drift(initial, args.batch_size),
            batches=len(initial.of("batch_committed")),
        )
    finally:
        if created:
            asyncio.run(
                admin_execute(
                    args.server, *(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in created)
                )
            )


def commit_drift(run: object, batch_size: int) -> float | None:
    """Median commit-to-commit time of the last 10 full batches over the first 10."""
    batches = run.of("batch_committed")  # type: ignore[attr-defined]
    times = [run.at(b) for b in batches]  # type: ignore[attr-defined]
    gaps = [
        (times[i] - times[i - 1]).total_seconds()
        for i in range(1, len(batches))
        if int(batches[i]["rows"]) == batch_size
    ]
    if len(gaps) < 20:
        return None
    return statistics.median(gaps[-10:]) / statistics.median(gaps[:10])


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="syncd-scale-"))
    results: list[Figures] = []
    try:
        for rows in args.sizes:
            for layout in args.layouts:
                figures = measure(args, rows, layout, workdir)
                results.append(figures)
                print(
                    f"[{time.perf_counter() - started:6.0f}s] {rows:,} {layout}:"
                    f" pipe {figures.pipe_s:.1f}s, syncd {figures.engine_s:.1f}s engine"
                    f" ({figures.ratio:.2f}x), catch-up {figures.catchup_engine_s:.2f}s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"syncd scaling: batch_size {args.batch_size:,}, {os.cpu_count()} CPUs")
    print()
    print(
        "| rows | layout | COPY pipe | syncd load (engine / process) | ratio to pipe"
        " | 1% catch-up (engine / process) | last 10 ÷ first 10 batches |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    for f in results:
        drift = "—" if f.drift is None else f"{f.drift:.2f}"
        print(
            f"| {f.rows:,} | {f.layout} | {f.pipe_s:.1f} s | {f.engine_s:.1f} / {f.wall_s:.1f} s"
            f" | {f.ratio:.2f}x | {f.catchup_engine_s:.2f} / {f.catchup_wall_s:.2f} s | {drift} |"
        )
    print()
    for layout in args.layouts:
        by_size = [f for f in results if f.layout == layout]
        if len(by_size) > 1:
            first, last = by_size[0], by_size[-1]
            print(
                f"{layout}: ratio at {last.rows:,} ÷ ratio at {first.rows:,} ="
                f" {last.ratio / first.ratio:.2f}"
            )
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    print(f"\nCommand: `{command}`; took {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()

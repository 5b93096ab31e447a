"""The benchmark of issue #2: syncd against the physical limit of a COPY pipe.

Run from the repository root:

    .venv/bin/python tests/benchmarks/bench_sync.py [--rows 1000000] [--batch-size 10000]

It creates two databases of its own (source and target, dropped at the end, also
on failure or SIGTERM), a ``--rows``-row, 15-column opportunities table in the
source (``syncd.demo.create_demo_source``), and measures in one run:

(a) the physical limit: ``COPY (SELECT <all columns>) TO STDOUT (FORMAT binary)``
    on the source piped into ``COPY target_copy FROM STDIN (FORMAT binary)`` on the
    target, where target_copy has the same column types and a primary key, as the
    table syncd creates has. ``--copy-via asyncpg`` pipes
    ``copy_from_query`` into ``copy_to_table`` through a bounded queue in one
    process; ``psql`` pipes two psql processes; ``both`` (the default) runs the
    two and takes the faster as the limit;
(b) ``syncd sync`` of the initial load, as a subprocess;
(c) a catch-up ``syncd sync`` after 1% of the rows got a new cursor value;
(d) per-batch times near the start and the end of the table, from (b)'s log;
(e) the peak RSS of the syncd process during (b).

It prints a Markdown table of the figures against the issue's targets.
Timings are noisy on a small machine: compare the ratios measured in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from syncd.demo import create_demo_source
from syncd.identifiers import TableName, quote_ident

SOURCE_TABLE = "public.opportunities"
TARGET_TABLE = "public.opportunities"
COPY_TABLE = "public.target_copy"
SYNC_NAME = "bench"
CURSOR = "last_update_date"
KEY = "opportunity_id"

# The targets.
TARGET_LOAD_RATIO = 0.5
TARGET_CATCHUP_S = 0.5
TARGET_BATCH_DRIFT = 1.3
TARGET_RSS_MB = 100.0


# --------------------------------------------------------------------------- setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="source rows (1000000)")
    parser.add_argument("--batch-size", type=int, default=10_000, help="syncd batch size (10000)")
    parser.add_argument(
        "--server",
        default=os.environ.get("SYNCD_BENCH_SERVER", "postgresql://postgres@127.0.0.1:5432"),
        help="PostgreSQL server URL without a database ($SYNCD_BENCH_SERVER)",
    )
    parser.add_argument(
        "--copy-via",
        choices=("asyncpg", "psql", "both"),
        default="both",
        help="how (a) pipes the COPY; 'both' (the default) runs each, the faster is the limit",
    )
    parser.add_argument(
        "--syncd",
        default=str(Path(sys.executable).parent / "syncd"),
        help="the syncd executable (default: next to this Python)",
    )
    parser.add_argument("--keep-logs", type=Path, help="copy syncd's JSON logs to this directory")
    args = parser.parse_args(argv)
    if args.rows < 4 * args.batch_size:
        parser.error("--rows must hold at least 4 batches, to compare the first and the last")
    return args


def dsn(server: str, database: str) -> str:
    return f"{server.rstrip('/')}/{database}"


async def admin_execute(server: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn(server, "postgres"))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_databases(server: str, prefix: str) -> Iterator[tuple[str, str]]:
    """A source and a target database of their own, as DSNs, dropped at the end whatever
    happens."""
    suffix = uuid.uuid4().hex[:10]
    names = (f"{prefix}_src_{suffix}", f"{prefix}_tgt_{suffix}")
    created: list[str] = []
    try:
        for name in names:
            asyncio.run(admin_execute(server, f'CREATE DATABASE "{name}"'))
            created.append(name)
        yield dsn(server, names[0]), dsn(server, names[1])
    finally:
        if created:
            asyncio.run(
                admin_execute(
                    server, *(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in created)
                )
            )


async def create_source(source_dsn: str, rows: int) -> list[tuple[str, str]]:
    """The opportunities table, vacuumed and checkpointed; returns (column, type) pairs."""
    conn = await asyncpg.connect(source_dsn)
    try:
        await create_demo_source(conn, TableName.parse(SOURCE_TABLE), rows)
        # Set hint bits and the visibility map now, so that no measured run pays for them.
        await conn.execute(f"VACUUM (ANALYZE) {TableName.parse(SOURCE_TABLE).sql}")
        await conn.execute("CHECKPOINT")
        columns = await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            TableName.parse(SOURCE_TABLE).sql,
        )
        return [(row[0], row[1]) for row in columns]
    finally:
        await conn.close()


# --------------------------------------------------------------------------- (a)


async def reset_copy_table(target_dsn: str, columns: list[tuple[str, str]]) -> None:
    """target_copy with the source's types and the key as primary key, as syncd makes it."""
    definitions = ", ".join(f"{quote_ident(name)} {kind}" for name, kind in columns)
    table = TableName.parse(COPY_TABLE).sql
    conn = await asyncpg.connect(target_dsn)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.execute(
            f"CREATE TABLE {table} ({definitions}, PRIMARY KEY ({quote_ident(KEY)}))"
        )
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def copy_out_sql(columns: list[tuple[str, str]]) -> str:
    select_list = ", ".join(quote_ident(name) for name, _ in columns)
    return f"SELECT {select_list} FROM {TableName.parse(SOURCE_TABLE).sql}"


async def copy_pipe_asyncpg(
    source_dsn: str, target_dsn: str, columns: list[tuple[str, str]]
) -> tuple[float, int]:
    """copy_from_query's output handed to copy_to_table through a bounded queue."""
    source = await asyncpg.connect(source_dsn)
    target = await asyncpg.connect(target_dsn)
    try:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)

        async def put(chunk: bytes) -> None:
            await queue.put(bytes(chunk))

        async def chunks() -> AsyncIterator[bytes]:
            while (chunk := await queue.get()) is not None:
                yield chunk

        async def produce() -> str:
            try:
                return await source.copy_from_query(
                    copy_out_sql(columns), output=put, format="binary"
                )
            finally:
                await queue.put(None)

        table = TableName.parse(COPY_TABLE)
        started = time.perf_counter()
        _, status = await asyncio.gather(
            produce(),
            target.copy_to_table(
                table.name,
                schema_name=table.schema,
                source=chunks(),
                columns=[name for name, _ in columns],
                format="binary",
            ),
        )
        elapsed = time.perf_counter() - started
        return elapsed, int(status.split()[-1])
    finally:
        await source.close()
        await target.close()


def copy_pipe_psql(
    source_dsn: str, target_dsn: str, columns: list[tuple[str, str]]
) -> tuple[float, int]:
    """Two psql processes, the first's stdout piped into the second's stdin."""
    psql = shutil.which("psql")
    if psql is None:
        raise SystemExit("psql is not on PATH; use --copy-via asyncpg")
    table = TableName.parse(COPY_TABLE).sql
    select_list = ", ".join(quote_ident(name) for name, _ in columns)
    out_cmd = [
        psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", source_dsn,
        "-c", f"COPY ({copy_out_sql(columns)}) TO STDOUT (FORMAT binary)",
    ]  # fmt: skip
    in_cmd = [
        psql, "-X", "-v", "ON_ERROR_STOP=1", "-d", target_dsn,
        "-c", f"COPY {table} ({select_list}) FROM STDIN (FORMAT binary)",
    ]  # fmt: skip
    started = time.perf_counter()
    producer = subprocess.Popen(out_cmd, stdout=subprocess.PIPE)
    try:
        consumer = subprocess.run(
            in_cmd, stdin=producer.stdout, capture_output=True, text=True, check=False
        )
    finally:
        assert producer.stdout is not None
        producer.stdout.close()
        producer.wait()
    elapsed = time.perf_counter() - started
    if producer.returncode or consumer.returncode:
        raise RuntimeError(f"psql COPY pipe failed: {consumer.stderr.strip()}")
    return elapsed, int(consumer.stdout.split()[-1])


# --------------------------------------------------------------------------- (b), (c)


@dataclass
class SyncRun:
    command: list[str]
    wall_s: float
    exit_code: int
    peak_rss_kb: int
    cpu_s: float
    events: list[dict[str, Any]] = field(default_factory=list)
    stderr: str = ""

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    def at(self, event: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(str(event["timestamp"]))

    @property
    def engine_s(self) -> float:
        started, finished = self.of("run_started"), self.of("run_finished")
        if not started or not finished:
            raise RuntimeError("the run logged no run_started/run_finished pair")
        return (self.at(finished[-1]) - self.at(started[0])).total_seconds()

    @property
    def rows_read(self) -> int:
        return int(self.of("run_finished")[-1]["rows_read"])

    @property
    def rows_written(self) -> int:
        return int(self.of("run_finished")[-1]["rows_written"])


def vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def run_syncd(command: list[str], log_path: Path) -> SyncRun:
    """Run syncd to its end, polling VmHWM; wait4 gives this child's own ru_maxrss too."""
    with open(log_path, "wb") as stdout, tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
        peak_kb, cpu_s = 0, 0.0
        try:
            while True:
                peak_kb = max(peak_kb, vm_hwm_kb(process.pid))
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    wall = time.perf_counter() - started
                    process.returncode = os.waitstatus_to_exitcode(status)
                    peak_kb = max(peak_kb, usage.ru_maxrss)  # kilobytes on Linux
                    cpu_s = usage.ru_utime + usage.ru_stime
                    break
                time.sleep(0.02)
        except BaseException:
            if process.returncode is None:
                process.kill()
                process.wait()
            raise
        stderr.seek(0)
        error_text = stderr.read().decode("utf-8", "replace")
    events = []
    for line in log_path.read_text("utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    run = SyncRun(command, wall, process.returncode, peak_kb, cpu_s, events, error_text)
    if run.exit_code != 0:
        raise RuntimeError(
            f"{shlex.join(command)} exited {run.exit_code}:\n{error_text}\n"
            + "\n".join(json.dumps(e) for e in run.events[-5:])
        )
    return run


def write_config(
    path: Path, source_dsn: str, target_dsn: str, source: dict[str, Any] | None = None, **sync: Any
) -> None:
    """The benchmark's config: the source table synced to the target, JSON logs at info;
    ``source`` adds to the source's settings, ``sync`` to the sync's."""
    config = {
        "target": {"dsn": target_dsn},
        "sources": {"bench": {"kind": "postgres", "dsn": source_dsn, **(source or {})}},
        "syncs": {
            SYNC_NAME: {
                "source": "bench",
                "table": SOURCE_TABLE,
                "key": [KEY],
                "cursor": CURSOR,
                "target_table": TARGET_TABLE,
                **sync,
            }
        },
        "logging": {"level": "info", "format": "json"},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")


async def checkpoint(target_dsn: str) -> None:
    await admin_execute_on(target_dsn, "CHECKPOINT")


async def admin_execute_on(database_dsn: str, *statements: str) -> str:
    conn = await asyncpg.connect(database_dsn)
    try:
        status = ""
        for statement in statements:
            status = await conn.execute(statement)
        return status
    finally:
        await conn.close()


async def touch_one_percent(source_dsn: str) -> int:
    table = TableName.parse(SOURCE_TABLE).sql
    status = await admin_execute_on(
        source_dsn,
        # Past every cursor value there is: the demo's stamps run past today at 4M rows.
        f"UPDATE {table} SET {quote_ident(CURSOR)} = greatest(now(),"
        f" (SELECT max({quote_ident(CURSOR)}) FROM {table}) + interval '1 second'),"
        f" amount = amount + 1 WHERE {quote_ident(KEY)} % 100 = 0",
    )
    return int(status.split()[-1])


async def count_rows(database_dsn: str, table: str) -> int:
    conn = await asyncpg.connect(database_dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {TableName.parse(table).sql}"))
    finally:
        await conn.close()


# --------------------------------------------------------------------------- (d)


@dataclass(frozen=True)
class BatchFigures:
    first_write_ms: float
    last_write_ms: float
    first_interval_ms: float
    last_interval_ms: float
    batches: int


def batch_figures(run: SyncRun, batch_size: int) -> BatchFigures:
    batches = run.of("batch_committed")
    times = [run.at(b) for b in batches]
    intervals = [(b - a).total_seconds() * 1000 for a, b in itertools.pairwise(times)]
    # intervals[i] ends at batch i+1; a full batch is one with batch_size rows.
    full = [i for i, b in enumerate(batches) if int(b["rows"]) == batch_size]
    timed = [i for i in full if i >= 1]  # batches with a committed batch before them
    # Up to 10 at each end, never the same batch at both (a large batch_size makes few).
    ends = min(10, len(timed) // 2)
    return BatchFigures(
        first_write_ms=statistics.median(float(batches[i]["duration_ms"]) for i in full[:ends]),
        last_write_ms=statistics.median(float(batches[i]["duration_ms"]) for i in full[-ends:]),
        first_interval_ms=statistics.median(intervals[i - 1] for i in timed[:ends]),
        last_interval_ms=statistics.median(intervals[i - 1] for i in timed[-ends:]),
        batches=len(batches),
    )


# --------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "pass" if ok else "**miss**"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    bench_started = time.perf_counter()
    command_line = shlex.join(
        [os.path.relpath(sys.executable), *(sys.argv if argv is None else argv)]
    )

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_sigterm)

    suffix = uuid.uuid4().hex[:10]
    source_db, target_db = f"syncd_bench_src_{suffix}", f"syncd_bench_tgt_{suffix}"
    source_dsn, target_dsn = dsn(args.server, source_db), dsn(args.server, target_db)
    workdir = Path(tempfile.mkdtemp(prefix="syncd-bench-"))

    def say(text: str) -> None:
        elapsed = time.perf_counter() - bench_started
        print(f"[{elapsed:6.1f}s] {text}", file=sys.stderr, flush=True)

    created: list[str] = []
    try:
        for name in (source_db, target_db):
            asyncio.run(admin_execute(args.server, f'CREATE DATABASE "{name}"'))
            created.append(name)
        say(f"databases {source_db}, {target_db}; making {args.rows:,} source rows")
        made = time.perf_counter()
        columns = asyncio.run(create_source(source_dsn, args.rows))
        say(f"source ready in {time.perf_counter() - made:.1f}s ({len(columns)} columns)")

        # (a) the COPY pipe, the physical limit.
        methods = ["asyncpg", "psql"] if args.copy_via == "both" else [args.copy_via]
        copy_results: dict[str, float] = {}
        for method in methods:
            asyncio.run(reset_copy_table(target_dsn, columns))
            if method == "asyncpg":
                elapsed, copied = asyncio.run(copy_pipe_asyncpg(source_dsn, target_dsn, columns))
            else:
                elapsed, copied = copy_pipe_psql(source_dsn, target_dsn, columns)
            if copied != args.rows:
                raise RuntimeError(f"the COPY pipe moved {copied} rows, not {args.rows}")
            copy_results[method] = args.rows / elapsed
            say(f"(a) COPY pipe via {method}: {elapsed:.2f}s, {args.rows / elapsed:,.0f} rows/s")
        copy_method = max(copy_results, key=lambda m: copy_results[m])
        copy_rate = copy_results[copy_method]
        asyncio.run(admin_execute_on(target_dsn, f"DROP TABLE {TableName.parse(COPY_TABLE).sql}"))

        # (b) the initial load by syncd.
        config_path = workdir / "config.yaml"
        write_config(config_path, source_dsn, target_dsn, batch_size=args.batch_size)
        sync_cmd = [
            args.syncd, "-c", str(config_path), "sync", SYNC_NAME,
            "--batch-size", str(args.batch_size),
        ]  # fmt: skip
        asyncio.run(checkpoint(target_dsn))
        initial = run_syncd(sync_cmd, workdir / "initial.jsonl")
        in_target = asyncio.run(count_rows(target_dsn, TARGET_TABLE))
        # A parallel load reads the rows at its cursor value again once it is done.
        if initial.rows_written != args.rows or in_target != args.rows:
            raise RuntimeError(
                f"initial load wrote {initial.rows_written} rows, target holds {in_target},"
                f" expected {args.rows}"
            )
        load_rate = args.rows / initial.wall_s
        say(
            f"(b) syncd initial load: {initial.wall_s:.2f}s wall, {initial.engine_s:.2f}s engine,"
            f" {load_rate:,.0f} rows/s, peak RSS {initial.peak_rss_kb / 1024:.0f} MB"
        )

        # (c) catch-up after 1% of the rows got a new cursor value.
        touched = asyncio.run(touch_one_percent(source_dsn))
        asyncio.run(checkpoint(target_dsn))
        catchup = run_syncd(sync_cmd, workdir / "catchup.jsonl")
        if catchup.rows_read != touched or catchup.rows_written != touched:
            raise RuntimeError(
                f"catch-up read {catchup.rows_read} and wrote {catchup.rows_written} rows,"
                f" expected {touched}"
            )
        say(
            f"(c) catch-up of {touched:,} rows: {catchup.wall_s:.2f}s wall,"
            f" {catchup.engine_s:.3f}s engine, peak RSS {catchup.peak_rss_kb / 1024:.0f} MB"
        )

        # (d) per-batch times from (b)'s log.
        figures = batch_figures(initial, args.batch_size)
        if args.keep_logs is not None:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for name in ("initial.jsonl", "catchup.jsonl"):
                shutil.copy(workdir / name, args.keep_logs / name)
    finally:
        if created:
            asyncio.run(
                admin_execute(
                    args.server,
                    *(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in created),
                )
            )
        shutil.rmtree(workdir, ignore_errors=True)

    load_ratio = load_rate / copy_rate
    engine_ratio = args.rows / initial.engine_s / copy_rate
    write_drift = figures.last_write_ms / figures.first_write_ms
    interval_drift = figures.last_interval_ms / figures.first_interval_ms
    rss_mb = initial.peak_rss_kb / 1024
    total = time.perf_counter() - bench_started
    rows = [
        (
            f"(a) COPY pipe, binary, {copy_method} (limit)",
            f"{copy_rate:,.0f} rows/s ({args.rows / copy_rate:.2f} s)",
            "",
            "",
        ),
        *[
            (f"(a) COPY pipe via {m}", f"{r:,.0f} rows/s ({args.rows / r:.2f} s)", "", "")
            for m, r in copy_results.items()
            if len(copy_results) > 1
        ],
        (
            "(b) `syncd sync` initial load, subprocess wall",
            f"{load_rate:,.0f} rows/s ({initial.wall_s:.2f} s)",
            "",
            "",
        ),
        (
            "(b) CPU time of the syncd process (user+sys)",
            f"{initial.cpu_s:.2f} s ({initial.cpu_s / initial.wall_s:.0%} of its wall time)",
            "",
            "",
        ),
        (
            "(b)/(a) initial load vs COPY pipe",
            f"{load_ratio:.2f}x",
            f">= {TARGET_LOAD_RATIO}x",
            verdict(load_ratio >= TARGET_LOAD_RATIO),
        ),
        (
            "(b)/(a) by engine time (run_started..run_finished)",
            f"{engine_ratio:.2f}x ({initial.engine_s:.2f} s)",
            f">= {TARGET_LOAD_RATIO}x",
            verdict(engine_ratio >= TARGET_LOAD_RATIO),
        ),
        (
            f"(c) catch-up of {touched:,} rows, engine time",
            f"{catchup.engine_s:.3f} s",
            f"< {TARGET_CATCHUP_S} s",
            verdict(catchup.engine_s < TARGET_CATCHUP_S),
        ),
        (
            f"(c) catch-up of {touched:,} rows, subprocess wall",
            f"{catchup.wall_s:.3f} s",
            f"< {TARGET_CATCHUP_S} s",
            verdict(catchup.wall_s < TARGET_CATCHUP_S),
        ),
        (
            "(d) batch write (duration_ms), median first 10 / last 10",
            f"{figures.first_write_ms:.0f} / {figures.last_write_ms:.0f} ms = {write_drift:.2f}x",
            f"<= {TARGET_BATCH_DRIFT}x",
            verdict(write_drift <= TARGET_BATCH_DRIFT),
        ),
        (
            "(d) batch interval (commit to commit), median first 10 / last 10",
            f"{figures.first_interval_ms:.0f} / {figures.last_interval_ms:.0f} ms"
            f" = {interval_drift:.2f}x",
            f"<= {TARGET_BATCH_DRIFT}x",
            verdict(interval_drift <= TARGET_BATCH_DRIFT),
        ),
        (
            f"(e) peak RSS of syncd, batch_size {args.batch_size:,}",
            f"{rss_mb:.0f} MB",
            f"< {TARGET_RSS_MB:.0f} MB",
            verdict(rss_mb < TARGET_RSS_MB),
        ),
    ]
    print()
    print(
        f"syncd benchmark: {args.rows:,} rows x {len(columns)} columns,"
        f" batch_size {args.batch_size:,}, {figures.batches} batches, {os.cpu_count()} CPUs"
    )
    print()
    print("| figure | measured | target | result |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(f"Command: `{command_line}`")
    print(f"syncd command: `{shlex.join([*sync_cmd[:2], '<config.yaml>', *sync_cmd[3:]])}`")
    print(f"Benchmark took {total:.0f} s.")


if __name__ == "__main__":
    main()

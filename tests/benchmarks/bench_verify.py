"""The benchmark of issue 12: what ``syncd verify`` costs on identical tables and finds
among scattered differences.

Run from the repository root (about two minutes at the default 1M rows):

    .venv/bin/python tests/benchmarks/bench_verify.py [--rows 1000000] [--differences 100]

It creates two databases of its own (dropped at the end), a ``--rows``-row,
15-column opportunities table in the source (``syncd.demo.create_demo_source``), loads
the target with ``syncd sync`` (timed: the full re-sync that verify is compared with),
and measures:

(a) the floor: the two full-table ``count(*) + sum(row hash)`` scans, source and target
    side by side, as verify's SQL writes them;
(b) ``syncd verify --json`` of the identical tables, as a subprocess whose connections
    pass through a counting TCP relay: bytes moved between the databases and syncd,
    wall time against (a), peak RSS;
(c) the same after ``--differences`` rows of the target, scattered at random, were
    changed: the keys found, and the rows fetched as a share of the table.

It prints a Markdown table of the figures against the issue's targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import yaml
from bench_sync import (
    CURSOR,
    KEY,
    SYNC_NAME,
    TARGET_TABLE,
    create_source,
    dsn,
    write_config,
)

from syncd.identifiers import TableName
from syncd.verify.postgres import Compared, PostgresSide
from syncd.verify.sides import Segment

TARGET_BYTES = 1_000_000
TARGET_TIME_RATIO = 1.5
TARGET_FETCHED_SHARE = 0.02
TARGET_RSS_MB = 100.0


class Relay:
    """A TCP relay to the server that counts the bytes passing through it both ways."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.bytes = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while chunk := await source.read(65536):
                    self.bytes += len(chunk)
                    sink.write(chunk)
                    await sink.drain()
            finally:
                sink.close()

        await asyncio.gather(
            pump(reader, upstream_writer), pump(upstream_reader, writer), return_exceptions=True
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--differences", type=int, default=100)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--user", default="postgres")
    return parser.parse_args()


async def admin(server: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn(server, "postgres"))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def side(conn: asyncpg.Connection, columns: list[tuple[str, str]]) -> PostgresSide:
    compared = [Compared(name, f'"{name}"', pg_type) for name, pg_type in columns]
    return PostgresSide(conn, TableName.parse(TARGET_TABLE).sql, compared, [KEY])


async def floor(source_dsn: str, target_dsn: str, columns: list[tuple[str, str]]) -> float:
    """Seconds for the two full count + sum(hash) scans, side by side."""
    source, target = await asyncpg.connect(source_dsn), await asyncpg.connect(target_dsn)
    try:
        sides = [await side(source, columns), await side(target, columns)]
        began = time.perf_counter()
        await asyncio.gather(*(s.checksums(Segment(), []) for s in sides))
        return time.perf_counter() - began
    finally:
        await source.close()
        await target.close()


async def verify_through_relay(args: argparse.Namespace, config: dict[str, Any], workdir: Path):
    """Run ``syncd verify --json`` with its connections through a counting relay."""
    relay = Relay(args.host, args.port)
    port = await relay.start()
    relayed = json.loads(
        json.dumps(config).replace(f"{args.host}:{args.port}", f"127.0.0.1:{port}")
    )
    path = workdir / "relayed.yaml"
    path.write_text(yaml.safe_dump(relayed))
    syncd = str(Path(sys.executable).parent / "syncd")
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        syncd, "-c", str(path), "verify", SYNC_NAME, "--json",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    wall = time.perf_counter() - began
    if process.returncode not in (0, 3):
        raise RuntimeError(f"syncd verify failed ({process.returncode}): {err.decode()}")
    assert relay.server is not None
    relay.server.close()
    return json.loads(out), relay.bytes, wall


def main() -> None:
    args = parse_args()
    server = f"postgresql://{args.user}@{args.host}:{args.port}"
    suffix = uuid.uuid4().hex[:10]
    source_db, target_db = f"syncd_bv_src_{suffix}", f"syncd_bv_tgt_{suffix}"
    source_dsn, target_dsn = dsn(server, source_db), dsn(server, target_db)
    workdir = Path(tempfile.mkdtemp(prefix="syncd-bench-verify-"))
    started = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {text}", file=sys.stderr, flush=True)

    try:
        for name in (source_db, target_db):
            asyncio.run(admin(server, f'CREATE DATABASE "{name}"'))
        columns = asyncio.run(create_source(source_dsn, args.rows))
        say(f"{args.rows:,} source rows")
        path = workdir / "config.yaml"
        write_config(path, source_dsn, target_dsn)
        config = yaml.safe_load(path.read_text())
        began = time.perf_counter()
        subprocess.run(
            [str(Path(sys.executable).parent / "syncd"), "-c", str(path), "sync", SYNC_NAME],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        sync_s = time.perf_counter() - began
        say(f"syncd sync (full load): {sync_s:.1f}s")
        asyncio.run(vacuum(target_dsn))

        floor_s = min(asyncio.run(floor(source_dsn, target_dsn, columns)) for _ in range(2))
        say(f"(a) two count + sum(hash) scans side by side: {floor_s:.2f}s")

        equal, equal_bytes, equal_s = asyncio.run(verify_through_relay(args, config, workdir))
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        say(f"(b) verify, identical: {equal_s:.2f}s, {equal_bytes:,} bytes, equal={equal['equal']}")

        changed = random.Random(12).sample(range(1, args.rows + 1), args.differences)
        asyncio.run(change_target(target_dsn, changed))
        diff, diff_bytes, diff_s = asyncio.run(verify_through_relay(args, config, workdir))
        found = {int(key[0]) for key in diff["different"]["keys"]}
        say(f"(c) verify, {args.differences} differences: {diff_s:.2f}s, found {len(found)}")

        share = diff["rows_fetched"] / args.rows
        print(f"\n`{Path(sys.executable).name} tests/benchmarks/bench_verify.py"
              f" --rows {args.rows} --differences {args.differences}`\n")  # fmt: skip
        rows = [
            ("(b) bytes moved, identical tables", f"{equal_bytes:,}", f"< {TARGET_BYTES:,}",
             equal_bytes < TARGET_BYTES),
            ("(b) verify time / two side-by-side scans",
             f"{equal_s:.2f} s / {floor_s:.2f} s = {equal_s / floor_s:.2f}",
             f"≤ {TARGET_TIME_RATIO}", equal_s / floor_s <= TARGET_TIME_RATIO),
            ("(b) peak RSS of syncd verify", f"{rss_mb:.0f} MB", f"< {TARGET_RSS_MB:.0f} MB",
             rss_mb < TARGET_RSS_MB),
            ("(b) segments checked, rows fetched", f"{equal['segments_checked']},"
             f" {equal['rows_fetched']}", "-", True),
            ("(c) differences found", f"{len(found)} of {args.differences}",
             "exactly those", found == set(changed) and diff["missing"]["count"] == 0
             and diff["extra"]["count"] == 0),
            ("(c) rows fetched", f"{diff['rows_fetched']:,} ({share:.2%})",
             f"< {TARGET_FETCHED_SHARE:.0%}", share < TARGET_FETCHED_SHARE),
            ("(c) verify time, bytes moved", f"{diff_s:.2f} s, {diff_bytes:,} bytes", "-", True),
            ("full re-sync (syncd sync of the empty target)", f"{sync_s:.1f} s", "-", True),
        ]  # fmt: skip
        print("| measure | figure | target | met |\n|---|---|---|---|")
        for measure, figure, target, met in rows:
            print(f"| {measure} | {figure} | {target} | {'yes' if met else 'NO'} |")
    finally:
        for name in (source_db, target_db):
            asyncio.run(admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def vacuum(target_dsn: str) -> None:
    conn = await asyncpg.connect(target_dsn)
    try:
        await conn.execute(f"VACUUM (ANALYZE) {TableName.parse(TARGET_TABLE).sql}")
    finally:
        await conn.close()


async def change_target(target_dsn: str, keys: list[int]) -> None:
    conn = await asyncpg.connect(target_dsn)
    try:
        await conn.execute(
            f"UPDATE {TableName.parse(TARGET_TABLE).sql} SET {CURSOR} = {CURSOR}"
            f" - interval '1 second' WHERE {KEY} = ANY($1::bigint[])",
            keys,
        )
    finally:
        await conn.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

"""The ``syncd`` command line: run, inspect and reset syncs by hand.

``-c FILE`` may come before the command or after it; given in both places, the
one after the command wins, as a later option does.

Exit codes: 0 done, 1 the sync failed (for ``check-config``: a database or a
sync failed its check), 2 usage, 3 ``verify`` found differences that remain, 69
the daemon cannot listen on its address, 75 already running elsewhere, 78
configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from syncd import logs, pg
from syncd.check import UNREACHABLE_OR_REFUSED, check_config
from syncd.chunks import ChunkStore
from syncd.config import (
    Config,
    EverySchedule,
)
from syncd.configfile import load_config
from syncd.demo import DEMO_MAX_LAG, DEMO_SCHEDULE, DEMO_SYNC, create_demo_source, demo_writer
from syncd.engine import Engine
from syncd.errors import ConfigError, SyncdError
from syncd.freshness import Freshness, freshness, read_newest
from syncd.identifiers import TableName
from syncd.pools import OwnConnections
from syncd.progress import TerminalProgress
from syncd.redact import redact, scrub
from syncd.runs import RunRequest
from syncd.state import Position, StateStore
from syncd.status import collect_status
from syncd.units import format_duration

EXIT_FAILED = 1
EXIT_DIFFERENT = 3
"""verify: the target differs from the source, and no repair made it equal."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="Keep a PostgreSQL table in step with an Oracle or PostgreSQL one.",
    )
    _add_config_option(parser, default=None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        # 'syncd run -c FILE' is how people write it. Left without a default, it cannot
        # overwrite a -c given before the command when none follows it.
        command = commands.add_parser(name, **kwargs)
        _add_config_option(command, default=argparse.SUPPRESS)
        return command

    sync = add_command("sync", help="run one sync to the end now")
    sync.add_argument("name", nargs="?", help="the sync (default: default_sync)")
    sync.add_argument("--batch-size", type=_positive_int, metavar="N")
    sync.add_argument(
        "--full-refresh", action="store_true", help="re-read from the start, keeping the counters"
    )

    status = add_command("status", help="show where each sync stands")
    status.add_argument("name", nargs="?")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")

    verify = add_command("verify", help="prove the target equals the source, or say where not")
    verify.add_argument("name", nargs="?", help="the sync (default: default_sync)")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.add_argument(
        "--repair", action="store_true", help="copy what differs; delete as verify.deletes says"
    )
    verify.add_argument(
        "--confirm-deletes",
        action="store_true",
        help="delete even beyond verify.max_delete_rows and max_delete_ratio",
    )

    reset = add_command("reset", help="start a sync over; the target's rows stay")
    reset.add_argument("name")

    add_command(
        "check-config",
        help="validate the config, reach every database and check what each sync reads",
    )

    add_command("run", help="run the daemon: schedules, HTTP API, systemd notify")

    demo = add_command("demo", help="make a demo source table and sync it")
    demo.add_argument("--rows", type=_positive_int, default=10_000, metavar="N")
    demo.add_argument(
        "--once", action="store_true", help="sync once with a progress bar instead of serving"
    )
    demo.add_argument(
        "--writes-per-second",
        type=_non_negative_float,
        default=5.0,
        metavar="N",
        help="rows the demo's writer changes a second while serving (default 5; 0: none)",
    )
    return parser


def _add_config_option(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=default,
        metavar="FILE",
        help="config file (default: $SYNCD_CONFIG, else ./config.yaml)",
    )


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, found {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, found {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, found {value}")
    return value


REPORTING_COMMANDS = frozenset({"check-config", "status"})


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    path = args.config_path = args.config or Path(os.environ.get("SYNCD_CONFIG", "config.yaml"))
    secrets: list[str] = []
    try:
        config = load_config(path)
        secrets = config.secrets()
        interactive = args.command == "sync" or (args.command == "demo" and args.once)
        interactive = interactive and sys.stderr.isatty()
        if interactive:
            logs.configure("warning", "console", secrets=secrets, stream=sys.stderr)
        else:
            # A command that reports on stdout keeps it for its report: its logs, such as
            # a warning met while describing a source, go beside it on stderr.
            stream = sys.stderr if args.command in REPORTING_COMMANDS else None
            logs.configure(
                config.logging.level, config.logging.format, secrets=secrets, stream=stream
            )
        command = COMMANDS[args.command]
        code = asyncio.run(command(config, args))
    except SyncdError as exc:
        print(f"syncd: {scrub(str(exc), secrets)}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    _exit(code)


def _exit(code: int) -> None:
    """Exit with everything said and nothing more to wait for. By now every connection is
    closed and every task done: the interpreter's own teardown, which collects every
    module, would add a sixth of a second to each command and change nothing."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _sync(config: Config, args: argparse.Namespace) -> int:
    name, _ = config.sync(args.name)
    request = RunRequest(
        sync_name=name, trigger="cli", batch_size=args.batch_size, full_refresh=args.full_refresh
    )
    return await _run_with_progress(config, request)


async def _run_with_progress(config: Config, request: RunRequest) -> int:
    progress = TerminalProgress() if sys.stderr.isatty() else None
    try:
        result = await Engine(config, observer=progress).run(request)
    finally:
        if progress is not None:
            progress.close()
    print(
        f"{result.sync_name}: {result.status}: {result.rows_read} rows read,"
        f" {result.rows_written} written, {result.rows_unchanged} unchanged"
        f" in {result.batches} batches (run {result.run_id})",
        file=sys.stderr,
    )
    return 0 if result.status == "succeeded" else EXIT_FAILED


async def _status(config: Config, args: argparse.Namespace) -> int:
    names = [config.sync(args.name)[0]] if args.name else list(config.syncs)
    store = StateStore(config.target.state_schema)
    conn = await pg.connect(config.target.dsn, config.target.secret())
    try:
        await store.migrate(conn)
        statuses = [await collect_status(conn, store, n, config.syncs[n]) for n in names]
        progress = await store.progress(conn)
        loads = await ChunkStore(store.schema).progress(conn)
    finally:
        await conn.close()
    seen = [await _freshness(config, n, progress.get(n, (None, None))) for n in names]
    if args.json:
        # chunks: the sync's parallel load in progress, or its last, over every process.
        payload = [
            s.as_json()
            | {"freshness": fresh.as_json() | {"error": error}}
            | {"chunks": asdict(loads[s.sync_name]) if s.sync_name in loads else None}
            for s, (fresh, error) in zip(statuses, seen, strict=True)
        ]
        print(json.dumps(payload[0] if args.name else payload, indent=2))
        return 0
    header = ("sync", "state", "offset", "synced", "in target", "lag", "last sync", "last error")
    rows = [
        (
            s.sync_name,
            "running" if s.running else "complete" if s.is_complete else "idle",
            str(s.current_offset),
            str(s.total_synced),
            "-" if s.total_in_db is None else str(s.total_in_db),
            _lag_cell(fresh, error),
            s.last_sync_at.strftime("%Y-%m-%d %H:%M:%S%z") if s.last_sync_at else "never",
            (s.last_error or "").splitlines()[0][:60] if s.last_error else "",
        )
        for s, (fresh, error) in zip(statuses, seen, strict=True)
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 0


async def _freshness(
    config: Config, name: str, progress: tuple[Position | None, datetime | None]
) -> tuple[Freshness, str | None]:
    """The sync's freshness, asking its source for the newest cursor value; when the source
    does not answer, what is known without it and why."""
    sync = config.syncs[name]
    position, last_success_at = progress
    newest = kind = error = None
    if sync.cursor is not None:
        try:
            newest, kind = await read_newest(
                OwnConnections(config), sync, config.sources[sync.source], describe=True
            )
        except Exception as exc:
            error = scrub(f"{type(exc).__name__}: {exc}", config.secrets())
    seen = freshness(
        cursor_kind=kind,
        source_newest=newest,
        synced_to=position[0] if position is not None and sync.cursor else None,
        last_success_at=last_success_at,
        max_lag=sync.max_lag,
    )
    return seen, error


def _lag_cell(seen: Freshness, error: str | None) -> str:
    if error is not None:
        return "? (source unreadable)"
    lag = "?" if seen.lag_seconds is None else format_duration(timedelta(seconds=seen.lag_seconds))
    return f"{lag} stale" if seen.stale else lag


async def _verify(config: Config, args: argparse.Namespace) -> int:
    # Imported here: only this command needs the search and its SQL.
    from syncd.verify.verifier import verify

    try:
        report = await verify(
            config, args.name, repair_too=args.repair, confirm_deletes=args.confirm_deletes
        )
    except UNREACHABLE_OR_REFUSED as exc:
        if isinstance(exc, SyncdError):
            raise
        # Nothing was deleted: a repair deletes only after every read has succeeded.
        raise SyncdError(f"verify failed: {type(exc).__name__}: {exc}") from None
    print(json.dumps(report.as_json(), indent=2) if args.json else report.as_table())
    if report.repaired is not None and report.repaired.refused is not None:
        print(f"syncd: deletes refused: {report.repaired.refused}", file=sys.stderr)
    return 0 if report.settled else EXIT_DIFFERENT


async def _reset(config: Config, args: argparse.Namespace) -> int:
    name, _ = config.sync(args.name)
    store = StateStore(config.target.state_schema)
    conn = await pg.connect(config.target.dsn, config.target.secret())
    try:
        await store.migrate(conn)
        await store.reset(conn, name)
    finally:
        await conn.close()
    print(f"sync state reset for {name!r}; the target table was not touched")
    return 0


async def _check_config(config: Config, args: argparse.Namespace) -> int:
    return 0 if await check_config(config) else EXIT_FAILED


async def _demo(config: Config, args: argparse.Namespace) -> int:
    if DEMO_SYNC not in config.syncs:
        raise ConfigError(f"the config has no sync named {DEMO_SYNC!r} for the demo")
    try:
        probe = await pg.connect(config.target.dsn, config.target.secret(), connect_timeout=3)
    except OSError:
        data_dir = _demo_data_dir()
        print(
            f"demo: no PostgreSQL at {redact(config.target.dsn)};"
            f" starting an embedded one in {data_dir}",
            file=sys.stderr,
        )
        from syncd.embedded import embedded_postgres  # only the demo's fallback needs it

        async with embedded_postgres(data_dir) as dsn:
            return await _demo_on(_pointed_at(config, dsn), args)
    await probe.close()
    return await _demo_on(config, args)


def _demo_data_dir() -> Path:
    if "SYNCD_DEMO_DATA_DIR" in os.environ:
        return Path(os.environ["SYNCD_DEMO_DATA_DIR"])
    if os.geteuid() == 0:
        # The server runs as an unprivileged user, who cannot enter /root.
        return Path("/var/lib/syncd/demo-postgres")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "syncd" / "demo-postgres"


def _pointed_at(config: Config, dsn: str) -> Config:
    """The same config with the target and the demo's source moved to ``dsn``."""
    source_name = config.syncs[DEMO_SYNC].source
    sources = dict(config.sources)
    sources[source_name] = sources[source_name].model_copy(update={"dsn": dsn, "password": None})
    target = config.target.model_copy(update={"dsn": dsn, "password": None})
    return config.model_copy(update={"target": target, "sources": sources})


async def _demo_on(config: Config, args: argparse.Namespace) -> int:
    sync = config.syncs[DEMO_SYNC]
    source = config.sources[sync.source]
    store = StateStore(config.target.state_schema)
    conn = await pg.connect(source.dsn, source.secret())
    try:
        await create_demo_source(conn, TableName.parse(sync.table or ""), args.rows)
    finally:
        await conn.close()
    conn = await pg.connect(config.target.dsn, config.target.secret())
    try:
        await store.migrate(conn)
        await store.reset(conn, DEMO_SYNC)
        await conn.execute(f"DROP TABLE IF EXISTS {sync.target.sql}")
    finally:
        await conn.close()
    print(
        f"demo: {args.rows} opportunities in {sync.table}; syncing into {sync.target}",
        file=sys.stderr,
    )
    if args.once:
        return await _run_with_progress(config, RunRequest(sync_name=DEMO_SYNC, trigger="cli"))
    api = f"http://{config.api.host}:{config.api.port}"
    print(
        f"demo: serving the demo sync every {format_duration(DEMO_SCHEDULE)} while a writer"
        f" changes {args.writes_per_second:g} rows a second. Status page: {api}/"
        f"  API: {api}/api/batch-sync/status  API docs: {api}/docs  Metrics: {api}/metrics"
        "  (Ctrl-C stops)",
        file=sys.stderr,
    )
    live = sync.model_copy(
        update={"schedule": EverySchedule(every=DEMO_SCHEDULE), "max_lag": DEMO_MAX_LAG}
    )
    demo_only = config.model_copy(
        update={"syncs": {DEMO_SYNC: live}, "default_sync": DEMO_SYNC,
                "freshness_interval": DEMO_SCHEDULE}
    )  # fmt: skip
    table = TableName.parse(sync.table or "")
    async with demo_writer(
        partial(pg.connect, source.dsn, source.secret()), table, args.writes_per_second
    ):
        return await _serve(demo_only, reload_from=None)


async def _run(config: Config, args: argparse.Namespace) -> int:
    return await _serve(config, reload_from=args.config_path)


async def _serve(config: Config, reload_from: Path | None) -> int:
    # Imported here: the daemon's HTTP, metrics and scheduler libraries would add a
    # quarter of a second to every short command such as 'syncd sync' or 'status'.
    from syncd.daemon import serve

    return await serve(config, reload_from=reload_from)


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "sync": _sync,
    "status": _status,
    "reset": _reset,
    "verify": _verify,
    "check-config": _check_config,
    "demo": _demo,
    "run": _run,
}

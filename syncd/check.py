"""``syncd check-config``: the file is valid; does every database answer, and does every
sync find what it reads? Each check waits a bounded time, so a database that accepts a
connection and never answers is reported, not waited on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import timedelta
from functools import partial
from typing import Any

import asyncpg

from syncd.config import (
    Config,
    OracleSourceConfig,
    PostgresSourceConfig,
    SourceConfig,
    SyncConfig,
    TargetConfig,
)
from syncd.errors import SyncdError
from syncd.redact import redact, scrub
from syncd.retry import Retryable
from syncd.sources import check_source, open_source
from syncd.sources.postgres import check_postgres
from syncd.units import format_duration

Database = TargetConfig | PostgresSourceConfig | OracleSourceConfig


async def check_config(config: Config) -> bool:
    """Print what each database and sync answers; whether every one passed its check."""
    print(f"config: ok ({len(config.sources)} sources, {len(config.syncs)} syncs)")
    secrets = config.secrets()
    target = config.target
    # Each probe is made only when its turn comes, so one that fails leaves none unawaited.
    target_check = partial(check_postgres, target.dsn, target.secret())
    failed = not await _check_database("target", target, target_check, secrets)
    unreachable: set[str] = set()
    for name, source in config.sources.items():
        source_check = partial(check_source, source)
        if not await _check_database(f"source {name}", source, source_check, secrets):
            unreachable.add(name)
    for name, sync in config.syncs.items():
        if sync.source in unreachable:
            # Its source's failure is told once, above; the same error per sync would bury it.
            print(f"sync {name}: not checked: source {sync.source!r} could not be reached")
            continue
        source = config.sources[sync.source]
        passed, outcome = await _bounded(
            partial(_describe_sync, source, sync), _check_bound(source), secrets
        )
        print(f"sync {name}: ok ({outcome})" if passed else f"sync {name}: FAILED: {outcome}")
        failed = failed or not passed
    return not (failed or unreachable)


async def _check_database(
    label: str,
    database: Database,
    check: Callable[[], Coroutine[Any, Any, str]],
    secrets: list[str],
) -> bool:
    passed, outcome = await _bounded(check, _check_bound(database), secrets)
    if passed:
        print(f"{label}: ok ({redact(database.dsn)}, {outcome})")
    else:
        print(f"{label}: FAILED ({redact(database.dsn)}): {outcome}")
    return passed


CHECK_STATEMENT_LIMIT = timedelta(seconds=60)
"""The longest check-config waits for one database to answer once connected. A run may
wait its whole statement_timeout; a person at a terminal should not."""

UNREACHABLE_OR_REFUSED = (  # what a database that is away, or says no, raises
    SyncdError,
    Retryable,
    OSError,  # TimeoutError among them
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def _check_bound(database: Database) -> timedelta:
    return database.connect_timeout + min(database.statement_timeout, CHECK_STATEMENT_LIMIT)


async def _bounded(
    check: Callable[[], Coroutine[Any, Any, str]], within: timedelta, secrets: list[str]
) -> tuple[bool, str]:
    """Whether ``check`` answered within its bound, and its answer or the reason it did not."""
    deadline = asyncio.timeout(within.total_seconds())
    try:
        async with deadline:
            return True, await check()
    except UNREACHABLE_OR_REFUSED as exc:
        if deadline.expired():
            return False, f"no answer within {format_duration(within)}"
        if isinstance(exc, TimeoutError) and not str(exc):
            return False, "timed out"  # the driver's own connect timeout, which says nothing
        return False, scrub(str(exc), secrets)


async def _describe_sync(source_config: SourceConfig, sync: SyncConfig) -> str:
    """What the source says the sync would read: its table or query, key and cursor."""
    async with open_source(source_config, sync) as source:
        shape = await source.describe()
    cursor = f"cursor {shape.cursor}" if shape.cursor is not None else "no cursor"
    described = f"{len(shape.columns)} columns, key ({', '.join(shape.key)}), {cursor}"
    if shape.missing_index is not None:
        described += (
            f"; no index leads with {(shape.cursor or shape.key[0])!r}, so each run reads the"
            f" table in one pass: {shape.missing_index}"
        )
    return described

"""The seed's /api/batch-sync/* contract, start to reset, and what was added beside it:
every sync at once, and a sync's recent runs.
"""

from __future__ import annotations

import asyncio
import functools
import urllib.parse
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from aiohttp import web

from syncd.api.http import (
    PREFIX,
    SERVICES,
    ApiError,
    Services,
    answer,
    json_body,
    parsed,
    query_of,
    target_connection,
)
from syncd.chunks import ChunkStore
from syncd.config import CronSchedule, EverySchedule
from syncd.errors import Busy, NotAccepting
from syncd.events import LoadProgress, RunCounts
from syncd.freshness import Freshness as FreshnessSeen
from syncd.identifiers import TableName
from syncd.payload import (
    Completed,
    Count,
    Failed,
    Freshness,
    Health,
    LastVerify,
    NameBody,
    NameQuery,
    PoolUse,
    Queued,
    ResetDone,
    RunBody,
    RunQuery,
    Runs,
    RunsQuery,
    SchemaChange,
    Started,
    Status,
    StillRunning,
    Syncs,
    SyncState,
    VerifyBody,
    VerifyStarted,
)
from syncd.pg import Conn
from syncd.runner import LiveRun
from syncd.state import SchemaChange as RecordedChange
from syncd.status import collect_status
from syncd.units import format_duration
from syncd.verify import history

SEED_ENDPOINTS = [
    f"POST {PREFIX}/start",
    f"POST {PREFIX}/start-sync",
    f"GET {PREFIX}/status",
    f"POST {PREFIX}/reset",
    f"GET {PREFIX}/count",
    f"GET {PREFIX}/health",
]
RECENT_SCHEMA_CHANGES = 5
"""How many of a sync's latest column changes its status shows."""


async def _run_params(request: web.Request) -> tuple[str, int | None]:
    """sync_name and batch_size, from the query string and/or a JSON body, whose values
    win; each is checked in full, so that a bad value is refused even where overridden."""
    query = query_of(request, RunQuery)
    body = parsed(request, RunBody, await json_body(request))
    name, _ = request.app[SERVICES].runner.config.sync(body.sync_name or query.sync_name)
    return name, body.batch_size or query.batch_size


async def _trigger(request: web.Request) -> LiveRun:
    services = request.app[SERVICES]
    name, batch_size = await _run_params(request)
    if services.runner.live(name) is None and services.runner.queued(name) is None:
        async with target_connection(request) as conn:
            held = await services.store.is_running(conn, name)
            state = await services.store.load(conn, name) if held else None
        # While we asked, a concurrent request of ours may have started the run that now
        # holds the lock: that one is busy here, not in another process.
        if state is not None and services.runner.live(name) is None:
            raise Busy(
                f"sync {name!r} is already running in another process"
                f" (pid {state.holder_pid} on {state.holder_host})",
                run_id=state.holder_run_id,
            )
    return services.runner.trigger(name, trigger="http", batch_size=batch_size)


def _about(live: LiveRun) -> dict[str, Any]:
    """What every answer about a run says of it."""
    return {"batch_size": live.batch_size, "sync_name": live.sync_name, "run_id": live.run_id}


async def start(request: web.Request) -> web.Response:
    runner = request.app[SERVICES].runner
    live = await _trigger(request)
    run = _about(live)
    if live.state == "queued":
        position = runner.queue_position(live.sync_name)
        running = runner.counts()["running"]
        message = (
            f"Batch sync queued with batch_size={live.batch_size}: {running} running,"
            f" position {position} in the queue"
        )
        return answer(Queued(message=message, queue_position=position, **run), 202)
    message = f"Batch sync started with batch_size={live.batch_size}"
    return answer(Started(message=message, **run), 202)


async def start_sync(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    live = await _trigger(request)
    run = _about(live)
    wait = services.runner.config.api.start_sync_wait
    try:
        async with asyncio.timeout(wait.total_seconds()):
            result = await services.runner.wait(live)
    except TimeoutError:
        return _still_running(live, wait)
    if result.status == "succeeded":
        async with target_connection(request) as conn:
            state = await services.store.load(conn, live.sync_name)
        return answer(
            Completed(total_synced=state.total_synced, rows_this_run=result.rows_read, **run)
        )
    if result.status == "cancelled":
        raise NotAccepting(result.error or "syncd is shutting down")
    if result.status == "skipped":
        raise Busy(result.error, run_id=live.run_id)
    return answer(Failed(error=result.error, **run), 502)


def _still_running(live: LiveRun, waited: timedelta) -> web.Response:
    """The answer to a start-sync whose run goes on: where to follow it."""
    name = urllib.parse.quote(live.sync_name, safe="")
    status_url = f"{PREFIX}/status?sync_name={name}"
    still = StillRunning(
        message=f"Batch sync still running after {format_duration(waited)}: follow run"
        f" {live.run_id} at {status_url}",
        status_url=status_url,
        runs_url=f"{PREFIX}/runs?sync_name={name}",
        events_url=f"{PREFIX}/events",
        **_about(live),
    )
    return answer(still, 202, Location=status_url)


async def status(request: web.Request) -> web.Response:
    name = query_of(request, NameQuery).sync_name
    return answer(Status(**(await _sync_state(request, name)).model_dump()))


async def _sync_state(request: web.Request, name: str | None) -> SyncState:
    services = request.app[SERVICES]
    name, sync = services.runner.config.sync(name)
    async with target_connection(request) as conn:
        state = await collect_status(
            conn, services.store, name, sync, functools.partial(_rows_in, services)
        )
        last_verify = await history.last(conn, services.store.schema, name)
        changes = await services.store.schema_changes(conn, name, RECENT_SCHEMA_CHANGES)
        load = (await ChunkStore(services.store.schema).progress(conn, name)).get(name)
    seen = services.watch.freshness(name) if services.watch else None
    live = services.runner.live(name)
    queued = services.runner.queued(name)
    last = services.runner.last_result(name)
    return SyncState(
        **asdict(state)
        | {
            "running": state.running or live is not None,
            "run_id": live.run_id if live else queued.run_id if queued else state.run_id,
        },
        queued=queued is not None,
        queued_at=queued.queued_at if queued else None,
        queue_position=services.runner.queue_position(name),
        rows_per_second=round(live.rows_per_second, 1) if live else None,
        source_rows_estimate=live.rows_estimate if live else None,
        run_rows_read=live.rows_read if live else None,
        last_run_status=last.status if last else None,
        missing_index=last.missing_index if last else None,
        schedule=_schedule_text(sync.schedule),
        next_run_at=services.schedules.next_run_at(name),
        last_verify=None if last_verify is None else LastVerify(**last_verify),
        freshness=Freshness(**asdict(seen)) if seen else None,
        schema_changes=[_schema_change(change) for change in changes],
        verifying=services.verifications is not None and services.verifications.going(name),
        chunks=None if load is None else LoadProgress(**asdict(load)),
    )


def _schema_change(change: RecordedChange) -> SchemaChange:
    recorded = asdict(change)
    return SchemaChange(column=recorded.pop("column_name"), **recorded)


async def _rows_in(services: Services, conn: Conn, table: TableName) -> int | None:
    """The rows in a target table, counted anew only after a while or after a run of a sync
    that writes it has finished."""
    runner = services.runner
    finished = tuple(
        last.run_id if (last := runner.last_result(name)) else None
        for name, sync in runner.config.syncs.items()
        if sync.target.sql == table.sql
    )
    return await services.counts(conn, table, after=finished)


def _schedule_text(schedule: EverySchedule | CronSchedule | None) -> str | None:
    if isinstance(schedule, EverySchedule):
        return f"every {format_duration(schedule.every)}"
    return f"cron {schedule.cron}" if schedule is not None else None


async def reset(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    query = query_of(request, NameQuery)
    body = parsed(request, NameBody, await json_body(request))
    name, _ = services.runner.config.sync(body.sync_name or query.sync_name)
    live = services.runner.live(name)
    if live is not None:
        raise Busy(
            f"sync {name!r} is running (run {live.run_id}); reset refused", run_id=live.run_id
        )
    async with target_connection(request) as conn:
        await services.store.reset(conn, name)
    services.runner.publish({"type": "sync_reset", "sync_name": name})
    return answer(ResetDone(message=f"Sync state reset for '{name}'", sync_name=name))


async def verify_start(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = parsed(request, VerifyBody, await json_body(request))
    if services.verifications is None:
        raise ApiError(503, "this daemon cannot verify")
    name, verify_id = services.verifications.start(body.sync, repair=body.repair)
    what = "repair" if body.repair else "verify"
    message = f"The {what} of '{name}' started: its outcome comes as a 'verify' event"
    return answer(VerifyStarted(message=message, sync_name=name, verify_id=verify_id), 202)


async def count(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name, sync = services.runner.config.sync(query_of(request, NameQuery).sync_name)
    target = sync.target
    async with target_connection(request) as conn:
        rows = await _rows_in(services, conn, target)
    return answer(Count(count=rows or 0, table=target.name, sync_name=name))


async def health(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    reasons = [
        _stale_reason(name, seen, sync.max_lag)
        for name, sync in services.runner.config.syncs.items()
        if services.watch and (seen := services.watch.freshness(name)) and seen.stale
    ]
    return answer(
        Health(
            status="degraded" if reasons else "healthy", endpoints=SEED_ENDPOINTS, reasons=reasons
        )
    )


def _stale_reason(name: str, seen: FreshnessSeen, max_lag: timedelta | None) -> str:
    limit = f"max_lag {format_duration(max_lag)}" if max_lag else "its max_lag"
    if seen.lag_seconds is None:
        return (
            f"sync {name!r} is stale: nothing tells how far behind it is, for longer than {limit}"
        )
    lag = format_duration(timedelta(seconds=round(seen.lag_seconds)))
    return f"sync {name!r} is stale: {lag} behind its source, above {limit}"


async def syncs(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    states = [await _sync_state(request, name) for name in services.runner.config.syncs]
    pools = services.connections.use() if services.connections else []
    return answer(
        Syncs(
            syncs=states,
            runs=RunCounts(**services.runner.counts()),
            pools=[PoolUse(**asdict(use)) for use in pools],
        )
    )


async def runs(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    query = query_of(request, RunsQuery)
    name, _ = services.runner.config.sync(query.sync_name)
    async with target_connection(request) as conn:
        records = await services.store.runs(conn, name, query.limit)
    return answer(Runs(sync_name=name, runs=records))

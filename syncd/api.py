"""The HTTP API: the seed's /api/batch-sync/* contract, probes, metrics and docs.

Every answer is JSON, errors included: a precise message for a bad request,
and for anything unexpected a 500 that names no internals. Beside the API
stand the status page at ``/``, with its two static files, and the
Server-Sent Events that keep it live. State lives on the application under
typed keys; nothing here is global.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import structlog
import swagger_ui_bundle
from aiohttp import web
from pydantic import ValidationError

from syncd.config import CronSchedule, EverySchedule, format_duration
from syncd.errors import AlreadyRunning, SyncdError, Unavailable, UnknownSync
from syncd.events import EVENT, RunCounts
from syncd.freshness import Freshness as FreshnessSeen
from syncd.identifiers import TableName
from syncd.metrics import Metrics
from syncd.openapi import openapi_document
from syncd.payload import (
    Alive,
    BusyError,
    Completed,
    Count,
    Error,
    Failed,
    Freshness,
    Health,
    NameBody,
    NameQuery,
    NotReady,
    PageConfig,
    Payload,
    PoolUse,
    Queued,
    Ready,
    Request,
    ResetDone,
    Run,
    RunBody,
    RunQuery,
    Runs,
    RunsQuery,
    SchemaChange,
    Started,
    Status,
    Syncs,
    SyncState,
)
from syncd.pg import Conn
from syncd.pools import Connections, PostgresPool
from syncd.redact import scrub
from syncd.retry import UNUSABLE_CONNECTION
from syncd.runner import Busy, LiveRun, NotAccepting, Runner
from syncd.scheduler import Schedules
from syncd.state import RunRecord, StateStore
from syncd.state import SchemaChange as RecordedChange
from syncd.status import RowCounts, collect_status
from syncd.watch import FreshnessWatch

log = structlog.get_logger("syncd.api")

RequestT = TypeVar("RequestT", bound=Request)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BODY_BYTES = 64 * 1024
PREFIX = "/api/batch-sync"
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
STATIC = Path(__file__).with_name("static")
PAGE_FILES = ("page.css", "page.js")
DOCS_FILES = ("swagger-ui.css", "swagger-ui-bundle.js")
"""What /docs loads from the Swagger UI package, whose other files include a stock demo page."""
KEEP_ALIVE_S = 15.0
"""Idle event streams get a comment this often, so proxies and browsers keep them open."""
MAX_EVENT_STREAMS = 100
"""Each open stream costs a queue and its share of every event: their number is bounded."""
STREAM_PAUSE_S = 0.1
SEND_TIMEOUT_S = 10.0
"""An event stream whose reader takes nothing for this long is ended."""
ACQUIRE_TIMEOUT_S = 10.0
"""How long a request waits for one of the target's few connections to come free."""
QUERY_TIMEOUT_S = 30.0
"""How long a request's statements may take, all told."""
# The page loads its own two files and talks to this daemon, and nothing else: even text that
# slipped past the page's escaping could neither run inline script nor send data elsewhere.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass
class Services:
    """What the handlers need, passed in by the composition root."""

    runner: Runner
    schedules: Schedules
    store: StateStore
    metrics: Metrics
    pool: PostgresPool | None = None
    """The target's pool, shared with the runs; None until the target database first answered."""
    counts: RowCounts = field(default_factory=RowCounts)
    """Rows in the target tables, shared by every answer that shows them."""
    connections: Connections | None = None
    """Every pool of the daemon, for showing their use."""
    watch: FreshnessWatch | None = None
    """How fresh each sync is; None where nothing watches (tests of the API alone)."""


SERVICES = web.AppKey("services", Services)
CLOSING = web.AppKey("closing", asyncio.Event)
"""Set when the server shuts down, so that endless event streams end instead of being waited for."""


class ApiError(SyncdError):
    """The request cannot be served."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def answer(payload: Payload, status: int = 200, **headers: str) -> web.Response:
    """The one place a payload becomes an HTTP answer."""
    return web.Response(
        text=payload.model_dump_json(),
        status=status,
        headers=headers or None,
        content_type="application/json",
    )


def _error(status: int, message: str) -> web.Response:
    return answer(Error(message=message), status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, str(exc))
    except UnknownSync as exc:
        return _error(404, str(exc))
    except Busy as exc:
        return answer(BusyError(message=str(exc), run_id=exc.run_id), 409)
    except AlreadyRunning as exc:
        return answer(BusyError(message=str(exc), run_id=None), 409)
    except (NotAccepting, Unavailable) as exc:
        return _error(503, str(exc))
    except web.HTTPException as exc:
        if exc.status == 413:
            return _error(413, f"request body too large: at most {MAX_BODY_BYTES} bytes")
        if exc.status < 400:
            raise
        response = _error(exc.status, exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        reason = unreachable_reason(exc)
        if reason is None:
            log.exception("request_failed", path=request.path)
            return _error(500, "internal error; the daemon's log has the details")
        reason = scrub(reason, request.app[SERVICES].runner.config.secrets())
        log.warning("target_unavailable", path=request.path, reason=reason)
        return _error(503, f"the target database is not reachable: {reason}")


def unreachable_reason(exc: BaseException) -> str | None:
    """Why the target database cannot serve us, when that is what ``exc`` says; else None.

    The one place that decides what "unreachable" means, for the API's answers and for
    /readyz. PostgreSQL ends a session with an error of severity FATAL (or PANIC), and only
    then: a login refused, a database dropped or closed to connections, too many clients,
    an administrator's shutdown. Its message names the cause and holds no password. On our
    side of the wire: a connection lost or refused, or a wait that ran out.
    """
    if isinstance(exc, asyncpg.PostgresConnectionError) or (
        isinstance(exc, asyncpg.PostgresError)
        and getattr(exc, "severity", None) in ("FATAL", "PANIC")
    ):
        return str(exc).splitlines()[0]
    if isinstance(exc, UNUSABLE_CONNECTION):
        return "the connection to it was lost"
    if isinstance(exc, TimeoutError):  # before OSError, of which it is one
        return "it did not answer in time, or every connection to it stayed busy"
    if isinstance(exc, ConnectionRefusedError):
        return "it refused the connection"
    if isinstance(exc, OSError):
        return f"the network failed: {exc.strerror or exc}"
    return None


@web.middleware
async def bearer_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[SERVICES].runner.config.api.token
    if token is not None and request.method not in ("GET", "HEAD", "OPTIONS"):
        given = request.headers.get("Authorization", "")
        scheme, _, credential = given.partition(" ")
        expected = token.get_secret_value().encode()
        # compare_digest takes the same time whatever the first differing byte is.
        if scheme.lower() != "bearer" or not hmac.compare_digest(credential.encode(), expected):
            return answer(
                Error(message="missing or wrong bearer token"),
                401,
                **{"WWW-Authenticate": 'Bearer realm="syncd"'},
            )
    return await handler(request)


def create_app(services: Services) -> web.Application:
    app = web.Application(
        middlewares=[errors_as_json, bearer_token], client_max_size=MAX_BODY_BYTES
    )
    app[SERVICES] = services
    app.router.add_post(f"{PREFIX}/start", start)
    app.router.add_post(f"{PREFIX}/start-sync", start_sync)
    app.router.add_get(f"{PREFIX}/status", status)
    app.router.add_post(f"{PREFIX}/reset", reset)
    app.router.add_get(f"{PREFIX}/count", count)
    app.router.add_get(f"{PREFIX}/health", health)
    app.router.add_get(f"{PREFIX}/syncs", syncs)
    app.router.add_get(f"{PREFIX}/runs", runs)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/docs", docs)
    app.router.add_get("/docs/static/{name}", docs_file)
    app.router.add_get(f"{PREFIX}/events", events)
    app.router.add_get(f"{PREFIX}/page-config", page_config)
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", page_file)
    app[CLOSING] = asyncio.Event()
    app.on_shutdown.append(_end_streams)
    return app


# ---- request parsing ---------------------------------------------------------------


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        # JSON between systems is UTF-8 (RFC 8259); json.loads alone would also guess at
        # UTF-16 and UTF-32, and explain its failures in the terms of a codec.
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not valid UTF-8 JSON") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ApiError(400, f"malformed JSON body: {exc}") from None
    except RecursionError:
        raise ApiError(400, "malformed JSON body: nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the JSON body must be an object")
    return data


def _query_values(request: web.Request) -> dict[str, str]:
    """The query string's parameters; one given twice is ambiguous and refused."""
    values: dict[str, str] = {}
    for key in request.query:
        given = request.query.getall(key)
        if len(given) > 1:
            raise ApiError(400, f"{key} is given {len(given)} times in the query string")
        values[key] = given[0]
    return values


def parsed(
    request: web.Request, model: type[RequestT], data: dict[str, Any], *, query: bool = False
) -> RequestT:
    """``data`` validated through ``model``: a 400 naming each field and its fault if not.
    A query string's values are text, and a number there is its digits."""
    limit = request.app[SERVICES].runner.config.api.max_batch_size
    context = {"max_batch_size": limit, "query": query}
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ApiError(400, _faults(model, exc)) from None


def _query(request: web.Request, model: type[RequestT]) -> RequestT:
    return parsed(request, model, _query_values(request), query=True)


def _faults(model: type[Request], exc: ValidationError) -> str:
    faults: dict[str, str] = {}
    for error in exc.errors():
        if error["type"] == "none_required":
            continue  # the other side of "value or left out": the value's fault says more
        field = str(error["loc"][0]) if error["loc"] else ""
        if error["type"] == "extra_forbidden":
            fault = f"unknown field {field}: expected {', '.join(model.model_fields)}"
        else:
            fault = f"{field} {error['msg']}".strip()
        faults.setdefault(field, fault)
    return "; ".join(faults.values())


@contextlib.asynccontextmanager
async def _connection(request: web.Request) -> AsyncIterator[asyncpg.Connection]:
    """One of the target's connections, for a request's statements; a request that fails
    or runs out of time on it does not give it back to the pool, but closes it."""
    pool = request.app[SERVICES].pool
    if pool is None:
        raise ApiError(503, "the target database is not connected yet")
    async with pool.connection(ACQUIRE_TIMEOUT_S, patient=False) as conn:
        async with asyncio.timeout(QUERY_TIMEOUT_S):
            yield conn


async def _run_params(request: web.Request) -> tuple[str, int | None]:
    """sync_name and batch_size, from the query string and/or a JSON body, whose values
    win; each is checked in full, so that a bad value is refused even where overridden."""
    query = _query(request, RunQuery)
    body = parsed(request, RunBody, await _body(request))
    name, _ = request.app[SERVICES].runner.config.sync(body.sync_name or query.sync_name)
    return name, body.batch_size or query.batch_size


async def _trigger(request: web.Request) -> LiveRun:
    services = request.app[SERVICES]
    name, batch_size = await _run_params(request)
    if services.runner.live(name) is None and services.runner.queued(name) is None:
        async with _connection(request) as conn:
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


# ---- the seed's contract -------------------------------------------------------------


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
    result = await services.runner.wait(live)
    run = _about(live)
    if result.status == "succeeded":
        async with _connection(request) as conn:
            state = await services.store.load(conn, live.sync_name)
        return answer(
            Completed(total_synced=state.total_synced, rows_this_run=result.rows_read, **run)
        )
    if result.status == "cancelled":
        raise NotAccepting(result.error or "syncd is shutting down")
    if result.status == "skipped":
        raise Busy(result.error, run_id=live.run_id)
    return answer(Failed(error=result.error, **run), 502)


async def status(request: web.Request) -> web.Response:
    name = _query(request, NameQuery).sync_name
    return answer(Status(**(await _sync_state(request, name)).model_dump()))


async def _sync_state(request: web.Request, name: str | None) -> SyncState:
    services = request.app[SERVICES]
    name, sync = services.runner.config.sync(name)
    async with _connection(request) as conn:
        state = await collect_status(
            conn, services.store, name, sync, functools.partial(_rows_in, services)
        )
        changes = await services.store.schema_changes(conn, name, RECENT_SCHEMA_CHANGES)
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
        freshness=Freshness(**asdict(seen)) if seen else None,
        schema_changes=[_schema_change(change) for change in changes],
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
    query = _query(request, NameQuery)
    body = parsed(request, NameBody, await _body(request))
    name, _ = services.runner.config.sync(body.sync_name or query.sync_name)
    live = services.runner.live(name)
    if live is not None:
        raise Busy(
            f"sync {name!r} is running (run {live.run_id}); reset refused", run_id=live.run_id
        )
    async with _connection(request) as conn:
        await services.store.reset(conn, name)
    services.runner.publish({"type": "sync_reset", "sync_name": name})
    return answer(ResetDone(message=f"Sync state reset for '{name}'", sync_name=name))


async def count(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name, sync = services.runner.config.sync(_query(request, NameQuery).sync_name)
    target = sync.target
    async with _connection(request) as conn:
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


# ---- additions ---------------------------------------------------------------------------


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
    query = _query(request, RunsQuery)
    name, _ = services.runner.config.sync(query.sync_name)
    async with _connection(request) as conn:
        records = await services.store.runs(conn, name, query.limit)
    return answer(Runs(sync_name=name, runs=[_run(record) for record in records]))


def _run(record: RunRecord) -> Run:
    finished = record.finished_at
    duration = (finished - record.started_at).total_seconds() if finished else None
    return Run(**asdict(record), duration_s=duration)


async def healthz(request: web.Request) -> web.Response:
    return answer(Alive())


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    reasons = []
    if services.pool is None:
        reasons.append("the target database has not answered yet")
    else:
        try:
            async with asyncio.timeout(2), services.pool.connection(1, patient=False) as conn:
                await conn.fetchval("SELECT 1")
        except Unavailable as exc:
            reasons.append(str(exc))  # every connection is in use
        except Exception as exc:
            reason = unreachable_reason(exc)
            if reason is None:
                raise
            reasons.append(f"the target database is not reachable: {reason}")
    if not services.schedules.running:
        reasons.append("the scheduler is not running")
    if reasons:
        return answer(NotReady(reasons=reasons), 503)
    return answer(Ready())


async def metrics(request: web.Request) -> web.Response:
    body = request.app[SERVICES].metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def openapi(request: web.Request) -> web.Response:
    document = openapi_document(request.app[SERVICES].runner.config.api.max_batch_size)
    return web.json_response(document)


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>syncd API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>
SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});
</script></body></html>
"""


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_PAGE, content_type="text/html")


async def docs_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in DOCS_FILES:
        raise web.HTTPNotFound()
    return web.FileResponse(Path(swagger_ui_bundle.swagger_ui_path) / name)


# ---- the status page ---------------------------------------------------------------------


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        STATIC / "index.html",
        headers={
            "Content-Security-Policy": PAGE_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )


async def page_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in PAGE_FILES:
        raise web.HTTPNotFound()
    # no-cache means "ask again each time": after an upgrade, no browser keeps the old script.
    return web.FileResponse(
        STATIC / name, headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
    )


async def page_config(request: web.Request) -> web.Response:
    """What the page must know before it acts; nothing here is a secret."""
    api = request.app[SERVICES].runner.config.api
    return answer(
        PageConfig(token_required=api.token is not None, max_batch_size=api.max_batch_size)
    )


async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: the runner's events as they happen, until the page or syncd goes."""
    closing = request.app[CLOSING]
    runner = request.app[SERVICES].runner
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    # Subscribed before the answer starts, so that a refusal can still be a 503.
    async with runner.subscription(MAX_EVENT_STREAMS) as queue:
        await response.prepare(request)
        try:
            # The first bytes reach the browser at once, and tell it how soon to reconnect.
            await _send(response, b"retry: 3000\n\n")
            while (events := await _next_events(queue, closing)) is not None:
                await _send(response, _messages(events))
                # However fast batches commit, a stream wakes up and writes at most this
                # often: with many pages open, it would otherwise be a write per page per batch.
                await asyncio.sleep(STREAM_PAUSE_S)
            await response.write_eof()
        except TimeoutError:
            # A reader that takes nothing for this long loses its stream and its place
            # among the subscribers; an EventSource that is still there reconnects.
            if (transport := request.transport) is not None:
                transport.abort()
        except ConnectionResetError:
            pass  # the page went away; a keep-alive at the latest tells us
    return response


async def _send(response: web.StreamResponse, data: bytes) -> None:
    async with asyncio.timeout(SEND_TIMEOUT_S):
        await response.write(data)


async def _next_events(
    queue: asyncio.Queue[dict[str, Any]], closing: asyncio.Event
) -> list[dict[str, Any]] | None:
    """Every event queued once there is one; none after KEEP_ALIVE_S without any; None at
    shutdown."""
    getting = asyncio.ensure_future(queue.get())
    waiting = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait(
            (getting, waiting), timeout=KEEP_ALIVE_S, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        getting.cancel()
        waiting.cancel()
    if getting.done() and not getting.cancelled():
        events = [getting.result()]
        while not queue.empty():
            events.append(queue.get_nowait())
        return events
    return None if closing.is_set() else []


def _messages(events: list[dict[str, Any]]) -> bytes:
    """The events as the stream carries them, each checked against its model; none at all
    is the keep-alive comment."""
    if not events:
        return b": keep-alive\n\n"
    typed = [EVENT.validate_python(event) for event in events]
    return b"".join(
        b"event: %s\ndata: %s\n\n" % (event.type.encode(), event.model_dump_json().encode())
        for event in typed
    )


async def _end_streams(app: web.Application) -> None:
    # Without this, cleanup would wait its full shutdown_timeout for streams that never end.
    app[CLOSING].set()

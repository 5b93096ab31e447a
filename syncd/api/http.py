"""What every route of the HTTP API shares: the services it is given, answers made from
payload models in one place, errors as JSON, the bearer token, requests validated
through their models, and a bounded connection to the target.

Every answer is JSON, errors included: a precise message for a bad request, and for
anything unexpected a 500 that names no internals. State lives on the application under
typed keys; nothing here is global.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import structlog
from aiohttp import web
from pydantic import ValidationError

from syncd.errors import AlreadyRunning, Busy, NotAccepting, SyncdError, Unavailable, UnknownSync
from syncd.metrics import Metrics
from syncd.payload import BusyError, Error, Payload, Request
from syncd.pools import Connections, PostgresPool
from syncd.redact import scrub
from syncd.retry import UNUSABLE_CONNECTION
from syncd.runner import Runner
from syncd.scheduler import Schedules
from syncd.state import StateStore
from syncd.status import RowCounts
from syncd.verify.service import Verifications
from syncd.watch import FreshnessWatch

log = structlog.get_logger("syncd.api")

RequestT = TypeVar("RequestT", bound=Request)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_BODY_BYTES = 64 * 1024
PREFIX = "/api/batch-sync"
ACQUIRE_TIMEOUT_S = 10.0
"""How long a request waits for one of the target's few connections to come free."""
QUERY_TIMEOUT_S = 30.0
"""How long a request's statements may take, all told."""


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
    verifications: Verifications | None = None
    """The daemon's verifies; None where nothing can start one."""
    watch: FreshnessWatch | None = None
    """How fresh each sync is; None where nothing watches (tests of the API alone)."""


SERVICES = web.AppKey("services", Services)


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


def error_answer(status: int, message: str) -> web.Response:
    return answer(Error(message=message), status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_answer(exc.status, str(exc))
    except UnknownSync as exc:
        return error_answer(404, str(exc))
    except Busy as exc:
        return answer(BusyError(message=str(exc), run_id=exc.run_id), 409)
    except AlreadyRunning as exc:
        return answer(BusyError(message=str(exc), run_id=None), 409)
    except (NotAccepting, Unavailable) as exc:
        return error_answer(503, str(exc))
    except web.HTTPException as exc:
        if exc.status == 413:
            return error_answer(413, f"request body too large: at most {MAX_BODY_BYTES} bytes")
        if exc.status < 400:
            raise
        response = error_answer(exc.status, exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        reason = unreachable_reason(exc)
        if reason is None:
            log.exception("request_failed", path=request.path)
            return error_answer(500, "internal error; the daemon's log has the details")
        reason = scrub(reason, request.app[SERVICES].runner.config.secrets())
        log.warning("target_unavailable", path=request.path, reason=reason)
        return error_answer(503, f"the target database is not reachable: {reason}")


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


# ---- request parsing ---------------------------------------------------------------


async def json_body(request: web.Request) -> dict[str, Any]:
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


def query_of(request: web.Request, model: type[RequestT]) -> RequestT:
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
async def target_connection(request: web.Request) -> AsyncIterator[asyncpg.Connection]:
    """One of the target's connections, for a request's statements; a request that fails
    or runs out of time on it does not give it back to the pool, but closes it."""
    pool = request.app[SERVICES].pool
    if pool is None:
        raise ApiError(503, "the target database is not connected yet")
    async with pool.connection(ACQUIRE_TIMEOUT_S, patient=False) as conn:
        async with asyncio.timeout(QUERY_TIMEOUT_S):
            yield conn

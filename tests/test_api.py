"""The HTTP API through a real aiohttp server and client, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from syncd.api import SERVICES, Services, create_app
from syncd.api import http as http_module
from syncd.daemon import refuse_open_api
from syncd.errors import ConfigError
from syncd.metrics import Metrics
from syncd.notify import Notifier
from syncd.openapi import openapi_document
from syncd.runner import Runner
from syncd.scheduler import Schedules
from syncd.state import StateStore
from syncd.status import RowCounts
from tests.conftest import dsn_for
from tests.contract import MIDDLEWARES, Recording, check_event
from tests.helpers import (
    create_items,
    events_daemon,
    fingerprint,
    unreachable_config,
    wait_for_value,
    write_events,
)

ITEMS = {
    "table": "src.items",
    "key": ["id"],
    "cursor": "updated_at",
    "target_table": "public.items",
}
PREFIX = "/api/batch-sync"


async def body(response: ClientResponse, status: int) -> dict[str, Any]:
    data = await response.json()
    assert response.status == status, data
    assert isinstance(data, dict)
    return data


async def wait_idle(client: TestClient[Any, Any], name: str) -> dict[str, Any]:
    for _ in range(500):
        status = await body(await client.get(f"{PREFIX}/status?sync_name={name}"), 200)
        if not status["running"]:
            return status
        await asyncio.sleep(0.02)
    raise AssertionError("the sync kept running")


async def test_seed_scenario_1_fresh_sync(conn: asyncpg.Connection, api) -> None:
    await create_items(conn, 150)
    client = await api({"oracle_opportunities": ITEMS}, default_sync="oracle_opportunities")

    reset = await body(await client.post(f"{PREFIX}/reset"), 200)
    assert reset == {
        "status": "success",
        "message": "Sync state reset for 'oracle_opportunities'",
        "sync_name": "oracle_opportunities",
    }
    started = await body(await client.post(f"{PREFIX}/start", json={"batch_size": 10}), 202)
    assert started["status"] == "started"
    assert started["message"] == "Batch sync started with batch_size=10"
    assert started["batch_size"] == 10 and started["sync_name"] == "oracle_opportunities"
    assert len(started["run_id"]) == 32

    status = await wait_idle(client, "oracle_opportunities")
    assert status["status"] == "success"
    assert (status["current_offset"], status["total_synced"], status["total_in_db"]) == (
        150,
        150,
        150,
    )
    assert status["is_complete"] is True and status["last_sync_at"]
    count = await body(await client.get(f"{PREFIX}/count"), 200)
    assert count == {
        "status": "success",
        "count": 150,
        "table": "items",
        "sync_name": "oracle_opportunities",
    }


async def test_seed_scenario_2_resume_and_3_monitor(conn: asyncpg.Connection, api) -> None:
    await create_items(conn, 150)
    client = await api({"opps": ITEMS})
    # The seed's start-sync example: query string only, no body.
    first = await body(await client.post(f"{PREFIX}/start-sync?batch_size=5"), 200)
    assert first["status"] == "complete"
    assert first["message"] == "Batch sync completed successfully"
    assert (first["total_synced"], first["rows_this_run"], first["batch_size"]) == (150, 150, 5)

    await create_items(conn, 50, start_id=151)
    started = await body(
        await client.post(f"{PREFIX}/start", json={"batch_size": 5, "sync_name": "opps"}), 202
    )
    status = await wait_idle(client, "opps")
    assert (status["current_offset"], status["total_synced"], status["is_complete"]) == (
        200,
        200,
        True,
    )
    runs = await body(await client.get(f"{PREFIX}/runs?sync_name=opps&limit=5"), 200)
    assert [r["status"] for r in runs["runs"]] == ["succeeded", "succeeded"]
    assert runs["runs"][0]["run_id"] == started["run_id"] and runs["runs"][0]["rows_read"] == 50
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")


async def test_busy_sync_is_409_with_the_run_id(conn: asyncpg.Connection, api) -> None:
    await create_items(conn, 5_000)
    client = await api({"opps": ITEMS | {"batch_size": 5}})
    started = await body(await client.post(f"{PREFIX}/start"), 202)

    for method, path in [("post", "start"), ("post", "start-sync"), ("post", "reset")]:
        refused = await body(await getattr(client, method)(f"{PREFIX}/{path}"), 409)
        assert refused["run_id"] == started["run_id"], path


async def test_a_hundred_parallel_starts_make_exactly_one_run(
    conn: asyncpg.Connection, api
) -> None:
    await create_items(conn, 2_000)
    client = await api({"opps": ITEMS | {"batch_size": 50}})

    responses = await asyncio.gather(*(client.post(f"{PREFIX}/start") for _ in range(100)))

    statuses = sorted(r.status for r in responses)
    assert statuses == [202] + [409] * 99
    answers = [await r.json() for r in responses]
    (run_id,) = {a["run_id"] for a in answers if a["status"] == "started"}
    # Found by the chaos suite: a request that looked before the run began, then saw
    # its lock, blamed "another process" and gave no run_id.
    assert all(a["run_id"] == run_id for a in answers if a["status"] == "error")
    await wait_idle(client, "opps")
    assert await conn.fetchval("SELECT count(*) FROM syncd.runs") == 1


async def test_start_sync_of_a_failing_sync_is_502(conn: asyncpg.Connection, api) -> None:
    client = await api({"opps": ITEMS | {"table": "src.absent"}})
    failed = await body(await client.post(f"{PREFIX}/start-sync"), 502)
    assert (
        failed["status"] == "failed" and 'relation "src.absent" does not exist' in failed["error"]
    )
    status = await body(await client.get(f"{PREFIX}/status"), 200)
    assert "src.absent" in status["last_error"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "code", "message"),
    [
        ("get", "status?sync_name=nope", {}, 404, "unknown sync 'nope' (configured: a, b)"),
        ("get", "status", {}, 404, "name a sync"),
        ("post", "start", {"data": b"{not json"}, 400, "malformed JSON body"),
        ("post", "start", {"json": [1]}, 400, "must be an object"),
        (
            "post",
            "start",
            {"json": {"batch_size": "ten"}},
            400,
            "batch_size must be a whole number, found 'ten'",
        ),
        (
            "post",
            "start",
            {"json": {"batch_size": True}},
            400,
            "batch_size must be a whole number, found bool",
        ),
        (
            "post",
            "start",
            {"json": {"batch_size": 0, "sync_name": "a"}},
            400,
            "between 1 and 100000, found 0",
        ),
        ("post", "start-sync?batch_size=100001&sync_name=a", {}, 400, "between 1 and 100000"),
        ("post", "start", {"json": {"sync_name": 5}}, 400, "sync_name must be a string"),
        (
            "post",
            "start",
            {"json": {"sync_name": "a", "drop": 1}},
            400,
            "unknown field drop: expected batch_size, sync_name",
        ),
        ("post", "start", {"data": b"x" * 70_000}, 413, "request body too large"),
        # Found by the chaos suite: json.loads raised RecursionError, a 500.
        ("post", "start", {"data": b"[" * 40_000}, 400, "nested too deeply"),
        ("get", "runs?sync_name=a&limit=0", {}, 400, "limit must be a whole number from 1 to 1000"),
        ("get", "runs?sync_name=a&limit=", {}, 400, "limit must be a whole number from 1 to 1000"),
        ("get", "runs?sync_name=../../etc/passwd", {}, 404, "unknown sync '../../etc/passwd'"),
        ("get", "nowhere", {}, 404, "Not Found"),
        # Found by schemathesis:
        ("post", "start?batch_size=x", {"json": {"batch_size": 5}}, 400, "found 'x'"),
        ("post", "start", {"json": {"sync_name": None}}, 400, "sync_name must be left out"),
        ("get", "status?sync_name=a&sync_name=b", {}, 400, "sync_name is given 2 times"),
        ("delete", "start", {}, 405, "Method Not Allowed"),
        # Not UTF-8: json.loads guessed at UTF-16, or spoke of codecs.
        (
            "post",
            "start",
            {"data": '{"sync_name": "a"}'.encode("utf-16")},
            400,
            "the request body is not valid UTF-8 JSON",
        ),
        (
            "post",
            "start",
            {"data": '{"sync_name": "\u00e9"}'.encode("latin-1")},
            400,
            "the request body is not valid UTF-8 JSON",
        ),
    ],
)
async def test_bad_requests_get_a_precise_json_error(
    api, method: str, path: str, kwargs: dict[str, Any], code: int, message: str
) -> None:
    client = await api({"a": ITEMS, "b": ITEMS | {"target_table": "public.b"}})
    response = await getattr(client, method)(f"{PREFIX}/{path}", **kwargs)
    answer = await body(response, code)
    assert answer["status"] == "error" and message in answer["message"]
    assert "codec" not in answer["message"]
    if code == 405:
        assert response.headers["Allow"] == "POST"


async def test_a_whole_float_is_a_batch_size(conn: asyncpg.Connection, api) -> None:
    await create_items(conn, 3)
    client = await api({"opps": ITEMS})
    answer = await body(await client.post(f"{PREFIX}/start-sync", json={"batch_size": 2.0}), 200)
    assert answer["batch_size"] == 2 and answer["rows_this_run"] == 3


async def test_a_token_guards_every_post_but_no_get(conn: asyncpg.Connection, api) -> None:
    await create_items(conn, 10)
    client = await api({"opps": ITEMS}, api={"token": "let-me-in"})

    for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic let-me-in"}]:
        refused = await client.post(f"{PREFIX}/start-sync", headers=headers)
        assert (await body(refused, 401))["message"] == "missing or wrong bearer token"
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    allowed = await client.post(
        f"{PREFIX}/start-sync", headers={"Authorization": "Bearer let-me-in"}
    )
    assert (await body(allowed, 200))["rows_this_run"] == 10
    await body(await client.get(f"{PREFIX}/status"), 200)
    assert (await client.get("/healthz")).status == 200


async def test_an_unexpected_failure_is_a_500_without_details(api, monkeypatch) -> None:
    client = await api({"opps": ITEMS})

    async def explode(*_: object) -> None:
        raise RuntimeError("postgresql://u:hunter2@db/x exploded at line 3")

    monkeypatch.setattr(StateStore, "runs", explode)
    answer = await client.get(f"{PREFIX}/runs")
    text = await answer.text()
    assert answer.status == 500
    assert "hunter2" not in text and "Traceback" not in text and "line 3" not in text
    assert (await answer.json())["message"] == "internal error; the daemon's log has the details"


async def test_probes_metrics_health_and_docs(conn: asyncpg.Connection, api) -> None:
    await create_items(conn, 30)
    client = await api({"opps": ITEMS | {"batch_size": 10}})
    await body(await client.post(f"{PREFIX}/start-sync"), 200)

    assert await body(await client.get("/healthz"), 200) == {"status": "ok"}
    assert await body(await client.get("/readyz"), 200) == {"status": "ready"}
    health = await body(await client.get(f"{PREFIX}/health"), 200)
    assert health["status"] == "healthy" and f"POST {PREFIX}/start" in health["endpoints"]

    metrics = await (await client.get("/metrics")).text()
    assert 'syncd_rows_read_total{sync_name="opps"} 30.0' in metrics
    assert 'syncd_runs_total{status="succeeded",sync_name="opps"} 1.0' in metrics
    assert 'syncd_batch_duration_seconds_count{sync_name="opps"} 3.0' in metrics
    assert 'syncd_running{sync_name="opps"} 0.0' in metrics
    assert "syncd_seconds_since_last_success" in metrics

    page = await (await client.get("/docs")).text()
    assert "/docs/static/swagger-ui-bundle.js" in page and "/openapi.json" in page
    script = await client.get("/docs/static/swagger-ui-bundle.js")
    assert script.status == 200 and len(await script.read()) > 100_000

    document = await body(await client.get("/openapi.json"), 200)
    validate(document)
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None and route.method != "HEAD"
        and not route.resource.canonical.startswith("/docs")
    }  # fmt: skip
    documented = {(m, p) for p, item in document["paths"].items() for m in item}
    page = {("get", "/"), ("get", "/static/{name}")}
    assert routes - {("get", "/openapi.json")} - page == documented


async def test_syncs_lists_every_sync_with_its_schedule(api) -> None:
    client = await api(
        {"a": ITEMS | {"schedule": {"every": "15m"}}, "b": ITEMS | {"target_table": "b"}}
    )
    listing = await body(await client.get(f"{PREFIX}/syncs"), 200)
    by_name = {s["sync_name"]: s for s in listing["syncs"]}
    assert by_name["a"]["schedule"] == "every 15m" and by_name["a"]["next_run_at"]
    assert by_name["b"]["schedule"] is None and by_name["b"]["next_run_at"] is None


async def test_readyz_is_503_with_reasons_until_the_target_answers() -> None:
    config = unreachable_config()
    metrics = Metrics()
    runner = Runner(config, metrics=metrics, notifier=Notifier({}))
    services = Services(runner, Schedules(runner), StateStore("syncd"), metrics)
    async with TestClient(TestServer(create_app(services)), middlewares=MIDDLEWARES) as client:
        answer = await body(await client.get("/readyz"), 503)
        assert answer["reasons"] == [
            "the target database has not answered yet",
            "the scheduler is not running",
        ]
        assert await body(await client.get(f"{PREFIX}/count?sync_name=x"), 404)


def test_a_reachable_api_without_a_token_is_refused() -> None:
    from syncd.config import ApiConfig

    refuse_open_api(ApiConfig(host="127.0.0.1"))
    refuse_open_api(ApiConfig(host="::1"))
    refuse_open_api(ApiConfig(host="0.0.0.0", token="t"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"api\.token is not set"):
        refuse_open_api(ApiConfig(host="0.0.0.0"))


@pytest.fixture
async def login_role(db: str) -> AsyncIterator[str]:
    """A role of this test's own that may log in to the test's database and create in it."""
    role = f"syncd_api_{uuid.uuid4().hex[:10]}"
    database = urlsplit(db).path.lstrip("/")
    admin = await asyncpg.connect(dsn_for("postgres"))
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        await admin.execute(f'GRANT CREATE ON DATABASE "{database}" TO "{role}"')
        yield role
    finally:
        # The database goes first, taking the role's objects and grants with it, whatever
        # state the test left it in; then the role can go.
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


def _as(role: str, dsn: str) -> str:
    """``dsn`` for ``role``, with a password that trust authentication lets pass."""
    parts = urlsplit(dsn)
    netloc = f"{role}:pw-marker@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


UNREACHABLE_PATHS = [
    ("get", f"{PREFIX}/status"),
    ("get", f"{PREFIX}/syncs"),
    ("get", f"{PREFIX}/count"),
    ("get", f"{PREFIX}/runs"),
    ("post", f"{PREFIX}/start"),
    ("post", f"{PREFIX}/reset"),
    ("get", "/readyz"),
]


async def _reason_of_503(client: TestClient[Any, Any], method: str, path: str) -> str:
    answer = await body(await getattr(client, method)(path), 503)
    return str(answer["reasons"][0] if path == "/readyz" else answer["message"])


@pytest.mark.parametrize(
    ("cut_off", "reason"),
    [
        ("DROP DATABASE {database} WITH (FORCE)", 'database "{database_name}" does not exist'),
        (
            "ALTER DATABASE {database} ALLOW_CONNECTIONS false",
            'database "{database_name}" is not currently accepting connections',
        ),
        ("ALTER ROLE {role} NOLOGIN", 'role "{role_name}" is not permitted to log in'),
        ("ALTER ROLE {role} CONNECTION LIMIT 0", 'too many connections for role "{role_name}"'),
        (
            "REVOKE CONNECT ON DATABASE {database} FROM PUBLIC",
            'permission denied for database "{database_name}"',
        ),
    ],
    ids=["dropped", "closed-to-connections", "login-refused", "too-many", "no-connect-grant"],
)
async def test_an_unreachable_target_is_503_with_the_reason_on_every_path(
    db: str, login_role: str, api, cut_off: str, reason: str
) -> None:
    client = await api({"items": ITEMS}, target={"dsn": _as(login_role, db)})
    await body(await client.get(f"{PREFIX}/status"), 200)
    database_name = urlsplit(db).path.lstrip("/")
    names = {"database_name": database_name, "role_name": login_role}
    admin = await asyncpg.connect(dsn_for("postgres"))
    try:
        await admin.execute(cut_off.format(database=f'"{database_name}"', role=f'"{login_role}"'))
        # The pool's connections go too, so that the next requests must connect again.
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            login_role,
        )
    finally:
        await admin.close()

    expected = f"the target database is not reachable: {reason.format(**names)}"
    for method, path in UNREACHABLE_PATHS:
        # The first answers may still find a connection that was cut off under them,
        # itself a reason to answer 503, not the one this test is after.
        reasons = [await _reason_of_503(client, method, path) for _ in range(6)]
        assert reasons[-1] == expected, (path, reasons)
        assert all(r.startswith("the target database is not reachable: ") for r in reasons)
        assert not any("pw-marker" in r for r in reasons)


async def test_a_session_ended_by_an_administrator_is_503(conn: asyncpg.Connection, api) -> None:
    await conn.execute("CREATE TABLE public.items (id bigint PRIMARY KEY)")
    client = await api({"items": ITEMS})
    async with conn.transaction():
        await conn.execute("LOCK TABLE public.items IN ACCESS EXCLUSIVE MODE")
        counting = asyncio.ensure_future(client.get(f"{PREFIX}/count"))
        waiter = await wait_for_value(
            conn,
            "SELECT pid FROM pg_stat_activity"
            " WHERE application_name = 'syncd' AND wait_event_type = 'Lock'",
        )
        await conn.execute("SELECT pg_terminate_backend($1)", waiter)
        answer = await body(await counting, 503)
    assert answer["message"] == (
        "the target database is not reachable: connection was closed in the middle of"
        " operation: terminating connection due to administrator command"
    )


async def test_a_pool_with_no_free_connection_is_503_after_a_bounded_wait(api, monkeypatch) -> None:
    monkeypatch.setattr(http_module, "ACQUIRE_TIMEOUT_S", 0.1)
    client = await api({"items": ITEMS})
    pool = client.server.app[SERVICES].pool
    held = [await pool.lend() for _ in range(pool.budget.size)]
    try:
        for path in (f"{PREFIX}/status", f"{PREFIX}/runs"):
            answer = await body(await client.get(path), 503)
            assert answer["message"] == "no connection to the target within 100ms: all 6 are in use"
        assert await _reason_of_503(client, "get", "/readyz") == (
            "no connection to the target within 1s: all 6 are in use"
        )
    finally:
        for connection in held:
            pool.give_back(connection, clean=True)
    await body(await client.get(f"{PREFIX}/status"), 200)


async def test_target_rows_are_counted_at_most_once_per_ttl_whoever_asks(
    conn: asyncpg.Connection, api
) -> None:
    # Each count(*) of this view takes a number from the sequence, so the numbers taken are
    # the counts made, by any path and any connection.
    await conn.execute(
        "CREATE SEQUENCE public.counts;"
        " CREATE VIEW public.items AS SELECT 1 AS id WHERE nextval('public.counts') > 0"
    )

    async def counts_made() -> int:
        row = await conn.fetchrow("SELECT last_value, is_called FROM public.counts")
        assert row is not None
        return int(row["last_value"]) if row["is_called"] else 0

    client = await api({"items": ITEMS})
    now = 1000.0
    client.server.app[SERVICES].counts = RowCounts(ttl=5.0, clock=lambda: now)

    async def ask_every_path(times: int) -> None:
        paths = [f"{PREFIX}/status", f"{PREFIX}/syncs", f"{PREFIX}/count"] * times
        for answer in [await client.get(p) for p in paths] + list(
            await asyncio.gather(*(client.get(p) for p in paths))
        ):
            data = await body(answer, 200)
            shown = data.get("count", data.get("total_in_db")) or data["syncs"][0]["total_in_db"]
            assert shown == 1

    await ask_every_path(10)
    assert await counts_made() == 1
    now += 4.9
    await ask_every_path(10)
    assert await counts_made() == 1
    now += 0.1
    await ask_every_path(10)
    assert await counts_made() == 2


async def test_a_finished_run_is_counted_at_once(conn: asyncpg.Connection, api) -> None:
    await create_items(conn, 30)
    client = await api({"items": ITEMS})
    client.server.app[SERVICES].counts = RowCounts(ttl=5.0, clock=lambda: 1000.0)
    assert (await body(await client.get(f"{PREFIX}/count"), 200))["count"] == 0
    await body(await client.post(f"{PREFIX}/start-sync"), 200)
    assert (await body(await client.get(f"{PREFIX}/count"), 200))["count"] == 30
    assert (await body(await client.get(f"{PREFIX}/status"), 200))["total_in_db"] == 30


async def test_docs_serve_the_files_their_page_loads_and_nothing_else() -> None:
    runner = Runner(unreachable_config(), metrics=Metrics(), notifier=Notifier({}))
    services = Services(runner, Schedules(runner), StateStore("syncd"), Metrics())
    async with TestClient(TestServer(create_app(services)), middlewares=MIDDLEWARES) as client:
        page = await (await client.get("/docs")).text()
        loaded = re.findall(r'(?:src|href)="(/docs/static/[^"]+)"', page)
        assert loaded
        for path in loaded:
            assert (await client.get(path)).status == 200, path
        # Among the package's other files: a stock page that loads a petstore from the web.
        for name in ("index.html", "swagger-initializer.js", "swagger-ui-bundle.js.map", "x"):
            assert (await client.get(f"/docs/static/{name}")).status == 404, name
        assert (await client.get("/docs/static/%2e%2e/static/index.html")).status == 404


async def test_status_names_the_index_a_source_lacks(conn: asyncpg.Connection, api) -> None:
    await create_items(conn, 30)
    await conn.execute("DROP INDEX src.items_updated_at_id_idx")
    client = await api({"items": ITEMS})

    before = await body(await client.get(f"{PREFIX}/status"), 200)
    await body(await client.post(f"{PREFIX}/start-sync"), 200)
    after = await body(await client.get(f"{PREFIX}/status"), 200)

    assert before["missing_index"] is None  # not known before a run has looked
    assert after["missing_index"] == 'CREATE INDEX ON "src"."items" ("updated_at", "id")'


GATE = """
CREATE FUNCTION src.gate() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM pg_advisory_xact_lock_shared(7); RETURN true; END $$;
"""
GATED = ITEMS | {"table": None, "query": "SELECT * FROM src.items WHERE src.gate()"}


async def test_a_start_that_must_wait_is_202_queued_and_409_only_while_running(
    conn: asyncpg.Connection, api
) -> None:
    await create_items(conn, 30)
    await conn.execute(GATE)
    client = await api(
        {"a": GATED, "b": ITEMS | {"target_table": "public.b"}}, max_concurrent_runs=1
    )
    await conn.execute("SELECT pg_advisory_lock(7)")  # a's reads wait here
    started = await body(await client.post(f"{PREFIX}/start", json={"sync_name": "a"}), 202)
    assert started["status"] == "started"
    await wait_for_value(conn, "SELECT true FROM pg_locks WHERE objid = 7 AND NOT granted")

    queued = await body(await client.post(f"{PREFIX}/start", json={"sync_name": "b"}), 202)
    assert (queued["status"], queued["queue_position"]) == ("queued", 1)
    assert queued["message"] == (
        "Batch sync queued with batch_size=1000: 1 running, position 1 in the queue"
    )
    again = await body(
        await client.post(f"{PREFIX}/start", json={"sync_name": "b", "batch_size": 7}), 202
    )
    assert (again["run_id"], again["batch_size"]) == (queued["run_id"], 7)
    busy = await body(await client.post(f"{PREFIX}/start", json={"sync_name": "a"}), 409)
    assert busy["run_id"] == started["run_id"]

    status = await body(await client.get(f"{PREFIX}/status?sync_name=b"), 200)
    assert (status["running"], status["queued"], status["queue_position"]) == (False, True, 1)
    assert status["run_id"] == queued["run_id"] and status["queued_at"]
    listing = await body(await client.get(f"{PREFIX}/syncs"), 200)
    assert listing["runs"] == {"running": 1, "queued": 1, "max_concurrent_runs": 1}
    pools = {p["pool"]: p for p in listing["pools"]}
    assert pools["target"]["in_use"] >= 1 and pools["target"]["max"] == 6
    assert pools["source:pg"] == {
        "pool": "source:pg", "in_use": 1, "idle": 0, "max": 4, "waiting": 0
    }  # fmt: skip
    metrics = await (await client.get("/metrics")).text()
    assert "syncd_runs_queued 1.0" in metrics

    waiting = asyncio.ensure_future(client.post(f"{PREFIX}/start-sync?sync_name=b"))
    await asyncio.sleep(0.1)
    assert not waiting.done()  # a start-sync waits in the same queue
    await conn.execute("SELECT pg_advisory_unlock(7)")
    finished = await body(await waiting, 200)
    assert (finished["run_id"], finished["rows_this_run"]) == (queued["run_id"], 30)
    assert await conn.fetchval("SELECT batches FROM syncd.runs WHERE sync_name = 'b'") == 5


def test_the_readme_s_api_section_is_the_document_s() -> None:
    """The README's endpoint table names every documented operation and no other, and its
    event stream row every published event."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### HTTP API", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    listed = {
        (method.lower(), path)
        for row in rows
        for method, path in re.findall(r"`(GET|POST) (/[^`?\s]*)", row.split(" | ")[0])
    }
    document = openapi_document()
    documented = {(m, path) for path, item in document["paths"].items() for m in item}
    served_beside = {("get", "/openapi.json"), ("get", "/docs"), ("get", "/")}
    assert listed - served_beside == documented
    (events_row,) = [row for row in rows if row.startswith(f"| `GET {PREFIX}/events`")]
    stream = document["paths"][f"{PREFIX}/events"]["get"]["responses"]["200"]["content"]
    published = stream["text/event-stream"]["schema"]["properties"]["event"]["enum"]
    assert published and set(re.findall(r"`([a-z_]+)`", events_row)) >= set(published)


async def test_a_stale_sync_shows_in_status_health_and_the_stream_and_changes_in_status(
    conn: asyncpg.Connection, make_config, tmp_path: Path
) -> None:
    async with (
        events_daemon(conn, make_config, tmp_path) as daemon,
        aiohttp.ClientSession(daemon.url, middlewares=MIDDLEWARES) as session,
        session.get(f"{PREFIX}/events") as stream,
    ):
        recording = Recording(stream)

        async def freshness() -> dict[str, Any] | None:
            answer = await body(await session.get(f"{PREFIX}/status"), 200)
            return answer["freshness"]  # type: ignore[no-any-return]

        async def until_stale(stale: bool) -> dict[str, Any]:
            """The freshness once the sync is (not) stale, by a lag that is known."""
            for _ in range(300):
                seen = await freshness()
                if seen is not None and (seen["stale"], seen["lag_seconds"] is None) == (
                    stale,
                    False,
                ):
                    return seen
                await asyncio.sleep(0.05)
            raise AssertionError(f"freshness stayed at {seen}")

        await body(await session.post(f"{PREFIX}/start-sync"), 200)
        fresh = await until_stale(False)
        assert (fresh["lag_seconds"], fresh["synced_to"]) == (0.0, "2026-01-01 00:01:40+00")
        assert fresh["source_newest"] == fresh["synced_to"] and fresh["last_success_at"]
        assert await body(await session.get(f"{PREFIX}/health"), 200) | {"endpoints": 0} == {
            "status": "healthy", "module": "syncd", "endpoints": 0, "reasons": []
        }  # fmt: skip

        await write_events(conn, range(11, 16))  # 50 s of rows, above max_lag 30s
        stale = await until_stale(True)
        assert (stale["lag_seconds"], stale["source_newest"]) == (
            50.0,
            "2026-01-01 00:02:30+00",
        )
        health = await body(await session.get(f"{PREFIX}/health"), 200)
        assert (health["status"], health["reasons"]) == (
            "degraded", ["sync 'events' is stale: 50s behind its source, above max_lag 30s"]
        )  # fmt: skip
        assert await body(await session.get("/healthz"), 200) == {"status": "ok"}
        await recording.until(lambda: recording.named("freshness", "events"))

        await conn.execute("ALTER TABLE src.events ADD COLUMN note text DEFAULT 'n'")
        await body(await session.post(f"{PREFIX}/start-sync"), 200)
        await until_stale(False)
        await recording.until(lambda: len(recording.named("freshness", "events")) == 2)
        assert await body(await session.get(f"{PREFIX}/health"), 200) | {"endpoints": 0} == {
            "status": "healthy", "module": "syncd", "endpoints": 0, "reasons": []
        }  # fmt: skip
        status = await body(await session.get(f"{PREFIX}/status"), 200)
        recording.stop()

    told = [
        (e["stale"], e["lag_seconds"], e["max_lag_seconds"])
        for e in recording.named("freshness", "events")
    ]
    assert told == [(True, 50.0, 30.0), (False, 0.0, 30.0)]
    for name, data in recording.raw:
        check_event(name, data)
    (change,) = status["schema_changes"]
    assert {k: change[k] for k in ("column", "change", "old_type", "new_type", "action")} == {
        "column": "note", "change": "added", "old_type": None, "new_type": "text", "action": ANY
    }  # fmt: skip
    assert change["run_id"] and change["at"]


async def test_a_start_sync_that_outlasts_its_wait_is_202_with_where_to_follow_the_run(
    conn: asyncpg.Connection, api
) -> None:
    await create_items(conn, 30)
    await conn.execute(GATE)
    client = await api({"a": GATED}, api={"start_sync_wait": "300ms"})
    await conn.execute("SELECT pg_advisory_lock(7)")  # the run's reads wait here
    answer = await client.post(f"{PREFIX}/start-sync?sync_name=a")
    going = await body(answer, 202)
    assert going["status"] == "running" and going["sync_name"] == "a"
    assert going["message"] == (
        f"Batch sync still running after 300ms: follow run {going['run_id']}"
        f" at {PREFIX}/status?sync_name=a"
    )
    assert answer.headers["Location"] == going["status_url"] == f"{PREFIX}/status?sync_name=a"
    status = await body(await client.get(going["status_url"]), 200)
    assert (status["running"], status["run_id"]) == (True, going["run_id"])

    await conn.execute("SELECT pg_advisory_unlock(7)")
    await wait_idle(client, "a")  # the run went on without the request
    (run,) = (await body(await client.get(going["runs_url"]), 200))["runs"]
    assert (run["run_id"], run["status"], run["rows_read"]) == (going["run_id"], "succeeded", 30)

    # A run that ends within the wait is answered as the seed answered it.
    await create_items(conn, 5, start_id=31)
    done = await body(await client.post(f"{PREFIX}/start-sync?sync_name=a"), 200)
    assert (done["status"], done["rows_this_run"]) == ("complete", 5)

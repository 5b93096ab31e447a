"""Real PostgreSQL for every test: a template database per session, a fresh copy per test."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from syncd.api import Services, create_app
from syncd.config import Config
from syncd.configfile import load_config
from syncd.metrics import Metrics
from syncd.notify import Notifier
from syncd.pools import Backoff, Connections
from syncd.runner import Runner
from syncd.scheduler import Schedules
from syncd.state import StateStore
from syncd.verify.service import Verifications
from tests.contract import MIDDLEWARES

SERVER = os.environ.get("SYNCD_TEST_SERVER", "postgresql://postgres@127.0.0.1:5432")


def dsn_for(database: str) -> str:
    return f"{SERVER}/{database}"


async def _admin() -> asyncpg.Connection:
    return await asyncpg.connect(dsn_for("postgres"))


@pytest.fixture(scope="session")
async def template_db() -> AsyncIterator[str]:
    name = f"syncd_tmpl_{uuid.uuid4().hex[:10]}"
    admin = await _admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await asyncpg.connect(dsn_for(name))
        try:
            await conn.execute("CREATE SCHEMA src")
        finally:
            await conn.close()
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextlib.asynccontextmanager
async def database_from(template: str, prefix: str) -> AsyncIterator[str]:
    """A DSN to a new database copied from ``template``, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await _admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        yield dsn_for(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def db(template_db: str) -> AsyncIterator[str]:
    """A DSN to a database of this test's own, which serves as source and target."""
    async with database_from(template_db, "syncd_test") as dsn:
        yield dsn


@pytest.fixture
async def target_db(template_db: str) -> AsyncIterator[str]:
    """A second database, as a target that is not the source's database."""
    async with database_from(template_db, "syncd_target") as dsn:
        yield dsn


@pytest.fixture
async def conn(db: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db)
    try:
        yield connection
    finally:
        await connection.close()


ConfigFactory = Callable[..., tuple[Config, Path]]


@pytest.fixture
def make_config(db: str, tmp_path: Path) -> Iterator[ConfigFactory]:
    """Write a config file whose source and target are this test's database."""

    def make(syncs: dict[str, dict[str, Any]], **top: Any) -> tuple[Config, Path]:
        """``top`` sets top-level keys; a ``target`` mapping adds to the test's target."""
        document: dict[str, Any] = {
            "target": {"dsn": db, "state_schema": "syncd"} | top.pop("target", {}),
            "sources": {"pg": {"kind": "postgres", "dsn": db}},
            "syncs": {
                name: {"source": "pg", "retry": {"initial_delay": "1s", "max_delay": "2s"}} | spec
                for name, spec in syncs.items()
            },
            **top,
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(document))
        return load_config(path), path

    yield make


@pytest.fixture
async def api(make_config: ConfigFactory) -> AsyncIterator[Callable[..., Any]]:
    """Start the API for a config made from sync specs, its scheduler running; the test gets
    a client, whose every answer is checked against the OpenAPI document."""
    opened: list[tuple[TestClient[Any, Any], Services]] = []

    async def start(syncs: dict[str, dict[str, Any]], **top: Any) -> TestClient[Any, Any]:
        config, _ = make_config(syncs, **top)
        metrics = Metrics()
        connections = Connections(config, Backoff())
        metrics.track_pools(connections.use)
        runner = Runner(config, metrics=metrics, notifier=Notifier({}), connections=connections)
        verifications = Verifications(runner, metrics)
        schedules = Schedules(runner, verifications)
        services = Services(
            runner, schedules, StateStore("syncd"), metrics, connections=connections,
            verifications=verifications,
        )  # fmt: skip
        services.pool = connections.target
        async with services.pool.connection() as conn:
            await services.store.migrate(conn)
        schedules.apply(config)
        schedules.start()
        client: TestClient[Any, Any] = TestClient(
            TestServer(create_app(services)), middlewares=MIDDLEWARES
        )
        await client.start_server()
        opened.append((client, services))
        return client

    yield start
    for client, services in opened:
        await services.runner.drain(5)
        assert services.verifications is not None
        await services.verifications.close()
        services.schedules.shutdown()
        await client.close()
        assert services.connections is not None
        await services.connections.__aexit__(None, None, None)

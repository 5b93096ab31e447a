"""Schemathesis against a real ``syncd run``: no 500s, and every answer fits the document."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings

from syncd.openapi import openapi_document
from tests.conftest import dsn_for
from tests.helpers import create_items

schema = schemathesis.openapi.from_dict(openapi_document())
EVENT_STREAM_READ_S = 1.0
"""The event stream never ends: schemathesis reads it this long, and checks each event."""


async def _database(name: str, create: bool) -> None:
    admin = await asyncpg.connect(dsn_for("postgres"))
    try:
        if create:
            await admin.execute(f'CREATE DATABASE "{name}"')
            conn = await asyncpg.connect(dsn_for(name))
            await conn.execute("CREATE SCHEMA src")
            await create_items(conn, 100)
            await conn.close()
        else:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = f"syncd_fuzz_{uuid.uuid4().hex[:10]}"
    asyncio.run(_database(name, create=True))
    path = tmp_path_factory.mktemp("fuzz") / "config.yaml"
    items = {"source": "pg", "table": "src.items", "key": ["id"], "cursor": "updated_at"}
    path.write_text(yaml.safe_dump({
        "target": {"dsn": dsn_for(name)},
        "sources": {"pg": {"kind": "postgres", "dsn": dsn_for(name)}},
        "syncs": {"items": items | {"target_table": "public.items"},
                  "copy": items | {"target_table": "public.copy"}},
        "default_sync": "items",
        "api": {"port": 0},
    }))  # fmt: skip
    # The log goes to a file: a pipe nobody reads would fill up and stall the daemon.
    log = path.with_name("daemon.log")
    with log.open("w") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "syncd", "-c", str(path), "run"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        port = None
        while port is None and time.monotonic() < deadline:
            time.sleep(0.05)
            events = [json.loads(line) for line in log.read_text().splitlines()]
            port = next((e["port"] for e in events if e["event"] == "http_listening"), None)
        assert port is not None
        yield f"http://127.0.0.1:{port}"
    finally:
        daemon.terminate()
        daemon.wait(60)
        asyncio.run(_database(name, create=False))


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_keeps_its_documented_promises(case: schemathesis.Case, base_url: str) -> None:
    streams = case.path.endswith("/events")
    case.call_and_validate(base_url=base_url, timeout=EVENT_STREAM_READ_S if streams else None)


def test_the_document_is_the_one_served(base_url: str) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/openapi.json") as answer:
        assert json.load(answer) == json.loads(json.dumps(openapi_document()))

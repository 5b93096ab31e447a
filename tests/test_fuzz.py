"""Schemathesis against a real ``syncd run`` that is syncing all the while: every check, in
every phase (examples, coverage, fuzzing, stateful, along the document's links), the event
stream included. No 500s, and every answer and event fits the document.

It runs the ``st`` command as a user would, with one worker (several crash the tool), at
least ``EXAMPLES`` examples per operation, and two seeds: a fixed one, so that CI repeats
itself, and a random one, printed whenever it finds something, so that each run also looks
somewhere new.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import yaml

from syncd.openapi import openapi_document
from tests.conftest import dsn_for
from tests.helpers import create_items

EXAMPLES = 200
FIXED_SEED = 20261207
ST = Path(sys.executable).with_name("st")
# Streams are read until they have sent a few events, or for at most a second: the daemon's
# schedules send some every second.
CONFIG = """
workers = 1
[checks]
enabled = true
[[operations]]
include-path = "/api/batch-sync/events"
request-timeout = 1.0
max-stream-events = 4
"""


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


class Writer:
    """Changes a few source rows a second, so that every scheduled run has batches to commit."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._write()))

    async def _write(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        try:
            while not self._stop.is_set():
                await conn.execute(
                    "UPDATE src.items SET updated_at = clock_timestamp()"
                    " WHERE id = (SELECT 1 + floor(random() * 100)::int)"
                )
                await asyncio.sleep(0.2)
        finally:
            await conn.close()

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = f"syncd_fuzz_{uuid.uuid4().hex[:10]}"
    asyncio.run(_database(name, create=True))
    path = tmp_path_factory.mktemp("fuzz") / "config.yaml"
    items = {"source": "pg", "table": "src.items", "key": ["id"], "cursor": "updated_at",
             "schedule": {"every": "1s"}}  # fmt: skip
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
        with Writer(dsn_for(name)):
            yield f"http://127.0.0.1:{port}"
    finally:
        daemon.terminate()
        daemon.wait(60)
        asyncio.run(_database(name, create=False))


def schemathesis_run(
    base_url: str, seed: int, phases: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    return subprocess.run(
        [str(ST), "--config-file", str(config), "run", f"{base_url}/openapi.json",
         "--checks", "all", "--mode", "all", "--workers", "1", "--phases", phases,
         "--max-examples", str(EXAMPLES), "--seed", str(seed), "--no-color",
         "--generation-database", "none", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=900, env=os.environ | {"COLUMNS": "120"},
    )  # fmt: skip


@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", [FIXED_SEED, random.randrange(2**32)], ids=["fixed", "random"])
# Phases apart: each run stays short, and a finding names its phase.
@pytest.mark.parametrize("phases", ["examples,coverage,fuzzing", "stateful"])
def test_the_api_keeps_its_documented_promises(
    base_url: str, seed: int, phases: str, tmp_path: Path
) -> None:
    result = schemathesis_run(base_url, seed, phases, tmp_path)
    if os.environ.get("SYNCD_FUZZ_SHOW"):
        print(result.stdout)
    assert result.returncode == 0, (
        f"seed {seed}, phases {phases}:\n{result.stdout[-20000:]}\n{result.stderr}"
    )


def test_the_document_is_the_one_served(base_url: str) -> None:
    with urllib.request.urlopen(f"{base_url}/openapi.json") as answer:
        assert json.load(answer) == json.loads(json.dumps(openapi_document()))

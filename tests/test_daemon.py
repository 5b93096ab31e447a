"""``syncd run`` as a real process: systemd notifications, signals, reloads and its logs."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from tests.conftest import dsn_for
from tests.daemon import Daemon
from tests.helpers import create_items, fingerprint, wait_for_value

ITEMS = {
    "table": "src.items",
    "key": ["id"],
    "cursor": "updated_at",
    "target_table": "public.items",
}


@pytest.fixture
async def daemon_config(make_config) -> AsyncIterator[Any]:
    started: list[Daemon] = []

    def factory(syncs: dict[str, Any], tmp: Path, **top: Any) -> Daemon:
        _, path = make_config(syncs, api={"host": "127.0.0.1", "port": 0}, **top)
        daemon = Daemon(path, tmp)
        started.append(daemon)
        return daemon

    yield factory
    for daemon in started:
        if daemon.process is not None and daemon.process.returncode is None:
            daemon.process.kill()
            await daemon.process.wait()


async def test_ready_watchdog_status_and_stopping(
    conn: asyncpg.Connection, daemon_config, tmp_path: Path
) -> None:
    await create_items(conn, 100)
    daemon = daemon_config({"items": ITEMS | {"schedule": {"every": "1h"}}}, tmp_path)
    daemon.watchdog_usec = 200_000
    await daemon.start()
    await daemon.wait_ready()
    assert daemon.ready_seen_by_readyz == 200
    # The schedule fires at start; STATUS= follows the run.
    await daemon.wait_for(
        lambda: any(m.startswith("STATUS=items: succeeded") for m in daemon.messages)
    )
    await asyncio.sleep(0.5)
    assert sum(m == "WATCHDOG=1" for m in daemon.messages) >= 3

    assert await daemon.stop() == 0
    assert any(m.startswith("STOPPING=1") for m in daemon.messages)
    names = [e["event"] for e in daemon.lines]
    assert names.index("daemon_ready") < names.index("run_started") < names.index("run_finished")
    assert names[-2:] == ["shutdown_started", "shutdown_finished"]
    assert all({"timestamp", "level", "event", "logger"} <= set(e) for e in daemon.lines)
    started = daemon.events("run_started")[0]
    assert (
        started["sync_name"] == "items" and started["trigger"] == "schedule" and started["run_id"]
    )


async def test_sigterm_mid_run_commits_the_batch_in_flight_and_the_next_start_resumes(
    conn: asyncpg.Connection, daemon_config, tmp_path: Path
) -> None:
    await create_items(conn, 40_000)
    daemon = daemon_config({"items": ITEMS | {"batch_size": 20}}, tmp_path)
    await daemon.start()
    await daemon.wait_ready()
    status, _ = await daemon.request("POST", "/api/batch-sync/start")
    assert status == 202
    await daemon.wait_for(lambda: len(daemon.events("batch_committed")) >= 5)

    loop = asyncio.get_running_loop()
    sent = loop.time()
    assert await daemon.stop() == 0
    assert loop.time() - sent < 30  # well inside the grace period

    run = await conn.fetchrow("SELECT status, rows_read FROM syncd.runs")
    assert run["status"] == "cancelled" and 0 < run["rows_read"] < 40_000
    offset = await conn.fetchval("SELECT current_offset FROM syncd.sync_state")
    assert await conn.fetchval("SELECT count(*) FROM public.items") == offset == run["rows_read"]
    assert daemon.events("run_finished") == []

    again = Daemon(daemon.config, tmp_path)
    await again.start()
    await again.wait_ready()
    status, finished = await again.request(
        "POST", "/api/batch-sync/start-sync", params={"batch_size": "5000"}
    )
    assert status == 200 and finished["rows_this_run"] == 40_000 - offset
    assert await again.stop() == 0
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")


async def _ready_to_reload(
    conn: asyncpg.Connection, daemon_config: Any, tmp_path: Path
) -> tuple[Daemon, dict[str, Any]]:
    """A ready daemon syncing ten items, and its config document to change and reload."""
    await create_items(conn, 10)
    daemon = daemon_config({"items": ITEMS}, tmp_path)
    await daemon.start()
    await daemon.wait_ready()
    return daemon, yaml.safe_load(daemon.config.read_text())


async def test_sighup_reloads_a_valid_config_and_keeps_the_old_one_when_invalid(
    conn: asyncpg.Connection, daemon_config, tmp_path: Path
) -> None:
    daemon, document = await _ready_to_reload(conn, daemon_config, tmp_path)
    document["syncs"]["copy"] = document["syncs"]["items"] | {
        "target_table": "public.copy",
        "schedule": {"every": "1h"},
    }
    daemon.config.write_text(yaml.safe_dump(document))
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    await daemon.wait_for(lambda: daemon.events("config_reloaded"))
    assert daemon.events("config_reloaded")[0]["added"] == ["copy"]
    status, listing = await daemon.request("GET", "/api/batch-sync/syncs")
    assert status == 200 and {s["sync_name"] for s in listing["syncs"]} == {"items", "copy"}
    await wait_for_value(conn, "SELECT count(*) FROM public.copy WHERE true HAVING count(*) = 10")

    daemon.config.write_text("syncs: {broken: {source: nowhere}}\n")
    daemon.process.send_signal(signal.SIGHUP)
    await daemon.wait_for(lambda: daemon.events("config_reload_failed"))
    failure = daemon.events("config_reload_failed")[0]
    assert "syncs.broken.target_table: required key is missing" in failure["error"]
    status, listing = await daemon.request("GET", "/api/batch-sync/syncs")
    assert {s["sync_name"] for s in listing["syncs"]} == {"items", "copy"}
    assert await daemon.stop() == 0


async def test_a_bad_config_exits_78_at_once(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("syncs: {a: {source: x, table: t, target_table: t, batch_size: -1}}\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncd", "-c", str(path), "run",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 78
    assert b"syncs.a.batch_size" in err


async def test_an_open_bind_without_a_token_exits_78(make_config) -> None:
    _, path = make_config({"items": ITEMS}, api={"host": "0.0.0.0", "port": 0})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncd", "-c", str(path), "run",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 78 and b"api.token is not set" in err


async def test_an_unreachable_target_is_retried_and_not_ready(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    nowhere = "postgresql://postgres:pw-marker@127.0.0.1:1/postgres"
    path.write_text(yaml.safe_dump({
        "target": {"dsn": nowhere},
        "sources": {"pg": {"kind": "postgres", "dsn": nowhere}},
        "syncs": {"items": ITEMS | {"source": "pg"}},
        "api": {"port": 0},
    }))  # fmt: skip
    daemon = Daemon(path, tmp_path)
    await daemon.start()
    await daemon.wait_for(
        lambda: len([e for e in daemon.events("retrying") if e.get("what") == "target"]) >= 1
    )
    await daemon.wait_for(lambda: daemon.port is not None)
    status, answer = await daemon.request("GET", "/readyz")
    assert status == 503 and answer["reasons"][0] == "the target database has not answered yet"
    assert (await daemon.request("GET", "/healthz"))[0] == 200
    assert await daemon.stop() == 0
    assert not any("READY=1" in m for m in daemon.messages)
    assert all("pw-marker" not in line for line in daemon.raw_lines)


async def test_a_run_still_busy_after_the_grace_period_is_cancelled_and_recorded(
    conn: asyncpg.Connection, daemon_config, tmp_path: Path
) -> None:
    await create_items(conn, 400)
    # Each row takes 20 ms to read, so a batch of 100 outlasts the 1 s grace period.
    slow = {
        "query": "SELECT * FROM src.items WHERE pg_sleep(0.02)::text = ''",
        "key": ["id"],
        "cursor": "updated_at",
        "target_table": "public.items",
        "batch_size": 100,
    }
    daemon = daemon_config({"items": slow}, tmp_path, grace_period="1s")
    await daemon.start()
    await daemon.wait_ready()
    assert (await daemon.request("POST", "/api/batch-sync/start"))[0] == 202
    await daemon.wait_for(lambda: len(daemon.events("batch_committed")) >= 1)

    loop = asyncio.get_running_loop()
    sent = loop.time()
    assert await daemon.stop() == 0
    assert loop.time() - sent < 10

    run = await conn.fetchrow("SELECT status, error, rows_read, finished_at FROM syncd.runs")
    assert run["status"] == "cancelled" and run["finished_at"] is not None
    offset = await conn.fetchval("SELECT current_offset FROM syncd.sync_state")
    assert offset == run["rows_read"] == await conn.fetchval("SELECT count(*) FROM public.items")
    assert offset % 100 == 0 and offset < 400
    # Its sessions are gone too: the cancelled query did not keep running on the server.
    for _ in range(100):
        sessions = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'syncd' AND datname = current_database()"
        )
        if sessions == 0:
            break
        await asyncio.sleep(0.05)
    assert sessions == 0


async def test_a_port_in_use_is_one_line_exit_69_and_a_status_for_systemd(
    daemon_config, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = daemon_config({"items": ITEMS}, tmp_path)
        document = yaml.safe_load(daemon.config.read_text())
        daemon.config.write_text(yaml.safe_dump(document | {"api": {"port": port}}))
        await daemon.start()
        code, stderr = await daemon.exited()

    assert code == 69, stderr
    line = f"cannot listen on 127.0.0.1:{port} (api.host, api.port): Address already in use"
    assert stderr == f"syncd: {line}\n"
    assert f"STATUS={line}" in daemon.messages
    assert not any("READY=1" in m for m in daemon.messages)


@pytest.mark.parametrize(
    ("change", "changed"),
    [
        ({"target": {"state_schema": "elsewhere"}}, ["target.state_schema"]),
        ({"api": {"host": "127.0.0.1", "port": 1}}, ["api.port"]),
    ],
    ids=["target", "api"],
)
async def test_sighup_refuses_a_config_that_only_a_restart_could_apply(
    conn: asyncpg.Connection,
    daemon_config,
    tmp_path: Path,
    change: dict[str, dict[str, Any]],
    changed: list[str],
) -> None:
    daemon, document = await _ready_to_reload(conn, daemon_config, tmp_path)
    for section, values in change.items():
        document[section] |= values
    # Alongside, a change that could apply on its own: it waits for the restart too.
    document["syncs"]["copy"] = document["syncs"]["items"] | {"target_table": "public.copy"}
    daemon.config.write_text(yaml.safe_dump(document))
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)

    await daemon.wait_for(
        lambda: daemon.events("config_reload_refused") or daemon.events("config_reloaded")
    )
    assert daemon.events("config_reloaded") == []
    refused = daemon.events("config_reload_refused")[0]
    assert refused["changed"] == changed and refused["kept"] == "the running configuration"
    status, listing = await daemon.request("GET", "/api/batch-sync/syncs")
    assert status == 200 and [s["sync_name"] for s in listing["syncs"]] == ["items"]
    # New runs keep to the running target and its state schema.
    status, finished = await daemon.request("POST", "/api/batch-sync/start-sync")
    assert status == 200 and finished["rows_this_run"] == 10
    assert await conn.fetchval("SELECT count(*) FROM syncd.runs") == 1
    assert await conn.fetchval("SELECT to_regnamespace('elsewhere')") is None
    assert await daemon.stop() == 0


async def test_a_target_database_that_does_not_exist_yet_is_waited_for(tmp_path: Path) -> None:
    name = f"syncd_later_{uuid.uuid4().hex[:10]}"
    path = tmp_path / "config.yaml"
    later = {"kind": "postgres", "dsn": dsn_for(name)}
    path.write_text(
        yaml.safe_dump(
            {
                "target": {"dsn": dsn_for(name)},
                "sources": {"later": later},
                "syncs": {"items": {"source": "later", "table": "items", "target_table": "items"}},
                "api": {"port": 0},
            }
        )
    )
    daemon = Daemon(path, tmp_path)
    await daemon.start()
    admin = await asyncpg.connect(dsn_for("postgres"))
    try:
        await daemon.wait_for(lambda: daemon.events("retrying"))
        assert f'database "{name}" does not exist' in daemon.events("retrying")[0]["error"]
        await daemon.wait_for(lambda: daemon.port is not None)
        status, answer = await daemon.request("GET", "/readyz")
        assert status == 503 and answer["reasons"][0] == "the target database has not answered yet"

        await admin.execute(f'CREATE DATABASE "{name}"')
        await daemon.wait_ready()
        assert await daemon.stop() == 0
    finally:
        await daemon.stop()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

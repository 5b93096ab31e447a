"""The command line, run as a real process against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
import yaml

from syncd.cli import build_parser
from tests.daemon import scrape
from tests.helpers import create_items, fingerprint, living_demo, spawn_sync, wait_for_value

ITEMS = {
    "table": "src.items",
    "key": ["id"],
    "cursor": "updated_at",
    "target_table": "public.items",
}


def syncd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def syncd_async(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncd", "-c", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_sync_status_and_reset(conn: asyncpg.Connection, make_config) -> None:
    await create_items(conn, 500)
    _, path = make_config({"items": ITEMS | {"batch_size": 100}})

    code, out, err = await syncd_async(path, "sync", "items")
    assert code == 0, err
    assert "items: succeeded: 500 rows read, 500 written, 0 unchanged in 5 batches" in err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in lines].count("batch_committed") == 5
    assert all(e["level"] and e["timestamp"].endswith("Z") for e in lines)

    code, out, _ = await syncd_async(path, "status", "items", "--json")
    status = json.loads(out)
    assert code == 0
    assert status | {"last_sync_at": None} == status | {
        "sync_name": "items",
        "current_offset": 500,
        "total_synced": 500,
        "is_complete": True,
        "total_in_db": 500,
        "running": False,
        "last_sync_at": None,
    }
    code, out, _ = await syncd_async(path, "status")
    assert code == 0 and out.splitlines()[1].split()[:5] == [
        "items",
        "complete",
        "500",
        "500",
        "500",
    ]

    code, out, _ = await syncd_async(path, "reset", "items")
    assert code == 0 and "reset" in out
    assert await conn.fetchval("SELECT count(*) FROM public.items") == 500
    state = await conn.fetchrow(
        "SELECT position, current_offset, total_synced FROM syncd.sync_state"
    )
    assert tuple(state) == (None, 0, 0)


async def test_full_refresh_rereads_everything_and_keeps_counting(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 300)
    _, path = make_config({"items": ITEMS | {"batch_size": 100}})
    assert (await syncd_async(path, "sync", "items"))[0] == 0

    code, _, err = await syncd_async(path, "sync", "items", "--full-refresh")

    assert code == 0 and "300 rows read, 0 written, 300 unchanged" in err
    assert await conn.fetchval("SELECT current_offset FROM syncd.sync_state") == 600


async def test_a_second_process_is_refused_with_exit_75_naming_the_holder(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 20_000)
    _, path = make_config({"items": ITEMS | {"batch_size": 5}})
    first = await spawn_sync(path, "items")
    try:
        holder = await wait_for_value(conn, "SELECT holder_pid FROM syncd.sync_state")
        assert holder == first.pid

        code, _, err = await syncd_async(path, "sync", "items")
        assert code == 75
        assert f"already running: held by pid {first.pid} on " in err

        code, _, err = await syncd_async(path, "reset", "items")
        assert code == 75 and "reset refused while it runs" in err

        code, out, _ = await syncd_async(path, "status", "items", "--json")
        assert json.loads(out)["running"] is True
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()


@pytest.mark.parametrize(
    "command", [["sync"], ["status"], ["reset", "x"], ["check-config"], ["run"], ["demo"]]
)
def test_the_config_file_may_be_named_before_or_after_any_command(command: list[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(command).config is None
    for option in ("-c", "--config"):
        assert parser.parse_args([option, "a.yaml", *command]).config == Path("a.yaml")
        assert parser.parse_args([*command, option, "b.yaml"]).config == Path("b.yaml")
        # Given twice, the later one wins, as any repeated option does.
        assert parser.parse_args([option, "a.yaml", *command, "-c", "b.yaml"]).config == Path(
            "b.yaml"
        )


async def test_run_takes_its_config_file_after_the_command(
    conn: asyncpg.Connection, make_config
) -> None:
    _, path = make_config({"items": ITEMS}, api={"host": "127.0.0.1", "port": 0})
    daemon = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncd", "run", "--config", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert daemon.stdout is not None
    try:
        events: list[str] = []
        while "daemon_ready" not in events:
            line = await asyncio.wait_for(daemon.stdout.readline(), 30)
            assert line, (await daemon.communicate())[1].decode()
            events.append(json.loads(line)["event"])
    finally:
        daemon.send_signal(signal.SIGTERM)
        await asyncio.wait_for(daemon.wait(), 30)
    assert daemon.returncode == 0


async def test_usage_errors_exit_2(make_config) -> None:
    _, path = make_config({"items": ITEMS})
    assert syncd(path, "sync", "items", "--batch-size", "0").returncode == 2
    assert syncd(path, "frobnicate").returncode == 2
    done = syncd(path, "sync", "nope")
    assert done.returncode == 2 and "unknown sync 'nope' (configured: items)" in done.stderr


async def test_a_failing_sync_exits_1_with_the_error(conn: asyncpg.Connection, make_config) -> None:
    _, path = make_config({"items": ITEMS | {"table": "src.missing"}})
    code, _, err = await syncd_async(path, "sync", "items")
    assert code == 1
    assert 'relation "src.missing" does not exist' in err


async def test_check_config_reaches_every_database_without_showing_passwords(
    db: str, tmp_path: Path
) -> None:
    unreachable = "postgresql://who:pa55word@127.0.0.1:1/x"
    document = {
        "target": {"dsn": db},
        "sources": {
            "good": {"kind": "postgres", "dsn": db},
            "bad": {"kind": "postgres", "dsn": unreachable},
        },
        "syncs": {
            "one": {"source": "bad", "table": "a.b", "target_table": "a.b"},
            "two": {"source": "bad", "table": "a.c", "target_table": "a.c"},
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))

    done = syncd(path, "check-config")

    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == "config: ok (2 sources, 2 syncs)"
    assert lines[1].startswith("target: ok (") and "PostgreSQL 1" in lines[1]
    assert lines[2].startswith("source good: ok (")
    assert lines[3].startswith("source bad: FAILED (postgresql://who:***@127.0.0.1:1/x)")
    # The unreachable source is told once, not once more for each of its syncs.
    assert lines[4:] == [
        "sync one: not checked: source 'bad' could not be reached",
        "sync two: not checked: source 'bad' could not be reached",
    ]
    assert "pa55word" not in done.stdout + done.stderr


async def test_check_config_describes_each_sync_naming_what_is_missing(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 3)
    _, path = make_config({
        "items": ITEMS,
        "by_primary_key": ITEMS | {"key": None, "cursor": None},
        "query": {"query": "SELECT id, name FROM src.items", "key": ["id"],
                  "target_table": "public.q"},
        "no_table": ITEMS | {"table": "src.absent"},
        "no_cursor": ITEMS | {"cursor": "changed_at"},
        "no_key": ITEMS | {"key": ["item_id"], "columns": ["name", "colour"]},
        "unindexed": ITEMS | {"cursor": "amount"},
    })  # fmt: skip

    done = syncd(path, "check-config")

    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[3:] == [  # in the file's order, which safe_dump sorted
        "sync by_primary_key: ok (4 columns, key (id), no cursor)",
        "sync items: ok (4 columns, key (id), cursor updated_at)",
        "sync no_cursor: FAILED: the source table src.items has no column 'changed_at'"
        " (it has id, updated_at, name, amount)",
        "sync no_key: FAILED: the source table src.items has no column 'item_id', 'colour'"
        " (it has id, updated_at, name, amount)",
        'sync no_table: FAILED: cannot read the source table src.absent: relation "src.absent"'
        " does not exist",
        "sync query: ok (2 columns, key (id), no cursor)",
        "sync unindexed: ok (4 columns, key (id), cursor amount; no index leads with"
        " 'amount', so each run reads the table in one pass: "
        'CREATE INDEX ON "src"."items" ("amount", "id"))',
    ]
    # The same warning is logged, on stderr: stdout is the report's alone.
    warnings = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [w["event"] for w in warnings] == ["no_usable_index"]


async def test_check_config_gives_up_on_a_sync_whose_source_does_not_answer(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 3)
    _, path = make_config({"items": ITEMS})
    document = yaml.safe_load(path.read_text())
    document["sources"]["pg"] |= {"connect_timeout": "1s", "statement_timeout": "1s"}
    path.write_text(yaml.safe_dump(document))

    async with conn.transaction():
        await conn.execute("LOCK TABLE src.items IN ACCESS EXCLUSIVE MODE")
        code, out, _ = await syncd_async(path, "check-config")

    assert code == 1
    # Whichever gives up first: check-config's own bound, or the source's statement_timeout.
    [line] = out.splitlines()[3:]
    assert re.fullmatch(r"sync items: FAILED: (no answer within 2s|.*statement timeout)", line)


async def test_check_config_gives_up_on_a_source_that_accepts_and_never_answers(
    make_config,
) -> None:
    silent: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, path = make_config({"items": ITEMS})
    document = yaml.safe_load(path.read_text())
    document["sources"]["pg"] = {
        "kind": "postgres",
        "dsn": f"postgresql://postgres@127.0.0.1:{port}/x",
        "connect_timeout": "1s",
        "statement_timeout": "1s",
    }
    path.write_text(yaml.safe_dump(document))
    try:
        code, out, _ = await syncd_async(path, "check-config")
    finally:
        server.close()
        for writer in silent:
            writer.close()

    assert code == 1
    source, sync = out.splitlines()[2:]
    # Whichever gives up first: check-config's own bound, or the driver's connect timeout.
    assert re.fullmatch(r"source pg: FAILED \(.*\): (no answer within 2s|timed out)", source)
    assert sync == "sync items: not checked: source 'pg' could not be reached"


async def test_demo_makes_and_syncs_realistic_opportunities(
    conn: asyncpg.Connection, db: str, tmp_path: Path
) -> None:
    config = yaml.safe_load((Path(__file__).parent.parent / "config.yaml").read_text())
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = os.environ | {"SYNCD_TARGET_DSN": db, "SYNCD_DEMO_DSN": db}

    code, _, err = await syncd_async(path, "demo", "--rows", "2500", "--once", env=env)

    assert code == 0, err
    assert "2500 rows read, 2500 written" in err
    source = await fingerprint(conn, "syncd_demo.opportunities", "opportunity_id")
    assert source[0] == 2500
    assert await fingerprint(conn, "syncd_demo.minimal_opportunities", "opportunity_id") == source


@pytest.mark.timeout(120)
async def test_the_demo_lives_a_writer_changes_rows_and_the_mirror_keeps_up_until_ctrl_c(
    conn: asyncpg.Connection, db: str, tmp_path: Path
) -> None:
    async with living_demo(db, tmp_path, rows=300, writes_per_second=20) as demo:
        # A deal the writer created reaches the mirror: the writer runs, and so do the syncs.
        await wait_for_value(
            conn,
            "SELECT true FROM syncd_demo.minimal_opportunities WHERE account_name = 'Demo Corp'",
            within=60,
        )
        # Runs every 5 s keep the mirror well within the demo's max_lag of a minute, once
        # the watch has read the source's newest row (NaN until then).
        gauges: dict[str, float] = {}
        for _ in range(60):
            gauges = await demo_gauges(demo.url)
            if not math.isnan(gauges["syncd_lag_seconds"]):
                break
            await asyncio.sleep(0.5)
        assert gauges["syncd_sync_stale"] == 0 and 0 <= gauges["syncd_lag_seconds"] < 60

    assert demo.process.returncode == 0, demo.stderr
    assert "while a writer changes 20 rows a second" in demo.stderr
    assert [line["event"] for line in demo.lines if line["event"].startswith("sync_")] == []
    left = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    assert left == 0, "the demo left a session behind"


async def demo_gauges(url: str) -> dict[str, float]:
    wanted = ("syncd_lag_seconds", "syncd_sync_stale")
    return {sample.name: sample.value for sample in await scrape(url) if sample.name in wanted}

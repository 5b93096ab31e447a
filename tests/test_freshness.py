"""How far behind a mirror is, in each kind of cursor."""

from __future__ import annotations

import asyncio
import contextlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from syncd.freshness import freshness, kind_of_cursor
from tests.conftest import ConfigFactory
from tests.daemon import Daemon
from tests.helpers import create_items, events_daemon, run_sync, write_events
from tests.test_cli import syncd_async

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
AN_HOUR_AGO = NOW - timedelta(hours=1)


@pytest.mark.parametrize(
    ("kind", "newest", "synced", "lag"),
    [
        ("time", "2026-12-02 11:50:00+00", "2026-12-02 11:40:00+00", 600.0),
        ("time", "2026-12-02 11:40:00", "2026-12-02 11:40:00", 0.0),
        ("time", None, None, 0.0),  # an empty source
        ("time", "2026-12-02 11:40:00+00", None, None),  # nothing synced yet, or reset
        ("time", "infinity", "2026-12-02 11:40:00+00", None),
        ("number", "1200", "1100", 3600.0),  # rows wait: as old as the last success
        ("number", "1100", "1100", 0.0),
        (None, None, None, 3600.0),  # no cursor: the age of the last success
    ],
)
def test_the_lag_in_each_kind_of_cursor(
    kind: str | None, newest: str | None, synced: str | None, lag: float | None
) -> None:
    seen = freshness(
        cursor_kind=kind,
        source_newest=newest,
        synced_to=synced,
        last_success_at=AN_HOUR_AGO,
        max_lag=timedelta(minutes=30),
        now=NOW,
    )

    assert seen.lag_seconds == lag
    assert seen.stale is (lag is None or lag > 1800)


@pytest.mark.parametrize(
    ("pg_type", "kind"),
    [
        ("timestamp with time zone", "time"),
        ("timestamp(3) without time zone", "time"),
        ("date", "time"),
        ("bigint", "number"),
        ("numeric(20,0)", "number"),
        ("text", None),
        (None, None),
    ],
)
def test_what_a_cursor_measures(pg_type: str | None, kind: str | None) -> None:
    assert kind_of_cursor(pg_type) == kind


def test_a_sync_that_never_succeeded_is_stale_once_unknown_for_longer_than_its_max_lag() -> None:
    never = {"source_newest": "5", "synced_to": None, "last_success_at": None, "now": NOW}
    hour = timedelta(hours=1)

    late, soon = NOW - timedelta(minutes=61), NOW - timedelta(minutes=59)
    assert freshness(cursor_kind="number", max_lag=hour, unknown_since=late, **never).stale
    assert not freshness(cursor_kind="number", max_lag=hour, unknown_since=soon, **never).stale
    assert freshness(cursor_kind="number", max_lag=hour, **never).stale  # nothing to go by
    assert not freshness(cursor_kind="number", max_lag=None, **never).stale


async def test_a_run_reads_the_newest_cursor_in_the_source(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    await create_items(conn, 100)
    sync = {"table": "src.items", "cursor": "updated_at", "target_table": "items"}
    config, _ = make_config({"items": sync})

    result = await run_sync(config, "items")

    assert result.source_newest == "2025-01-01 00:01:40+00"


async def test_the_lag_follows_a_writer_paused_and_resumed_and_a_stale_sync_is_told_once(
    conn: asyncpg.Connection, make_config: ConfigFactory, tmp_path: Path
) -> None:
    async with events_daemon(conn, make_config, tmp_path) as daemon:
        status, _ = await daemon.request("POST", "/api/batch-sync/start-sync")
        assert status == 200
        await wait_for_gauges(daemon, lag=0.0, stale=0.0)

        await write_events(conn, range(11, 16))  # the writer goes on: 50 s of rows
        await wait_for_gauges(daemon, lag=50.0, stale=1.0)
        for _ in range(5):  # paused: the lag holds, look after look
            await asyncio.sleep(0.3)
            assert await gauges(daemon) == {"lag": 50.0, "stale": 1.0}
        await write_events(conn, range(16, 21))  # resumed
        await wait_for_gauges(daemon, lag=100.0, stale=1.0)
        code, out, _ = await syncd_async(daemon.config, "status")
        assert code == 0
        assert re.search(r"^events .* 1m40s stale ", out, re.MULTILINE), out

        status, _ = await daemon.request("POST", "/api/batch-sync/start-sync")
        assert status == 200
        await wait_for_gauges(daemon, lag=0.0, stale=0.0)

    told = [
        (e["event"], e["lag_seconds"], e["synced_to"])
        for e in daemon.lines
        if e["event"] in ("sync_stale", "sync_fresh")
    ]
    # Once per change, not once per look; the first load had its max_lag to finish in.
    assert told == [
        ("sync_stale", 50.0, "2026-01-01 00:01:40+00"),
        ("sync_fresh", 0.0, "2026-01-01 00:03:20+00"),
    ]
    assert daemon.events("sync_stale")[0]["max_lag_s"] == 30.0


async def gauges(daemon: Daemon) -> dict[str, float]:
    samples = {
        sample.name: sample.value
        for sample in await daemon.metrics()
        if sample.labels.get("sync_name") == "events"
    }
    return {"lag": samples["syncd_lag_seconds"], "stale": samples["syncd_sync_stale"]}


async def wait_for_gauges(daemon: Daemon, **wanted: float) -> None:
    seen: dict[str, float] = {}
    for _ in range(300):
        with contextlib.suppress(KeyError):  # not reported before the first look
            seen = await gauges(daemon)
        if seen == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the gauges stayed at {seen}, not {wanted}")

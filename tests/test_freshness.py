"""How far behind a mirror is, in each kind of cursor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from syncd.freshness import freshness
from tests.conftest import ConfigFactory
from tests.helpers import create_items, run_sync

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
AN_HOUR_AGO = NOW - timedelta(hours=1)


@pytest.mark.parametrize(
    ("kind", "newest", "synced", "lag"),
    [
        ("time", "2026-12-02 11:50:00+00", "2026-12-02 11:40:00+00", 600.0),
        ("time", "2026-12-02 11:40:00", "2026-12-02 11:40:00", 0.0),
        ("time", None, None, 0.0),  # an empty source
        ("number", "1200", "1100", 3600.0),  # rows wait: as old as the last success
        ("number", "1100", "1100", 0.0),
        (None, None, None, 3600.0),  # no cursor: the age of the last success
    ],
)
def test_the_lag_in_each_kind_of_cursor(
    kind: str | None, newest: str | None, synced: str | None, lag: float
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
    assert seen.stale is (lag > 1800)


def test_a_sync_that_never_succeeded_is_stale_once_it_has_a_max_lag() -> None:
    never = {"source_newest": "5", "synced_to": None, "last_success_at": None, "now": NOW}

    assert freshness(cursor_kind="number", max_lag=timedelta(hours=1), **never).stale
    assert not freshness(cursor_kind="number", max_lag=None, **never).stale


async def test_a_run_reads_the_newest_cursor_in_the_source(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    await create_items(conn, 100)
    sync = {"table": "src.items", "cursor": "updated_at", "target_table": "items"}
    config, _ = make_config({"items": sync})

    result = await run_sync(config, "items")

    assert result.source_newest == "2025-01-01 00:01:40+00"

"""Rows whose cursor is NULL: null_cursor include (the default), skip and fail."""

from __future__ import annotations

import asyncpg
import pytest
from structlog.testing import capture_logs

from syncd.errors import SourceError
from syncd.verify.verifier import verify
from tests.helpers import fingerprint, run_sync

DOCS = {"table": "src.docs", "cursor": "edited_at", "target_table": "public.docs", "batch_size": 7}


@pytest.fixture
async def docs(conn: asyncpg.Connection) -> asyncpg.Connection:
    """50 rows, every fifth with a NULL cursor."""
    await conn.execute(
        "CREATE TABLE src.docs (id int PRIMARY KEY, edited_at timestamptz, body text)"
    )
    await conn.execute("CREATE INDEX ON src.docs (edited_at, id)")
    await conn.execute(
        "INSERT INTO src.docs SELECT n, CASE WHEN n % 5 = 0 THEN NULL"
        " ELSE timestamptz '2025-01-01 00:00:00+00' + n * interval '1 minute' END, 'v1'"
        " FROM generate_series(1, 50) AS n"
    )
    return conn


async def test_include_reads_rows_without_a_cursor_by_key_and_keeps_the_position(
    docs: asyncpg.Connection, make_config
) -> None:
    config, _ = make_config({"docs": DOCS})

    with capture_logs() as logs:
        first = await run_sync(config, "docs")

    assert first.status == "succeeded" and first.rows_written == 50
    assert await fingerprint(docs, "public.docs") == await fingerprint(docs, "src.docs")
    warned = [e for e in logs if e["event"] == "null_cursor_rows"]
    assert [e["rows"] for e in warned] == [10]
    state = await docs.fetchrow("SELECT position, is_complete FROM syncd.sync_state")
    assert state["position"] == '["2025-01-01 00:49:00+00", "49"]' and state["is_complete"]

    await docs.execute("UPDATE src.docs SET body = 'v2' WHERE id IN (10, 35)")
    second = await run_sync(config, "docs")

    assert (second.rows_read, second.rows_written) == (10, 2)  # only the NULL-cursor rows
    assert await fingerprint(docs, "public.docs") == await fingerprint(docs, "src.docs")
    assert await docs.fetchval("SELECT position FROM syncd.sync_state") == state["position"]
    assert (await verify(config, "docs")).equal


async def test_include_when_every_cursor_is_null(docs: asyncpg.Connection, make_config) -> None:
    await docs.execute("UPDATE src.docs SET edited_at = NULL")
    config, _ = make_config({"docs": DOCS})

    assert (await run_sync(config, "docs")).rows_written == 50
    assert (await run_sync(config, "docs")).rows_written == 0
    assert await docs.fetchval("SELECT position FROM syncd.sync_state") is None
    assert await fingerprint(docs, "public.docs") == await fingerprint(docs, "src.docs")


async def test_skip_leaves_rows_without_a_cursor_unread(
    docs: asyncpg.Connection, make_config
) -> None:
    config, _ = make_config({"docs": DOCS | {"null_cursor": "skip"}})

    result = await run_sync(config, "docs")

    assert (result.status, result.rows_written) == ("succeeded", 40)
    assert await docs.fetchval("SELECT count(*) FROM public.docs WHERE id % 5 = 0") == 0
    report = (await verify(config, "docs")).as_json()
    assert report["missing"]["count"] == 10


async def test_fail_refuses_the_run_naming_the_count_before_writing(
    docs: asyncpg.Connection, make_config
) -> None:
    config, _ = make_config({"docs": DOCS | {"null_cursor": "fail"}})

    with pytest.raises(SourceError, match=r"^10 rows have a NULL cursor \(edited_at\)"):
        await run_sync(config, "docs")

    assert await docs.fetchval("SELECT count(*) FROM public.docs") == 0
    await docs.execute("UPDATE src.docs SET edited_at = now() WHERE edited_at IS NULL")
    assert (await run_sync(config, "docs")).rows_written == 50

"""Every statement a sync sends to a PostgreSQL source is planned as an index range scan.

A table big enough that a sequential scan is the planner's natural fallback, with
its cursor in random physical order, is synced while every statement that names it
is recorded; each is then explained with its own parameters. A scan of the whole
table in any of them would make the cost of a batch grow with the table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from tests.conftest import ConfigFactory
from tests.helpers import run_sync

BIG_ROWS = 300_000
BATCH = 10_000
BIG_TABLE = """
CREATE TABLE src.big (id bigint PRIMARY KEY, updated_at timestamptz, name text,
                      amount numeric(12, 2));
INSERT INTO src.big
SELECT n, timestamptz '2025-01-01' + (hashint4(n::int)::bigint % 1000000) * interval '1 s',
       repeat('x', 40) || n, n * 1.25
  FROM generate_series(1, {rows}) AS n;
CREATE INDEX big_by_time ON src.big (updated_at, id);
ANALYZE src.big;
"""


class Recorded:
    """Statements sent through asyncpg that name a source table, with their arguments."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def wrap(self, method: Any) -> Any:
        async def recording(conn: asyncpg.Connection, query: str, *args: Any, **kw: Any) -> Any:
            if '"src".' in query and not query.startswith("EXPLAIN"):
                self.statements.append((query, args))
            return await method(conn, query, *args, **kw)

        return recording


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorded]:
    record = Recorded()
    for name in ("fetch", "fetchrow", "fetchval", "copy_from_query"):
        monkeypatch.setattr(
            asyncpg.Connection, name, record.wrap(getattr(asyncpg.Connection, name))
        )
    yield record


def scans(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from scans(child)


async def costly_scans(
    conn: asyncpg.Connection, query: str, args: tuple[Any, ...], batch_size: int
) -> list[str]:
    """The plan nodes of ``query`` whose work grows with src.big rather than with a batch:
    a scan of the whole table, or a scan the planner expects to return far more rows than
    a batch holds, as it does when it cannot estimate a row comparison's range."""
    explained = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {query}", *args)
    nodes = list(scans(json.loads(explained)[0]["Plan"]))
    limited = any(node["Node Type"] == "Limit" for node in nodes)
    return [
        f"{node['Node Type']} of about {node['Plan Rows']} rows"
        for node in nodes
        if node.get("Relation Name") == "big"
        and (
            "Seq Scan" in node["Node Type"] or (not limited and node["Plan Rows"] > 3 * batch_size)
        )
    ]


@pytest.mark.timeout(180)
async def test_no_statement_of_a_sync_scans_more_than_its_batch_of_the_source_table(
    conn: asyncpg.Connection, make_config: ConfigFactory, recorded: Recorded
) -> None:
    await conn.execute(BIG_TABLE.format(rows=BIG_ROWS))
    sync = {
        "table": "src.big",
        "cursor": "updated_at",
        "target_table": "public.big",
        "batch_size": BATCH,
    }
    by_key = {"table": "src.big", "target_table": "public.big_by_key", "batch_size": BATCH}
    config, _ = make_config(
        {"first": sync, "again": sync | {"lookback": "1h", "lag": "1m"}, "keys": by_key}
    )
    await run_sync(config, "first")  # first, middle and last batches
    await run_sync(config, "keys")  # a keyset on the key alone
    await conn.execute(
        "UPDATE src.big SET updated_at = timestamptz '2025-01-12 12:00' + id * interval '1 ms'"
        " WHERE id % 1000 = 0"
    )
    # Rows without a cursor value are read by key, in a pass of their own, every run.
    await conn.execute("UPDATE src.big SET updated_at = NULL WHERE id % 50000 = 7")
    await conn.execute("ANALYZE src.big")
    await run_sync(config, "first")  # a catch-up from a saved position, and the NULL pass
    await run_sync(config, "again", full_refresh=True)
    await run_sync(config, "again")  # a lookback pass, then the rest
    await conn.execute("ALTER TABLE src.big ADD COLUMN region text DEFAULT 'emea'")
    backfilled = await run_sync(config, "first")  # the new column's backfill, by key
    assert backfilled.backfill_remaining is False
    assert await conn.fetchval("SELECT count(*) FROM public.big WHERE region = 'emea'") == BIG_ROWS

    assert len(recorded.statements) > 3 * BIG_ROWS // BATCH
    assert any("IS NULL AND" in query for query, _ in recorded.statements)
    await conn.execute("SET TIME ZONE 'UTC'")
    for query, args in recorded.statements:
        if _plans_a_load(query):
            continue
        assert await costly_scans(conn, query, args, BATCH) == [], query


def _plans_a_load(query: str) -> bool:
    """A parallel load over a key other than one dense integer reads every key once, once
    per load, to cut it at quantiles; an integer key (this table's) is cut by its min and
    max and the table's statistics, and held to the batch like every other statement."""
    return "ntile(" in query


async def test_a_batch_end_is_found_in_the_index_alone_when_the_cursor_cannot_be_null(
    conn: asyncpg.Connection, make_config: ConfigFactory, recorded: Recorded
) -> None:
    """Reading chunks by key, the statement that finds where a batch ends walks the key's
    index; a test that the cursor is not NULL would visit every row's heap tuple for it,
    where the column's NOT NULL already says so."""
    await conn.execute(
        "CREATE TABLE src.narrow (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL,"
        " note text)"
    )
    await conn.execute(
        "INSERT INTO src.narrow SELECT n, timestamptz '2025-01-01' + n * interval '1 s',"
        " repeat('x', 40) FROM generate_series(1, 30000) AS n"
    )
    await conn.execute("VACUUM (ANALYZE) src.narrow")  # index-only scans need a visibility map
    sync = {"table": "src.narrow", "cursor": "updated_at", "target_table": "public.narrow"}
    config, _ = make_config({"narrow": sync | {"chunk_rows": 10000, "batch_size": 1000}})

    result = await run_sync(config, "narrow")

    assert result.status == "succeeded", result.error
    ends = [(query, args) for query, args in recorded.statements if " OFFSET " in query]
    assert len(ends) >= 30
    for query, args in ends:
        explained = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {query}", *args)
        kinds = {node["Node Type"] for node in scans(json.loads(explained)[0]["Plan"])}
        assert "Index Only Scan" in kinds, query

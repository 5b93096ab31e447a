"""syncd's own bookkeeping: positions that keep any value, and a schema a least-privileged
role can use once it exists."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from syncd import pg, state
from syncd.state import StateStore
from tests.conftest import ConfigFactory
from tests.helpers import create_items, fingerprint, run_sync

ODD_POSITIONS = [
    ("A\x00", "1"),
    ("2025-01-01 00:00:00+00", None),
    ('quote " back \\ slash', "🚀 é"),
    ("[1, 2]", "null"),
]


@pytest.mark.parametrize("position", ODD_POSITIONS)
async def test_a_position_keeps_any_value_exactly(
    db: str, position: tuple[str | None, ...]
) -> None:
    store = StateStore("syncd")
    conn = await pg.connect(db, None)
    try:
        await store.migrate(conn)
        await store.claim(conn, "odd", "run-1")
        await store.start_run(conn, "odd", "run-1", "test")
        async with conn.transaction():
            await store.commit_batch(
                conn,
                sync_name="odd",
                run_id="run-1",
                position=position,
                rows_read=1,
                rows_written=1,
                complete=False,
            )
        assert (await store.load(conn, "odd")).position == position
    finally:
        await conn.close()


async def test_positions_saved_before_the_upgrade_survive_it(db: str) -> None:
    store = StateStore("syncd")
    conn = await pg.connect(db, None)
    try:
        # The schema as the previous release left it: migrations 1 and 2, jsonb positions.
        await conn.execute("CREATE SCHEMA syncd")
        await conn.execute(
            "CREATE TABLE syncd.schema_version (version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name in enumerate(state._MIGRATIONS[:2], start=1):
            await conn.execute(state.sql_text(name, "syncd"))
            await conn.execute("INSERT INTO syncd.schema_version VALUES ($1)", version)
        await conn.execute(
            "INSERT INTO syncd.sync_state (sync_name, position)"
            """ VALUES ('old', '["2025-01-01 00:00:00+00", "42"]')"""
        )

        await store.migrate(conn)

        assert (await store.load(conn, "old")).position == ("2025-01-01 00:00:00+00", "42")
    finally:
        await conn.close()


@pytest.fixture
async def plain_role(db: str) -> AsyncIterator[str]:
    """A login role with no right to create anything in the database."""
    name = f"syncd_plain_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(db)
    try:
        await admin.execute(f"CREATE ROLE {name} LOGIN")
        yield name
    finally:
        await admin.execute(f"DROP OWNED BY {name}")
        await admin.execute(f"DROP ROLE {name}")
        await admin.close()


async def test_a_role_without_create_runs_syncs_once_the_schema_exists(
    db: str, conn: asyncpg.Connection, make_config: ConfigFactory, plain_role: str
) -> None:
    await create_items(conn, 100)
    sync = {"table": "src.items", "key": ["id"], "cursor": "updated_at", "target_table": "items"}
    owner, _ = make_config({"items": sync})
    await run_sync(owner, "items")  # the owner creates the state schema and the table
    await conn.execute("UPDATE src.items SET name = 'renamed', updated_at = updated_at + '1h'")
    # The grants the README lists for a role that only runs syncs.
    database = await conn.fetchval("SELECT current_database()")
    await conn.execute(
        f"""
        REVOKE CREATE ON DATABASE "{database}" FROM PUBLIC;
        GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO {plain_role};
        GRANT USAGE ON SCHEMA syncd, src, public TO {plain_role};
        GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA syncd TO {plain_role};
        GRANT SELECT ON src.items TO {plain_role};
        GRANT SELECT, INSERT, UPDATE ON public.items TO {plain_role};
        """
    )
    plain_dsn = db.replace("postgres@", f"{plain_role}@")
    config, _ = make_config(
        {"items": sync},
        target={"dsn": plain_dsn},
        sources={"pg": {"kind": "postgres", "dsn": plain_dsn}},
    )

    result = await run_sync(config, "items")

    assert (result.status, result.rows_written) == ("succeeded", 100)
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")

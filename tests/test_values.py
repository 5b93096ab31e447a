"""Values arrive as they are: changes that `=` cannot see, dates at the edges of time,
and types that only the source database knows."""

from __future__ import annotations

from datetime import UTC, date, datetime

import asyncpg
import pytest

from syncd import pg
from syncd.identifiers import TableName
from syncd.sources import Column, RecordBatch, Shape
from syncd.target import TargetTable
from tests.conftest import ConfigFactory
from tests.helpers import run_sync

# Each pair is equal under `=` but is not the same value: a mirror must write the change.
CHANGES_THAT_EQUALS_CANNOT_SEE = {
    "numeric scale": ("numeric", "1.0", "1.00", {}),
    "interval units": ("interval", "1 day", "24 hours", {}),
    "negative zero": ("double precision", "0", "-0", {}),
    "number in jsonb": ("jsonb", '{"a": 1.0}', '{"a": 1.00}', {}),
    "citext case": ("text", "Alice", "alice", {"types": {"v": "citext"}}),
    "nondeterministic collation": ("text", "Alice", "alice", {"types": {"v": 'text COLLATE "ci"'}}),
}


@pytest.mark.parametrize(
    ("source_type", "before", "after", "spec"),
    CHANGES_THAT_EQUALS_CANNOT_SEE.values(),
    ids=CHANGES_THAT_EQUALS_CANNOT_SEE.keys(),
)
async def test_a_change_that_equals_cannot_see_is_still_written(
    conn: asyncpg.Connection,
    make_config: ConfigFactory,
    source_type: str,
    before: str,
    after: str,
    spec: dict[str, object],
) -> None:
    await conn.execute("CREATE EXTENSION citext")
    await conn.execute(
        "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
    )
    await conn.execute(f"CREATE TABLE src.v (id int PRIMARY KEY, v {source_type})")
    await conn.execute(f"INSERT INTO src.v VALUES (1, $1::text::{source_type}), (2, NULL)", before)
    config, _ = make_config({"v": {"table": "src.v", "target_table": "public.v", **spec}})
    await run_sync(config, "v")

    await conn.execute(f"UPDATE src.v SET v = $1::text::{source_type} WHERE id = 1", after)
    second = await run_sync(config, "v")

    assert (second.rows_read, second.rows_written) == (2, 1)
    assert await conn.fetchval("SELECT v::text FROM public.v WHERE id = 1") == (
        await conn.fetchval("SELECT v::text FROM src.v WHERE id = 1")
    )
    third = await run_sync(config, "v")
    assert third.rows_written == 0, "an unchanged row was rewritten"


# What Oracle can hold and asyncpg writes as -infinity and infinity unless told otherwise.
EDGES_OF_TIME = [
    (1, datetime(1, 1, 1), datetime(1, 1, 1), datetime(1, 1, 1, tzinfo=UTC), date(1, 1, 1)),
    (
        2,
        datetime(9999, 12, 31, 23, 59, 59),
        datetime(9999, 12, 31, 23, 59, 59, 999999),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        date(9999, 12, 31),
    ),
]
EDGES_AS_TEXT = [
    ("0001-01-01 00:00:00", "0001-01-01 00:00:00", "0001-01-01 00:00:00+00", "0001-01-01"),
    (
        "9999-12-31 23:59:59",
        "9999-12-31 23:59:59.999999",
        "9999-12-31 23:59:59.999999+00",
        "9999-12-31",
    ),
]
ORACLE_SHAPED = Shape(
    columns=(
        Column("ID", "id", "bigint"),
        Column("CREATED", "created", "timestamp(0) without time zone"),
        Column("STAMPED", "stamped", "timestamp(6) without time zone"),
        Column("ZONED", "zoned", "timestamp(6) with time zone"),
        Column("DAY", "day", "date"),
    ),
    key=("ID",),
    cursor=None,
)


@pytest.mark.parametrize("direct", [True, False], ids=["copied straight in", "upserted"])
async def test_the_first_and_last_oracle_dates_are_written_as_themselves(
    db: str, conn: asyncpg.Connection, direct: bool
) -> None:
    writer = await pg.connect(db, None)
    try:
        table = TargetTable(TableName.parse("public.edges"), ORACLE_SHAPED)
        await table.prepare(writer)
        async with writer.transaction():
            batch = RecordBatch(records=EDGES_OF_TIME, end=("2",), exhausted=True)
            assert await table.write(writer, batch, direct=direct) == (2, 2)
    finally:
        await writer.close()

    rows = await conn.fetch(
        "SELECT created::text, stamped::text, zoned::text, day::text FROM public.edges ORDER BY id"
    )
    assert [tuple(row) for row in rows] == EDGES_AS_TEXT


async def test_dates_at_the_edges_pass_through_a_postgresql_source_unchanged(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    await conn.execute(
        "CREATE TABLE src.edges"
        " (id int PRIMARY KEY, stamped timestamp, zoned timestamptz, day date)"
    )
    await conn.execute(
        """INSERT INTO src.edges VALUES
           (1, '0001-01-01 00:00:00', '0001-01-01 00:00:00+00', '0001-01-01'),
           (2, '9999-12-31 23:59:59.999999', '9999-12-31 23:59:59.999999+00', '9999-12-31'),
           (3, 'infinity', '-infinity', 'infinity')"""
    )
    config, _ = make_config({"edges": {"table": "src.edges", "target_table": "public.edges"}})

    await run_sync(config, "edges")

    shown = "SELECT stamped::text, zoned::text, day::text FROM {} ORDER BY id"
    assert await conn.fetch(shown.format("public.edges")) == await conn.fetch(
        shown.format("src.edges")
    )


SOURCE_ONLY_TYPES = """
CREATE EXTENSION citext;
CREATE TYPE src.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE src.pair AS (a integer, b text);
CREATE DOMAIN src.cheerful AS src.mood CHECK (VALUE <> 'sad');
CREATE TABLE src.odd (
    id        integer PRIMARY KEY,
    feeling   src.mood,
    feelings  src.mood[],
    pair      src.pair,
    pairs     src.pair[],
    cheer     src.cheerful,
    name      citext,
    narrow    text
);
INSERT INTO src.odd VALUES
    (1, 'happy', '{sad,happy}', '(1,"a b")', ARRAY['(2,x)'::src.pair, NULL], 'ok', 'Ann', 'abc'),
    (2, NULL, '{}', NULL, NULL, NULL, NULL, NULL);
"""


async def test_types_that_only_the_source_database_has_are_synced_into_another_database(
    conn: asyncpg.Connection, target_db: str, make_config: ConfigFactory
) -> None:
    await conn.execute(SOURCE_ONLY_TYPES)
    target = await asyncpg.connect(target_db)
    try:
        # A mood type of the target's own, and a table that uses it: values arrive as text
        # and become the target's type.
        await target.execute("CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy')")
        await target.execute(
            "CREATE TABLE public.moods (id integer PRIMARY KEY, feeling public.mood,"
            " feelings public.mood[], narrow varchar(5))"
        )
        config, _ = make_config(
            {
                "odd": {"table": "src.odd", "target_table": "public.odd"},
                "moods": {
                    "table": "src.odd",
                    "columns": ["feeling", "feelings", "narrow"],
                    "target_table": "public.moods",
                },
            },
            target={"dsn": target_db},
        )

        assert (await run_sync(config, "odd")).status == "succeeded"
        assert (await run_sync(config, "moods")).status == "succeeded"

        types = dict(
            await target.fetch(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = 'public.odd'::regclass AND attnum > 0"
            )
        )
        assert types == {
            "id": "integer",
            "feeling": "text",
            "feelings": "text[]",
            "pair": "text",
            "pairs": "text[]",
            "cheer": "text",
            "name": "text",
            "narrow": "text",
        }
        shown = "SELECT {} FROM {} ORDER BY id"
        everything = (
            "feeling::text, feelings::text, pair::text, pairs::text, cheer::text, name::text"
        )
        assert [tuple(r) for r in await target.fetch(shown.format(everything, "public.odd"))] == [
            tuple(r) for r in await conn.fetch(shown.format(everything, "src.odd"))
        ]
        moods = "feeling::text, feelings::text, narrow"
        assert [tuple(r) for r in await target.fetch(shown.format(moods, "public.moods"))] == [
            tuple(r) for r in await conn.fetch(shown.format(moods, "src.odd"))
        ]
    finally:
        await target.close()

"""syncd verify against real PostgreSQL: equal tables, each kind of difference alone
and mixed, text, composite and sparse keys, and rows pending under a live writer."""

from __future__ import annotations

import asyncio
import contextlib
import json

import asyncpg
import pytest

from syncd.verify import compare
from syncd.verify.verifier import verify
from tests.helpers import create_items, run_sync
from tests.test_cli import syncd_async

ITEMS = {
    "table": "src.items",
    "key": ["id"],
    "cursor": "updated_at",
    "target_table": "public.items",
}


async def synced_items(conn: asyncpg.Connection, make_config, rows: int, **sync: object):
    await create_items(conn, rows)
    config, path = make_config({"items": ITEMS | sync})
    assert (await run_sync(config, "items")).status == "succeeded"
    return config, path


def counts(report) -> dict[str, int]:
    document = report.as_json()
    return {kind: document[kind]["count"] for kind in ("missing", "extra", "different", "pending")}


async def test_equal_tables_are_equal_and_no_row_is_fetched(
    conn: asyncpg.Connection, make_config
) -> None:
    config, _ = await synced_items(conn, make_config, 20_000)

    report = await verify(config, "items")

    document = report.as_json()
    assert document["equal"] is True
    assert (document["source_rows"], document["target_rows"]) == (20_000, 20_000)
    assert counts(report) == {"missing": 0, "extra": 0, "different": 0, "pending": 0}
    assert document["rows_fetched"] == 0
    assert document["segments_checked"] == compare.FANOUT


@pytest.mark.parametrize(
    ("change", "kind", "key"),
    [
        ("DELETE FROM public.items WHERE id = 777", "missing", "777"),
        (
            "INSERT INTO public.items VALUES (30000, '2025-01-01', 'ghost', 1)",
            "extra",
            "30000",
        ),
        ("UPDATE public.items SET amount = amount + 0.01 WHERE id = 12345", "different", "12345"),
        ("UPDATE public.items SET name = NULL WHERE id = 1", "different", "1"),
        (
            "UPDATE src.items SET name = 'moved on', updated_at = now() WHERE id = 19999",
            "pending",
            "19999",
        ),
    ],
)
async def test_each_kind_of_difference_alone(
    conn: asyncpg.Connection, make_config, change: str, kind: str, key: str
) -> None:
    config, _ = await synced_items(conn, make_config, 20_000)
    await conn.execute(change)

    report = await verify(config, "items")

    expected = {"missing": 0, "extra": 0, "different": 0, "pending": 0} | {kind: 1}
    assert counts(report) == expected
    assert report.as_json()[kind]["keys"] == [[key]]
    assert report.as_json()["equal"] is (kind == "pending")
    # One leaf of each side was fetched, and the key read again: a sliver of the table.
    assert 0 < report.as_json()["rows_fetched"] < 2 * compare.LEAF_ROWS + 10


async def test_a_change_that_only_the_canonical_form_ignores_is_no_difference(
    conn: asyncpg.Connection, make_config
) -> None:
    """1.5 and 1.50 are the same number: the target's numeric(12,3) is no difference."""
    config, _ = await synced_items(conn, make_config, 100)
    await conn.execute("ALTER TABLE public.items ALTER COLUMN amount TYPE numeric(12,3)")

    assert (await verify(config, "items")).equal


async def test_mixed_differences_each_counted_and_listed(
    conn: asyncpg.Connection, make_config
) -> None:
    config, _ = await synced_items(conn, make_config, 20_000)
    await conn.execute("DELETE FROM public.items WHERE id % 1000 = 3")  # 20 missing
    await conn.execute(
        "INSERT INTO public.items SELECT n, '2025-01-01', 'x', 0"
        " FROM generate_series(50001, 50007) AS n"
    )  # 7 extra
    await conn.execute("UPDATE public.items SET name = 'changed' WHERE id % 2000 = 11")  # 10
    await conn.execute(
        "UPDATE src.items SET amount = 0, updated_at = now() WHERE id % 5000 = 17"
    )  # 4 pending

    report = await verify(config, "items")

    assert counts(report) == {"missing": 20, "extra": 7, "different": 10, "pending": 4}
    document = report.as_json()
    assert document["missing"]["keys"] == [[str(n)] for n in range(3, 20_000, 1000)]
    assert sorted(int(k[0]) for k in document["extra"]["keys"]) == list(range(50001, 50008))
    assert document["equal"] is False
    # 41 scattered differences in 20,000 rows: a small share of them fetched.
    assert document["rows_fetched"] < 0.6 * 20_000


async def test_a_source_with_text_keys_is_compared_in_binary_order(
    conn: asyncpg.Connection, make_config
) -> None:
    await conn.execute("CREATE TABLE src.words (word text PRIMARY KEY, n int)")
    await conn.execute(
        "INSERT INTO src.words SELECT chr(65 + n % 58) || md5(n::text), n"
        " FROM generate_series(1, 3000) AS n"
    )
    await conn.execute("INSERT INTO src.words VALUES ('a', 1), ('B', 2), ('é', 3), ('', 4)")
    config, _ = make_config({"words": {"table": "src.words", "target_table": "public.words"}})
    assert (await run_sync(config, "words")).status == "succeeded"
    # The target's collation sorts 'a' before 'B', the source's after: segments must still
    # hold the same rows on both sides, or equal tables would cost rows on the wire.
    await conn.execute('ALTER TABLE public.words ALTER COLUMN word TYPE text COLLATE "de-x-icu"')
    equal = (await verify(config, "words")).as_json()
    assert (equal["equal"], equal["rows_fetched"]) == (True, 0)
    await conn.execute("DELETE FROM public.words WHERE word IN ('B', 'é')")
    await conn.execute("UPDATE public.words SET n = -1 WHERE word = ''")

    report = await verify(config, "words")

    assert report.as_json()["missing"]["keys"] == [["B"], ["é"]]
    assert report.as_json()["different"]["keys"] == [[""]]
    assert report.as_json()["pending"]["count"] == 0  # no cursor: nothing is pending


async def test_composite_and_sparse_keys(conn: asyncpg.Connection, make_config) -> None:
    await conn.execute(
        "CREATE TABLE src.lines (region text, id bigint, qty numeric, PRIMARY KEY (region, id))"
    )
    # Sparse: ids spread over eighteen orders of magnitude, most of them in one corner.
    await conn.execute(
        "INSERT INTO src.lines SELECT r, n::bigint * n * n * (CASE WHEN n % 7 = 0"
        " THEN 1000000000 ELSE 1 END), n FROM generate_series(1, 2000) AS n,"
        " unnest(ARRAY['north', 'south', 'east']) AS r"
    )
    config, _ = make_config({"lines": {"table": "src.lines", "target_table": "public.lines"}})
    assert (await run_sync(config, "lines")).status == "succeeded"
    assert (await verify(config, "lines")).equal
    await conn.execute("DELETE FROM public.lines WHERE region = 'south' AND id = 343000000000")
    await conn.execute("UPDATE public.lines SET qty = 0 WHERE region = 'east' AND id = 8")
    await conn.execute("INSERT INTO public.lines VALUES ('west', 1, 1)")

    report = await verify(config, "lines")

    document = report.as_json()
    assert document["missing"]["keys"] == [["south", "343000000000"]]
    assert document["different"]["keys"] == [["east", "8"]]
    assert document["extra"]["keys"] == [["west", "1"]]


async def test_an_empty_target_is_all_missing_and_an_empty_source_all_extra(
    conn: asyncpg.Connection, make_config
) -> None:
    config, _ = await synced_items(conn, make_config, 1_000)
    await conn.execute("TRUNCATE public.items")
    assert counts(await verify(config, "items"))["missing"] == 1_000
    await run_sync(config, "items", full_refresh=True)
    await conn.execute("TRUNCATE src.items")
    assert counts(await verify(config, "items"))["extra"] == 1_000


async def test_rows_a_writer_changes_during_verify_are_pending_never_different(
    conn: asyncpg.Connection, make_config, db: str
) -> None:
    config, _ = await synced_items(conn, make_config, 20_000)
    stop = asyncio.Event()
    busy = asyncio.Event()
    written = 0

    async def writer() -> None:
        nonlocal written
        other = await asyncpg.connect(db)
        try:
            while not stop.is_set():
                await other.execute(
                    "UPDATE src.items SET amount = amount + 1, updated_at = clock_timestamp()"
                    " WHERE id = (random() * 19999)::int + 1"
                )
                await other.execute(
                    "INSERT INTO src.items VALUES ($1, clock_timestamp(), 'new', 1)",
                    100_000 + written,
                )
                written += 1
                if written == 20:
                    busy.set()
        finally:
            await other.close()

    task = asyncio.create_task(writer())
    try:
        await busy.wait()
        reports = [await verify(config, "items") for _ in range(3)]
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    for report in reports:
        document = report.as_json()
        assert (document["missing"]["count"], document["different"]["count"]) == (0, 0)
        assert document["extra"]["count"] == 0
        assert document["pending"]["count"] >= 20
        assert document["equal"] is True


async def test_the_command_prints_json_and_exits_3_while_differences_remain(
    conn: asyncpg.Connection, make_config
) -> None:
    _, path = await synced_items(conn, make_config, 500)

    code, out, err = await syncd_async(path, "verify", "items", "--json")
    assert code == 0, err
    assert json.loads(out)["equal"] is True

    await conn.execute("DELETE FROM public.items WHERE id = 42")
    code, out, _ = await syncd_async(path, "verify", "items", "--json")
    document = json.loads(out)
    assert code == 3
    assert document["missing"] == {"count": 1, "keys": [["42"]]}
    assert set(document) >= {
        "sync", "equal", "source_rows", "target_rows", "missing", "extra", "different",
        "pending", "segments_checked", "rows_fetched", "duration_s",
    }  # fmt: skip

    code, out, _ = await syncd_async(path, "verify", "items")
    assert code == 3
    assert "items: differences found" in out
    assert "missing" in out and "(42)" in out

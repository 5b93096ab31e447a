"""syncd verify --repair: copies what differs through the runs' upsert, deletes under
every guard (each shown to delete nothing), under the sync's lock, and survives kill -9."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import asyncpg
import pytest

from syncd.errors import AlreadyRunning
from syncd.state import StateStore
from syncd.verify import repair
from syncd.verify.verifier import verify
from tests.helpers import create_items, run_sync, wait_for_value
from tests.test_cli import syncd_async
from tests.test_verify import ITEMS


async def synced(conn: asyncpg.Connection, make_config, rows: int, **verify_config: object):
    await create_items(conn, rows)
    config, path = make_config({"items": ITEMS | {"verify": verify_config}})
    assert (await run_sync(config, "items")).status == "succeeded"
    return config, path


async def damage(conn: asyncpg.Connection) -> None:
    """Three missing rows, two different, two extra."""
    await conn.execute("DELETE FROM public.items WHERE id IN (10, 500, 999)")
    await conn.execute("UPDATE public.items SET name = 'wrong' WHERE id IN (20, 30)")
    await conn.execute(
        "INSERT INTO public.items VALUES (5001, now(), 'gone', 1), (5002, now(), 'gone', 2)"
    )


async def target_ids(conn: asyncpg.Connection) -> set[int]:
    return {r[0] for r in await conn.fetch("SELECT id FROM public.items")}


async def test_repair_copies_what_differs_and_with_deletes_off_leaves_extra_rows(
    conn: asyncpg.Connection, make_config
) -> None:
    config, _ = await synced(conn, make_config, 1_000)
    await damage(conn)

    report = await verify(config, "items", repair_too=True)

    document = report.as_json()
    assert document["repaired"] == {"copied": 5, "deleted": 0, "deletes_refused": None}
    assert report.settled is False  # the two extra rows stay: deletes are off
    after = (await verify(config, "items")).as_json()
    assert (after["missing"]["count"], after["different"]["count"]) == (0, 0)
    assert after["extra"]["keys"] == [["5001"], ["5002"]]
    recorded = await conn.fetch(
        "SELECT repair, equal FROM syncd.verifications ORDER BY finished_at"
    )
    assert [tuple(r) for r in recorded] == [(True, False), (False, False)]


async def test_hard_deletes_remove_extra_rows_and_log_them_with_the_verify(
    conn: asyncpg.Connection, make_config
) -> None:
    config, path = await synced(conn, make_config, 1_000, deletes="hard")
    await damage(conn)

    code, out, err = await syncd_async(path, "verify", "items", "--repair", "--json")

    assert code == 0, err
    assert json.loads(out)["repaired"] == {"copied": 5, "deleted": 2, "deletes_refused": None}
    assert (await verify(config, "items")).equal
    logged = await conn.fetch(
        "SELECT d.key, d.mode, v.repair FROM syncd.deletes d"
        " JOIN syncd.verifications v USING (verify_id) ORDER BY d.key"
    )
    assert [tuple(r) for r in logged] == [('["5001"]', "hard", True), ('["5002"]', "hard", True)]


async def test_soft_deletes_mark_rows_and_a_row_that_comes_back_is_unmarked(
    conn: asyncpg.Connection, make_config
) -> None:
    config, _ = await synced(conn, make_config, 1_000, deletes="soft")
    await conn.execute("DELETE FROM src.items WHERE id IN (7, 8)")

    report = await verify(config, "items", repair_too=True)

    assert report.as_json()["repaired"]["deleted"] == 2 and report.settled
    marked = await conn.fetch(
        "SELECT id FROM public.items WHERE _syncd_deleted_at IS NOT NULL ORDER BY id"
    )
    assert [r[0] for r in marked] == [7, 8]
    assert await conn.fetchval("SELECT count(*) FROM public.items") == 1_000
    assert (await verify(config, "items")).equal  # marked rows are not extra any more
    # Row 7 comes back, unchanged, with a newer cursor; the next run unmarks it.
    await conn.execute("INSERT INTO src.items VALUES (7, now(), 'item 7', 8.75)")
    assert (await run_sync(config, "items")).status == "succeeded"
    marked = await conn.fetch("SELECT id FROM public.items WHERE _syncd_deleted_at IS NOT NULL")
    assert [r[0] for r in marked] == [8]


async def test_a_failed_source_read_deletes_nothing(conn: asyncpg.Connection, make_config) -> None:
    await create_items(conn, 1_000)
    await conn.execute("CREATE VIEW src.items_view AS SELECT * FROM src.items")
    config, path = make_config(
        {"items": ITEMS | {"table": "src.items_view", "verify": {"deletes": "hard"}}}
    )
    assert (await run_sync(config, "items")).status == "succeeded"
    await conn.execute("INSERT INTO public.items VALUES (5001, now(), 'extra', 1)")
    # One segment of the source fails half-way through its scan.
    await conn.execute(
        "CREATE OR REPLACE VIEW src.items_view AS SELECT id, updated_at,"
        " CASE WHEN id = 900 THEN (1 / (id - 900))::text ELSE name END AS name, amount"
        " FROM src.items"
    )

    with pytest.raises(asyncpg.DivisionByZeroError):
        await verify(config, "items", repair_too=True)
    code, _, err = await syncd_async(path, "verify", "items", "--repair", "--confirm-deletes")
    assert code == 1
    assert err == "syncd: verify failed: DivisionByZeroError: division by zero\n"

    assert 5001 in await target_ids(conn)
    assert await conn.fetchval("SELECT count(*) FROM syncd.deletes") == 0


async def test_an_empty_source_deletes_nothing(conn: asyncpg.Connection, make_config) -> None:
    _, path = await synced(conn, make_config, 100, deletes="hard", max_delete_ratio=1)
    await conn.execute("DELETE FROM src.items")

    code, out, err = await syncd_async(
        path, "verify", "items", "--repair", "--confirm-deletes", "--json"
    )

    assert code == 3
    assert "syncd: deletes refused: the source has no rows and the target has 100" in err
    assert json.loads(out)["repaired"]["deleted"] == 0
    assert len(await target_ids(conn)) == 100


async def test_a_null_key_in_the_target_deletes_nothing(
    conn: asyncpg.Connection, make_config
) -> None:
    config, _ = await synced(conn, make_config, 100, deletes="hard")
    await conn.execute("ALTER TABLE public.items DROP CONSTRAINT items_pkey")
    await conn.execute("ALTER TABLE public.items ALTER COLUMN id DROP NOT NULL")
    await conn.execute("CREATE UNIQUE INDEX ON public.items (id)")
    await conn.execute(
        "INSERT INTO public.items VALUES (NULL, now(), 'no key', 1), (5001, now(), 'x', 1)"
    )

    report = await verify(config, "items", repair_too=True)

    refused = report.as_json()["repaired"]["deletes_refused"]
    assert refused == "the target holds 1 rows whose key is NULL, which no verify can place"
    assert await conn.fetchval("SELECT count(*) FROM public.items") == 102


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"max_delete_rows": 4}, "5 rows would be deleted, more than max_delete_rows (4)"),
        ({"max_delete_ratio": 0.04}, "5 of the target's 105 rows would be deleted, more than"),
    ],
)
async def test_a_delete_beyond_the_limits_needs_confirmation(
    conn: asyncpg.Connection, make_config, limits: dict[str, object], reason: str
) -> None:
    _, path = await synced(conn, make_config, 100, deletes="hard", **limits)
    await conn.execute(
        "INSERT INTO public.items SELECT n, now(), 'x', 1 FROM generate_series(5001, 5005) n"
    )

    code, _, err = await syncd_async(path, "verify", "items", "--repair")
    assert code == 3 and reason in err
    assert len(await target_ids(conn)) == 105

    code, _, err = await syncd_async(path, "verify", "items", "--repair", "--confirm-deletes")
    assert code == 0, err
    assert len(await target_ids(conn)) == 100


async def test_a_key_back_in_the_source_at_delete_time_deletes_nothing(
    conn: asyncpg.Connection, make_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = await synced(conn, make_config, 100, deletes="hard")
    await conn.execute("DELETE FROM src.items WHERE id IN (3, 4)")
    copy = repair.copy

    async def copy_while_a_row_comes_back(*args: object) -> int:
        # Between the search and the delete, row 4 is written again in the source.
        await conn.execute("INSERT INTO src.items VALUES (4, now(), 'back', 1)")
        return await copy(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(repair, "copy", copy_while_a_row_comes_back)

    report = await verify(config, "items", repair_too=True)

    refused = report.as_json()["repaired"]["deletes_refused"]
    assert refused == "1 of the 2 rows to delete are in the source again"
    assert {3, 4} <= await target_ids(conn)


async def test_a_repair_is_refused_while_the_sync_s_lock_is_held(
    conn: asyncpg.Connection, make_config, db: str
) -> None:
    config, path = await synced(conn, make_config, 100)
    holder = await asyncpg.connect(db)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", StateStore("syncd").lock_key("items"))
        with pytest.raises(AlreadyRunning):
            await verify(config, "items", repair_too=True)
        code, _, err = await syncd_async(path, "verify", "items", "--repair")
        assert code == 75 and "already running" in err
        assert (await verify(config, "items")).equal  # a verify alone takes no lock
    finally:
        await holder.close()


async def test_a_repair_killed_half_way_is_run_again_to_equality(
    conn: asyncpg.Connection, make_config
) -> None:
    config, path = await synced(conn, make_config, 60_000)
    await conn.execute("TRUNCATE public.items")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncd", "-c", str(path), "verify", "items", "--repair",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_for_value(
            conn, "SELECT 1 WHERE (SELECT count(*) FROM public.items) >= 5000", within=60
        )
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    copied = await conn.fetchval("SELECT count(*) FROM public.items")
    assert 0 < copied < 60_000

    code, out, err = await syncd_async(path, "verify", "items", "--repair", "--json")

    assert code == 0, err
    assert json.loads(out)["repaired"]["copied"] == 60_000 - copied
    assert (await verify(config, "items")).equal


def test_the_verify_block_reads_a_bare_off_as_the_word(tmp_path) -> None:
    from syncd.configfile import load_config

    path = tmp_path / "config.yaml"
    path.write_text(
        "target: {dsn: postgresql://x@localhost/db}\n"
        "sources: {pg: {kind: postgres, dsn: postgresql://x@localhost/db}}\n"
        "syncs:\n  items:\n    source: pg\n    table: src.items\n    target_table: items\n"
        "    verify: {every: 6h, deletes: off, max_delete_rows: 5}\n"
    )
    verify_config = load_config(path).syncs["items"].verify
    assert (verify_config.deletes, verify_config.max_delete_rows) == ("off", 5)
    assert verify_config.every is not None and verify_config.every.total_seconds() == 6 * 3600

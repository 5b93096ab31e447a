"""kill -9 at random moments: the target is always at a batch boundary, and a rerun finishes
the job with no row lost, none read twice and none duplicated."""

from __future__ import annotations

import asyncio
import random
import signal

import asyncpg

from tests.helpers import create_items, fingerprint, spawn_sync, wait_for_value

ITEMS = {
    "table": "src.items",
    "key": ["id"],
    "cursor": "updated_at",
    "target_table": "public.items",
}
KILLS = 5


async def kill_mid_run(conn: asyncpg.Connection, path: object, rng: random.Random) -> None:
    """Start a run, let it commit at least one batch, then SIGKILL it a random moment later."""
    before = (
        await conn.fetchval("SELECT coalesce(max(current_offset), 0) FROM syncd.sync_state")
        if await conn.fetchval("SELECT to_regclass('syncd.sync_state')")
        else 0
    )
    process = await spawn_sync(path, "items")
    await wait_for_value(conn, f"SELECT 1 FROM syncd.sync_state WHERE current_offset > {before}")
    await asyncio.sleep(rng.uniform(0, 0.1))
    process.send_signal(signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL


async def test_kill_9_at_random_moments_loses_and_repeats_nothing(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 60_000)
    _, path = make_config({"items": ITEMS | {"batch_size": 97}})
    rng = random.Random(20261129)

    for _ in range(KILLS):
        await kill_mid_run(conn, path, rng)
        # The target holds whole batches only: exactly what the saved offset says.
        offset = await conn.fetchval("SELECT current_offset FROM syncd.sync_state")
        assert await conn.fetchval("SELECT count(*) FROM public.items") == offset

    final = await spawn_sync(path, "items")
    assert await final.wait() == 0

    source = await fingerprint(conn, "src.items")
    assert await fingerprint(conn, "public.items") == source
    # Every source row was read exactly once across all the killed runs and the last one.
    assert await conn.fetchval("SELECT current_offset FROM syncd.sync_state") == source[0]
    statuses = [r[0] for r in await conn.fetch("SELECT status FROM syncd.runs ORDER BY started_at")]
    assert statuses == ["interrupted"] * KILLS + ["succeeded"]


async def test_kill_9_while_the_source_keeps_changing(
    conn: asyncpg.Connection, make_config
) -> None:
    await create_items(conn, 30_000)
    _, path = make_config({"items": ITEMS | {"batch_size": 50, "lookback": "1m"}})
    rng = random.Random(7)

    for round_ in range(3):
        await kill_mid_run(conn, path, rng)
        await conn.execute(
            "UPDATE src.items SET name = name || '!', updated_at = clock_timestamp()"
            " WHERE id % 5 = $1",  # enough changed rows that the next run is long
            round_,
        )
        await create_items(conn, 100, start_id=100_000 + round_ * 100)

    final = await spawn_sync(path, "items")
    assert await final.wait() == 0
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")

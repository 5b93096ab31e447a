"""Verify in the daemon: POST /api/batch-sync/verify (202, 409), the outcome in the
status' last_verify, on the event stream and in /metrics; every answer is checked
against the OpenAPI document by the api fixture's client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from tests.helpers import create_items, wait_for_value
from tests.test_api import PREFIX, body
from tests.test_verify import ITEMS


async def last_verify(client: TestClient[Any, Any], within: float = 60) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            status = await body(await client.get(f"{PREFIX}/status?sync_name=items"), 200)
            if status["last_verify"] is not None:
                return dict(status["last_verify"])
            await asyncio.sleep(0.05)


async def synced(conn: asyncpg.Connection, api, rows: int) -> TestClient[Any, Any]:
    await create_items(conn, rows)
    client = await api({"items": ITEMS | {"verify": {"deletes": "hard"}}})
    await body(await client.post(f"{PREFIX}/start-sync?sync_name=items"), 200)
    return client


async def test_a_verify_started_over_http_reports_in_status_events_and_metrics(
    conn: asyncpg.Connection, api
) -> None:
    client = await synced(conn, api, 2_000)
    status = await body(await client.get(f"{PREFIX}/status?sync_name=items"), 200)
    assert status["last_verify"] is None
    await conn.execute("DELETE FROM public.items WHERE id IN (5, 1500)")
    events = await client.get(f"{PREFIX}/events")

    started = await body(await client.post(f"{PREFIX}/verify", json={"sync": "items"}), 202)

    assert (started["status"], started["sync_name"]) == ("started", "items")
    found = await last_verify(client)
    assert (found["equal"], found["missing"]) == (False, {"count": 2, "keys": [["5"], ["1500"]]})
    assert found["repaired"] is None and found["started_at"] <= found["finished_at"]
    async with asyncio.timeout(30):
        while (await events.content.readline()).decode() != "event: verify\n":
            pass
        data = json.loads((await events.content.readline()).decode().removeprefix("data: "))
    events.close()
    assert data["verify_id"] == started["verify_id"]
    assert (data["equal"], data["missing"], data["extra"], data["error"]) == (False, 2, 0, None)
    metrics = await (await client.get("/metrics")).text()
    assert 'syncd_verify_rows{kind="missing",sync_name="items"} 2.0' in metrics
    assert 'syncd_verify_last_success_timestamp_seconds{sync_name="items"}' in metrics


async def test_a_repair_over_http_makes_the_target_equal(conn: asyncpg.Connection, api) -> None:
    client = await synced(conn, api, 500)
    await conn.execute("DELETE FROM public.items WHERE id = 7")
    await conn.execute("INSERT INTO public.items VALUES (9999, now(), 'extra', 1)")

    await body(await client.post(f"{PREFIX}/verify", json={"repair": True}), 202)

    found = await last_verify(client)
    assert found["repaired"] == {"copied": 1, "deleted": 1, "deletes_refused": None}
    assert await conn.fetchval("SELECT count(*) FROM public.items") == 500


async def test_a_second_verify_and_a_repair_of_a_running_sync_are_409(
    conn: asyncpg.Connection, api
) -> None:
    client = await synced(conn, api, 20_000)

    first = await client.post(f"{PREFIX}/verify", json={"sync": "items"})
    second = await client.post(f"{PREFIX}/verify", json={"sync": "items"})

    await body(first, 202)
    refused = await body(second, 409)
    assert "a verify of sync 'items' is already in progress" in refused["message"]
    await last_verify(client)

    await conn.execute("UPDATE src.items SET updated_at = now()")
    run = await body(await client.post(f"{PREFIX}/start?sync_name=items&batch_size=5"), 202)
    repair = await body(await client.post(f"{PREFIX}/verify", json={"repair": True}), 409)
    assert run["run_id"] in repair["message"]


async def test_a_verify_body_is_checked(conn: asyncpg.Connection, api) -> None:
    client = await synced(conn, api, 10)

    unknown = await body(await client.post(f"{PREFIX}/verify", json={"sync": "nope"}), 404)
    assert "unknown sync 'nope'" in unknown["message"]
    wrong = await body(await client.post(f"{PREFIX}/verify", json={"repair": "maybe"}), 400)
    assert "repair" in wrong["message"]
    # A number is not a yes or no, though Python would take 0 for False (schemathesis ST201).
    for number in (0, 1):
        wrong = await body(await client.post(f"{PREFIX}/verify", json={"repair": number}), 400)
        assert "repair" in wrong["message"]


async def test_verify_every_starts_verifies_that_repair_as_the_config_says(
    conn: asyncpg.Connection, api
) -> None:
    await create_items(conn, 300)
    verify = {"every": "1s", "repair": True, "deletes": "hard"}
    client = await api({"items": ITEMS | {"verify": verify}})
    await body(await client.post(f"{PREFIX}/start-sync?sync_name=items"), 200)
    await conn.execute("DELETE FROM public.items WHERE id = 3")

    await wait_for_value(conn, "SELECT 1 FROM public.items WHERE id = 3")

    found = await last_verify(client)
    assert found["repaired"] is not None

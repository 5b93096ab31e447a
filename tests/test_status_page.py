"""The status page in a real headless Chromium, against a real ``syncd run`` and PostgreSQL.

Screenshots go to $SYNCD_TEST_ARTEFACTS (default /tmp/syncd-artefacts), outside the repository.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from playwright.async_api import Browser, Dialog, Locator, Page, async_playwright, expect

from syncd.demo import DEMO_SYNC, create_demo_source
from syncd.identifiers import TableName
from syncd.verify.verifier import verify
from tests.daemon import Daemon
from tests.helpers import EVENTS_SYNC, create_items, living_demo, run_sync, write_events
from tests.test_parallel_load import plan_load

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTEFACTS = Path(os.environ.get("SYNCD_TEST_ARTEFACTS", "/tmp/syncd-artefacts"))

ITEMS = {
    "table": "src.items",
    "key": ["id"],
    "cursor": "updated_at",
    "target_table": "public.items",
}
DEMO = {
    "table": "src.opportunities",
    "key": ["opportunity_id"],
    "cursor": "last_update_date",
    "target_table": "public.minimal_opportunities",
}
BROKEN = ITEMS | {
    "table": "src.absent",
    "target_table": "public.broken",
    "schedule": {"every": "1h"},
}

expect.set_options(timeout=10_000)


class Visit:
    """One open status page, with the errors it logged and every request it made."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.requests: list[tuple[str, str]] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("request", lambda request: self.requests.append((request.method, request.url)))

    def card(self, sync: str) -> Locator:
        return self.page.locator(f'article[data-sync="{sync}"]')

    def field(self, sync: str, name: str) -> Locator:
        return self.card(sync).locator(f'[data-field="{name}"]')

    def runs(self, sync: str) -> Locator:
        return self.field(sync, "runs").locator("tr")

    async def screenshot(self, name: str) -> None:
        await self.page.screenshot(path=ARTEFACTS / name, full_page=True)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def visit(browser: Browser) -> AsyncIterator[Callable[..., Awaitable[Visit]]]:
    contexts = []

    async def open_page(url: str, *, without_events: bool = False) -> Visit:
        context = await browser.new_context(
            locale="en-US", timezone_id="UTC", viewport={"width": 1280, "height": 640}
        )
        contexts.append(context)
        visit = Visit(await context.new_page())
        if without_events:
            await visit.page.route("**/api/batch-sync/events", lambda route: route.abort())
        await visit.page.goto(url)
        return visit

    yield open_page
    for context in contexts:
        await context.close()


@pytest.fixture
async def start_daemon(make_config, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Daemon] = []

    async def start(syncs: dict[str, Any], **top: Any) -> Daemon:
        api = {"host": "127.0.0.1", "port": 0} | top.pop("api", {})
        _, path = make_config(syncs, api=api, **top)
        daemon = Daemon(path, tmp_path)
        started.append(daemon)
        await daemon.start()
        await daemon.wait_ready()
        return daemon

    yield start
    for daemon in started:
        await daemon.stop()


async def test_the_page_shows_every_sync_and_asks_nothing_of_other_hosts(
    conn: asyncpg.Connection, start_daemon, visit
) -> None:
    await create_demo_source(conn, TableName.parse(DEMO["table"]), 1_000)
    daemon = await start_daemon({DEMO_SYNC: DEMO, "broken": BROKEN})
    await daemon.wait_for(lambda: daemon.events("run_failed"))  # broken's run at start
    page = await visit(daemon.url)

    await expect(page.page.locator("#updates")).to_have_text("Live updates")
    await expect(page.field("broken", "state")).to_have_text("failed")
    await expect(page.field("broken", "error")).to_have_text(
        re.compile(r'relation "src\.absent" does not exist')
    )
    await expect(page.field("broken", "source")).to_have_text("pg")
    await expect(page.field("broken", "target")).to_have_text("public.broken")
    await expect(page.field("broken", "schedule")).to_have_text("every 1h")
    # At the sync's own offset into the hour, as the API says.
    _, status = await daemon.request("GET", "/api/batch-sync/status?sync_name=broken")
    await expect(page.field("broken", "next-run")).to_have_attribute(
        "datetime", status["next_run_at"]
    )
    await expect(page.field("broken", "next-run")).to_have_text(re.compile(r"^in "))
    await expect(page.field("broken", "next-run")).to_have_attribute("title", re.compile("UTC"))
    await expect(page.runs("broken")).to_have_count(1)
    await expect(page.runs("broken").locator("td")).to_have_text(
        [re.compile("ago|just now"), "failed", "0", re.compile(r" s$"), "schedule"]
    )

    await expect(page.field(DEMO_SYNC, "state")).to_have_text("idle")
    await expect(page.field(DEMO_SYNC, "no-runs")).to_be_visible()
    await expect(page.field(DEMO_SYNC, "last-sync")).to_have_text("never")
    await expect(page.field(DEMO_SYNC, "total-in-db")).to_have_text("no table yet")
    await expect(page.field(DEMO_SYNC, "error-box")).to_be_hidden()
    for banner in ("#not-ready", "#problem", "#empty", "#token-panel"):
        await expect(page.page.locator(banner)).to_be_hidden()

    assert page.errors == []
    assert all(url.startswith(f"{daemon.url}/") for _, url in page.requests), page.requests

    # When the daemon goes, its event stream ends at once and the page says so.
    loop = asyncio.get_running_loop()
    asked = loop.time()
    assert await daemon.stop() == 0
    assert loop.time() - asked < 5
    await expect(page.page.locator("#problem")).to_contain_text("syncd does not answer")


async def test_start_moves_the_bar_until_the_card_is_complete(
    conn: asyncpg.Connection, start_daemon, visit
) -> None:
    await create_demo_source(conn, TableName.parse(DEMO["table"]), 200_000)
    daemon = await start_daemon({DEMO_SYNC: DEMO, "broken": BROKEN})
    page = await visit(daemon.url)
    await expect(page.page.locator("#updates")).to_have_text("Live updates")

    await page.field(DEMO_SYNC, "batch-size").fill("2000")
    await page.field(DEMO_SYNC, "start").click()
    await expect(page.field(DEMO_SYNC, "message")).to_contain_text(
        "Batch sync started with batch_size=2000"
    )
    # The bar's position (0…1, -1 while the estimate is unknown), sampled until the run ends.
    positions: list[float] = []
    photographed = False
    deadline = asyncio.get_running_loop().time() + 60
    while asyncio.get_running_loop().time() < deadline:
        state, position = await page.card(DEMO_SYNC).evaluate(
            """card => [card.dataset.state,
                        card.querySelector('[data-field="progress"]').hidden ? null
                        : card.querySelector('[data-field="bar"]').position]"""
        )
        if state == "complete":
            break
        if position is not None and 0 < position < 1:
            positions.append(position)
            if position > 0.5 and not photographed:
                await page.screenshot("status-page-running.png")
                photographed = True
        await asyncio.sleep(0.05)
    assert len(set(positions)) >= 3 and photographed, positions
    assert positions == sorted(positions)

    await expect(page.field(DEMO_SYNC, "state")).to_have_text("complete")
    await expect(page.field(DEMO_SYNC, "progress")).to_be_hidden()
    await expect(page.field(DEMO_SYNC, "total-synced")).to_have_text("200,000")
    await expect(page.field(DEMO_SYNC, "total-in-db")).to_have_text("200,000")
    await expect(page.field(DEMO_SYNC, "last-sync")).to_have_text(re.compile("ago|just now"))
    await expect(page.runs(DEMO_SYNC).first.locator("td")).to_have_text(
        [re.compile("ago|just now"), "succeeded", "200,000", re.compile(r" s$"), "http"]
    )
    assert await conn.fetchval("SELECT count(*) FROM public.minimal_opportunities") == 200_000
    assert page.errors == []
    await page.screenshot("status-page-complete.png")
    await page.page.emulate_media(color_scheme="dark")
    await page.screenshot("status-page-dark.png")
    await page.page.set_viewport_size({"width": 390, "height": 844})
    await page.screenshot("status-page-phone.png")


async def test_reset_asks_first_and_polling_stands_in_for_events(
    conn: asyncpg.Connection, start_daemon, visit
) -> None:
    await create_items(conn, 1_000)
    daemon = await start_daemon({"items": ITEMS})
    page = await visit(daemon.url, without_events=True)
    await expect(page.page.locator("#updates")).to_contain_text("Live updates unavailable")
    await expect(page.field("items", "state")).to_have_text("idle")

    # A run the page did not start, seen by polling alone.
    assert (await daemon.request("POST", "/api/batch-sync/start-sync"))[0] == 200
    await expect(page.field("items", "state")).to_have_text("complete")
    await expect(page.field("items", "total-synced")).to_have_text("1,000")

    questions: list[str] = []

    async def dismiss(dialog: Dialog) -> None:
        questions.append(dialog.message)
        await dialog.dismiss()

    async def accept(dialog: Dialog) -> None:
        questions.append(dialog.message)
        await dialog.accept()

    page.page.once("dialog", dismiss)
    await page.field("items", "reset").click()
    await page.page.wait_for_timeout(300)
    assert not [url for method, url in page.requests if method == "POST"]
    await expect(page.field("items", "state")).to_have_text("complete")

    page.page.once("dialog", accept)
    await page.field("items", "reset").click()
    await expect(page.field("items", "message")).to_have_text("Sync state reset for 'items'.")
    await expect(page.field("items", "state")).to_have_text("idle")
    await expect(page.field("items", "total-synced")).to_have_text("0")
    await expect(page.field("items", "last-sync")).to_have_text("never")
    assert len(questions) == 2 and questions[0] == questions[1]
    assert '"items"' in questions[0] and "public.items" in questions[0]
    assert await conn.fetchval("SELECT total_synced FROM syncd.sync_state") == 0


async def test_markup_in_a_sync_name_or_an_error_is_shown_as_text(
    conn: asyncpg.Connection, start_daemon, visit
) -> None:
    name = "<script>window.pwned = 'name'</script>"
    table = "<img src=x onerror=window.pwned=1>"
    daemon = await start_daemon(
        {name: ITEMS | {"table": f'src."{table}"', "schedule": {"every": "1h"}}}
    )
    await daemon.wait_for(lambda: daemon.events("run_failed"))
    page = await visit(daemon.url)

    await expect(page.field(name, "name")).to_have_text(name)
    await expect(page.field(name, "state")).to_have_text("failed")
    await expect(page.field(name, "error")).to_contain_text(
        f'relation "src.{table}" does not exist'
    )
    assert await page.page.evaluate("window.pwned") is None
    assert await page.page.locator("img").count() == 0
    assert await page.page.locator("script").count() == 1  # page.js
    assert page.errors == []


async def test_a_wrong_token_is_refused_plainly_and_the_right_one_works(
    conn: asyncpg.Connection, start_daemon, visit
) -> None:
    await create_items(conn, 100)
    daemon = await start_daemon({"items": ITEMS}, api={"token": "the-right-token"})
    page = await visit(daemon.url)
    panel = page.page.locator("#token-panel")
    await expect(panel).to_be_visible()
    await expect(page.page.locator("#token-input")).to_be_focused()

    await page.page.keyboard.type("a-wrong-token")
    await page.page.keyboard.press("Enter")
    await expect(panel).to_be_hidden()
    await page.field("items", "start").click()
    await expect(page.field("items", "message")).to_have_text(
        "401: the daemon refused the API token. Enter the right one above."
    )
    await expect(page.page.locator("#token-alert")).to_have_text(
        "401 Unauthorized: the daemon refused the token (missing or wrong bearer token)."
    )
    await expect(panel).to_be_visible()
    await expect(page.field("items", "state")).to_have_text("idle")

    await page.page.locator("#token-input").fill("the-right-token")
    await page.page.keyboard.press("Enter")
    await page.field("items", "start").click()
    await expect(page.field("items", "state")).to_have_text("complete")
    await expect(page.field("items", "total-synced")).to_have_text("100")
    assert await page.page.evaluate("sessionStorage.getItem('syncd.token')") == "the-right-token"


async def test_an_unreachable_target_has_its_say(tmp_path: Path, visit) -> None:
    nowhere = "postgresql://postgres@127.0.0.1:1/postgres"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "target": {"dsn": nowhere},
        "sources": {"pg": {"kind": "postgres", "dsn": nowhere}},
        "syncs": {"items": ITEMS | {"source": "pg"}},
        "api": {"host": "127.0.0.1", "port": 0},
    }))  # fmt: skip
    daemon = Daemon(path, tmp_path)
    await daemon.start()
    try:
        await daemon.wait_for(lambda: daemon.port is not None)
        page = await visit(daemon.url)
        await expect(page.page.locator("#not-ready")).to_contain_text(
            "the target database has not answered yet"
        )
        await page.screenshot("status-page-not-ready.png")
    finally:
        await daemon.stop()


async def test_a_queued_run_shows_where_it_waits_and_the_daemon_how_busy_it_is(
    conn: asyncpg.Connection, start_daemon, visit
) -> None:
    await create_items(conn, 50)
    # a's reads wait while the test holds advisory lock 7: it keeps the only slot.
    await conn.execute(
        "CREATE FUNCTION src.gate() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$"
        " BEGIN PERFORM pg_advisory_xact_lock_shared(7); RETURN true; END $$"
    )
    gated = ITEMS | {"table": None, "query": "SELECT * FROM src.items WHERE src.gate()"}
    daemon = await start_daemon(
        {"a": gated, "b": ITEMS | {"target_table": "public.b"}}, max_concurrent_runs=1
    )
    page = await visit(daemon.url)
    await expect(page.page.locator("#updates")).to_have_text("Live updates")
    await conn.execute("SELECT pg_advisory_lock(7)")
    try:
        assert (await daemon.request("POST", "/api/batch-sync/start", json={"sync_name": "a"}))[
            0
        ] == 202
        await page.field("b", "start").click()
        await expect(page.field("b", "message")).to_contain_text(
            "Batch sync queued with batch_size=1000: 1 running, position 1 in the queue"
        )
        await expect(page.field("b", "state")).to_have_text("queued")
        await expect(page.field("b", "queue")).to_have_text(
            "Waiting for a free slot: number 1 in the queue."
        )
        await expect(page.field("a", "state")).to_have_text("running")
        await expect(page.page.locator("#run-counts")).to_have_text(
            "Runs: 1 of 1 running, 1 queued"
        )
        await page.page.reload()  # the connections are shown as a whole reload finds them
        await expect(page.page.locator("#pool-use")).to_have_text(
            re.compile(r"^Connections: target [1-6] of 6, source:pg 1 of 4$")
        )
        await page.screenshot("status-page-queued.png")
    finally:
        await conn.execute("SELECT pg_advisory_unlock(7)")
    await expect(page.field("b", "state")).to_have_text("complete")
    await expect(page.field("b", "queue")).to_be_hidden()
    await expect(page.page.locator("#run-counts")).to_have_text("Runs: 0 of 1 running, 0 queued")
    assert page.errors == []


async def test_the_chart_grows_with_each_run_an_error_names_its_run_and_a_phone_or_the_dark_fits(
    conn: asyncpg.Connection, start_daemon, visit
) -> None:
    await create_items(conn, 100)
    daemon = await start_daemon({"items": ITEMS, "broken": BROKEN})
    await daemon.wait_for(lambda: daemon.events("run_failed"))
    page = await visit(daemon.url)
    await expect(page.page.locator("#updates")).to_have_text("Live updates")
    bars = page.field("items", "chart").locator("rect")
    await expect(bars).to_have_count(0)
    await expect(page.field("items", "chart-caption")).to_have_text(
        "0 rows read in 0 runs in the last hour"
    )

    assert (await daemon.request("POST", "/api/batch-sync/start-sync?sync_name=items"))[0] == 200
    await expect(bars).to_have_count(1)
    await expect(page.field("items", "chart-caption")).to_contain_text(
        "100 rows read in 1 runs in the last hour; the last run read"
    )
    await create_items(conn, 25, start_id=101)
    assert (await daemon.request("POST", "/api/batch-sync/start-sync?sync_name=items"))[0] == 200
    await expect(bars).to_have_count(2)
    await expect(page.field("items", "chart-caption")).to_contain_text("125 rows read in 2 runs")
    # Oldest first, as tall as the logarithm of its rows read: 25 rows against 100.
    heights = [
        float(h) for h in await bars.evaluate_all("bars => bars.map(b => b.getAttribute('height'))")
    ]
    assert heights[1] / heights[0] == pytest.approx(math.log(26) / math.log(101), rel=0.01)

    failed = daemon.events("run_failed")[0]
    await expect(page.field("broken", "error")).to_contain_text('"src.absent" does not exist')
    await expect(page.field("broken", "error-when")).to_have_text(
        re.compile(rf"^Run {failed['run_id'][:8]}, (\d+ sec\. ago|just now)$")
    )
    await expect(page.field("broken", "chart").locator('rect[data-status="failed"]')).to_have_count(
        1
    )
    assert page.errors == []

    # Usable on a 375 px phone: nothing wider than the screen, so nothing scrolls sideways.
    await page.page.set_viewport_size({"width": 375, "height": 800})
    widths = await page.page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1] == 375, widths
    await expect(bars).to_have_count(2)
    assert (await page.field("items", "chart").bounding_box() or {}).get("width", 0) > 250
    # Dark when the system is: the page's own colours, not the browser's defaults.
    background = "getComputedStyle(document.body).backgroundColor"
    assert await page.page.evaluate(background) == "rgb(244, 245, 247)"
    await page.page.emulate_media(color_scheme="dark")
    assert await page.page.evaluate(background) == "rgb(20, 23, 28)"


@pytest.mark.timeout(120)
async def test_a_new_user_of_the_demo_sees_rows_arriving_and_the_chart_moving(
    db: str, tmp_path: Path, visit
) -> None:
    async with living_demo(db, tmp_path, rows=2_000, writes_per_second=10) as demo:
        page = await visit(demo.url)
        await expect(page.page.locator("#updates")).to_have_text("Live updates")
        bars = page.field(DEMO_SYNC, "chart").locator("rect")
        # The README promises all of this within 30 s of opening the page.
        await expect(page.field(DEMO_SYNC, "total-in-db")).to_have_text(
            re.compile(r"^2,\d{3}$"), timeout=30_000
        )
        first = await bars.count()
        await expect(bars).not_to_have_count(first, timeout=30_000)
        await expect(page.field(DEMO_SYNC, "lag")).to_have_text(re.compile(r"^\d+(\.\d)? s$"))
        await expect(page.field(DEMO_SYNC, "freshness")).to_have_text("fresh")
        synced = int((await page.field(DEMO_SYNC, "total-synced").inner_text()).replace(",", ""))
        await expect(page.field(DEMO_SYNC, "total-synced")).not_to_have_text(
            f"{synced:,}", timeout=30_000
        )
        assert page.errors == []
    assert demo.process.returncode == 0, demo.stderr


async def test_the_lag_and_its_badge_follow_the_source_s_new_rows(
    conn: asyncpg.Connection, start_daemon, visit
) -> None:
    await write_events(conn, range(1, 11))
    daemon = await start_daemon({"events": EVENTS_SYNC}, freshness_interval="1s")
    assert (await daemon.request("POST", "/api/batch-sync/start-sync?sync_name=events"))[0] == 200
    page = await visit(daemon.url)
    await expect(page.field("events", "lag")).to_have_text("0.0 s")
    await expect(page.field("events", "freshness")).to_have_text("fresh")

    # 100 s of source time the target has not reached: above the sync's max_lag of 30 s.
    await write_events(conn, range(11, 21))
    await expect(page.field("events", "lag")).to_have_text("1 min 40 s", timeout=15_000)
    await expect(page.field("events", "freshness")).to_have_text("stale")
    await expect(page.field("events", "freshness")).to_have_attribute("data-stale", "true")

    assert (await daemon.request("POST", "/api/batch-sync/start-sync?sync_name=events"))[0] == 200
    await expect(page.field("events", "lag")).to_have_text("0.0 s", timeout=15_000)
    await expect(page.field("events", "freshness")).to_have_text("fresh")
    assert page.errors == []


async def test_a_change_of_the_source_s_columns_is_shown_with_what_the_sync_did(
    conn: asyncpg.Connection, start_daemon, visit
) -> None:
    await create_items(conn, 10)
    daemon = await start_daemon({"items": ITEMS})
    assert (await daemon.request("POST", "/api/batch-sync/start-sync"))[0] == 200
    page = await visit(daemon.url)
    await expect(page.field("items", "changes-box")).to_be_hidden()

    await conn.execute("ALTER TABLE src.items ADD COLUMN region text DEFAULT 'EMEA'")
    assert (await daemon.request("POST", "/api/batch-sync/start-sync"))[0] == 200
    await expect(page.field("items", "changes").locator("li")).to_have_text(
        [re.compile(r"^region \(text\) added in the source; added, (just now|\d+ sec\. ago)$")]
    )
    assert page.errors == []


async def test_a_backfill_under_way_and_the_last_verify_are_on_the_card(
    conn: asyncpg.Connection, make_config, start_daemon, visit
) -> None:
    await create_items(conn, 200)
    items = ITEMS | {"batch_size": 20}
    config, _ = make_config({"items": items})
    await run_sync(config, "items")
    await conn.execute("ALTER TABLE src.items ADD COLUMN region text DEFAULT 'EMEA'")
    await run_sync(config, "items", backfill_batches=3)  # 60 of 200 rows filled in
    await verify(config, "items")
    daemon = await start_daemon({"items": items})
    page = await visit(daemon.url)

    await expect(page.field("items", "work").locator("li")).to_have_text(
        ["Filling in region for the rows already there: at key 60"]
    )
    # The 140 rows the backfill has not reached differ from the source in that column.
    await expect(page.field("items", "verify")).to_have_text(
        re.compile(
            r"^Last verify, (just now|\d+ sec\. ago): found differences"
            r" \(0 missing, 0 extra, 140 different, 0 pending\)\.$"
        )
    )
    await expect(page.field("items", "verify")).to_have_attribute("data-equal", "false")

    # A repair through the API, told by its event: the card shows the new verdict.
    code, _ = await daemon.request(
        "POST", "/api/batch-sync/verify", json={"sync": "items", "repair": True}
    )
    assert code == 202
    await expect(page.field("items", "verify")).to_have_text(
        re.compile(
            r"^Last verify, (just now|\d+ sec\. ago): found differences"
            r" \(0 missing, 0 extra, 140 different, 0 pending\); repaired: 140 copied, 0 deleted\.$"
        )
    )
    assert page.errors == []


async def test_a_parallel_load_under_way_shows_its_chunks(
    conn: asyncpg.Connection, make_config, start_daemon, visit
) -> None:
    await create_items(conn, 5000)
    await conn.execute("ANALYZE src.items")
    items = ITEMS | {"chunk_rows": 600, "parallel": 3}
    config, _ = make_config({"items": items})
    await plan_load(conn, config.syncs["items"])  # a load planned, no chunk taken yet
    daemon = await start_daemon({"items": items})

    _, status = await daemon.request("GET", "/api/batch-sync/status?sync_name=items")
    assert status["chunks"] == {
        "chunks": 9, "done": 0, "running": 0, "rows_read": 0, "instances": 0,
    }  # fmt: skip
    page = await visit(daemon.url)
    await expect(page.field("items", "work").locator("li")).to_have_text(
        ["Parallel load: 0 of 9 chunks done, 0 in progress, 0 rows read"]
    )
    assert page.errors == []

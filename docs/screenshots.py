"""Take the README's pictures of the status page: ``syncd demo`` on a scratch database,
photographed by Debian's Chromium after a minute of life, light and dark.

    .venv/bin/python docs/screenshots.py        # writes docs/status-page-{light,dark}.png

Needs the PostgreSQL of the test setup on 127.0.0.1:5432 and /usr/bin/chromium.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path

import asyncpg
import yaml
from playwright.async_api import async_playwright

HERE = Path(__file__).parent
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
LIVED_S = 60


async def main() -> None:
    database = f"syncd_screenshots_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    dsn = f"postgresql://postgres@127.0.0.1:5432/{database}"
    try:
        with tempfile.TemporaryDirectory() as scratch:
            config = yaml.safe_load((HERE.parent / "config.yaml").read_text())
            config["api"] = {"host": "127.0.0.1", "port": 0}
            path = Path(scratch) / "config.yaml"
            path.write_text(yaml.safe_dump(config))
            await photograph(path, os.environ | {"SYNCD_TARGET_DSN": dsn, "SYNCD_DEMO_DSN": dsn})
    finally:
        await admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
        await admin.close()


async def photograph(config: Path, env: dict[str, str]) -> None:
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncd", "-c", str(config), "demo", "--rows", "10000",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert demo.stdout is not None
    port = None
    async for raw in demo.stdout:
        line = json.loads(raw)
        if line["event"] == "http_listening":
            port = line["port"]
            break
    draining = asyncio.create_task(demo.stdout.read())
    try:
        await asyncio.sleep(LIVED_S)  # a minute of runs, so the chart has something to say
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"]
            )
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            await page.goto(f"http://127.0.0.1:{port}/")
            await page.wait_for_selector('[data-field="chart"] rect')
            await page.wait_for_timeout(1_000)
            for scheme in ("light", "dark"):
                await page.emulate_media(color_scheme=scheme)
                await page.screenshot(path=HERE / f"status-page-{scheme}.png", full_page=True)
            await browser.close()
    finally:
        demo.send_signal(signal.SIGINT)
        await demo.wait()
        draining.cancel()


if __name__ == "__main__":
    asyncio.run(main())

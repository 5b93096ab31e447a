"""Secrets set to known markers never show up: not in logs, responses, errors or exit text."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import yaml

from syncd.redact import redact
from tests.helpers import create_items

TARGET_MARKER = "TARGETpw-8f3a1c"
SOURCE_MARKER = "SOURCEpw-2b7d9e"
TOKEN_MARKER = "TOKEN-5c1e77"
MARKERS = (TARGET_MARKER, SOURCE_MARKER, TOKEN_MARKER)


def with_password(dsn: str, password: str) -> str:
    # Trust authentication ignores the password, so the marker rides along harmlessly.
    return dsn.replace("postgres@", f"postgres:{password}@", 1)


async def test_no_marker_leaks_from_a_daemon_under_use_and_failure(
    conn: asyncpg.Connection, db: str, tmp_path: Path
) -> None:
    await create_items(conn, 50)
    source = with_password(db, SOURCE_MARKER)
    unreachable = f"postgresql://postgres:{SOURCE_MARKER}@127.0.0.1:1/nowhere"
    items = {"table": "src.items", "key": ["id"], "cursor": "updated_at"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "target": {"dsn": with_password(db, TARGET_MARKER)},
        "sources": {"pg": {"kind": "postgres", "dsn": source},
                    "gone": {"kind": "postgres", "dsn": unreachable}},
        "syncs": {"items": items | {"source": "pg", "target_table": "public.items"},
                  "broken": items | {"source": "gone", "target_table": "public.broken",
                                     "retry": {"attempts": 2, "initial_delay": "10ms"}}},
        "default_sync": "items",
        "api": {"port": 0, "token": TOKEN_MARKER},
    }))  # fmt: skip
    log = tmp_path / "daemon.log"
    with log.open("w") as out:
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "syncd", "-c", str(path), "run",
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    answers: list[str] = []
    try:
        events: list[dict[str, object]] = []
        while not any(e["event"] == "daemon_ready" for e in events):
            await asyncio.sleep(0.05)
            events = [json.loads(line) for line in log.read_text().splitlines()]
        port = next(e["port"] for e in events if e["event"] == "http_listening")
        url = f"http://127.0.0.1:{port}/api/batch-sync"
        good = {"Authorization": f"Bearer {TOKEN_MARKER}"}
        async with aiohttp.ClientSession() as session:
            for method, path_, headers in [
                ("POST", "/start-sync?sync_name=items", good),
                ("POST", "/start-sync?sync_name=broken", good),
                ("POST", "/start", {"Authorization": f"Bearer {TOKEN_MARKER}x"}),
                ("GET", "/status?sync_name=broken", {}),
                ("GET", "/runs?sync_name=broken", {}),
                ("GET", "/syncs", {}),
            ]:
                async with session.request(method, url + path_, headers=headers) as answer:
                    answers.append(f"{answer.status} {dict(answer.headers)} {await answer.text()}")
        assert answers[0].startswith("200 ") and answers[1].startswith("502 ")
        assert answers[2].startswith("401 ")
    finally:
        daemon.send_signal(signal.SIGTERM)
        await daemon.wait()

    check = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncd", "-c", str(path), "check-config",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    check_out, check_err = await check.communicate()
    assert check.returncode == 1
    stored = await conn.fetch("SELECT coalesce(error, '') FROM syncd.runs")
    outputs = [
        log.read_text(),
        *answers,
        check_out.decode(),
        check_err.decode(),
        *[r[0] for r in stored],
    ]
    assert any("127.0.0.1:1" in text for text in outputs)  # the failure was reported...
    for text in outputs:
        for marker in MARKERS:
            assert marker not in text  # ...without its secrets


def test_redact_masks_url_and_keyword_passwords() -> None:
    text = "x postgresql://u:p%40ss@h:5432/d y password=hunter2 z password='a b'"
    assert redact(text) == "x postgresql://u:***@h:5432/d y password=*** z password=***"

"""The shipped alerting rules and dashboard, checked by Prometheus' own promtool and fed the
metrics of real daemons."""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from tests.conftest import ConfigFactory
from tests.daemon import Daemon
from tests.helpers import EVENTS_SYNC, events_daemon, write_events

CONTRIB = Path(__file__).parent.parent / "contrib"
RULES = CONTRIB / "prometheus" / "alerts.yml"
DASHBOARD = CONTRIB / "grafana" / "syncd.json"
INSTANCE = {"instance": "syncd:8000", "job": "syncd"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def test_the_rules_are_valid() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 4 rules found" in checked.stdout


def series(scrapes: list[dict[str, float]]) -> list[dict[str, str]]:
    """promtool input series from successive scrapes a minute apart, each a mapping of
    series text to value; a series absent from a scrape is missing there ('_')."""
    names = sorted({name for scrape in scrapes for name in scrape})
    return [
        {"series": name, "values": " ".join(_value(scrape.get(name)) for scrape in scrapes)}
        for name in names
    ]


def _value(value: float | None) -> str:
    return "_" if value is None else repr(value)


async def scrape(daemon: Daemon) -> dict[str, float]:
    """The daemon's syncd_* samples as series text, labelled as Prometheus labels a target."""
    scraped = {}
    for sample in await daemon.metrics():
        if not sample.name.startswith("syncd_") or math.isnan(sample.value):
            continue
        labels = sample.labels | INSTANCE
        text = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
        scraped[f"{sample.name}{{{text}}}"] = sample.value
    return scraped


def fires(
    tmp_path: Path, input_series: list[dict[str, str]], alert: str, at: str
) -> list[dict[str, Any]]:
    """The alerts named ``alert`` that promtool finds firing at ``at``: promtool test rules
    is told to expect none and reports the ones it got."""
    unit = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series,
                "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": []}],
            }
        ],
    }
    path = tmp_path / f"{alert}.test.yml"
    path.write_text(yaml.safe_dump(unit))
    tested = promtool("test", "rules", str(path))
    if tested.returncode == 0:
        return []
    got = re.search(r"got:\[(.*)\]\s*$", tested.stdout + tested.stderr, re.MULTILINE | re.DOTALL)
    assert got, tested.stdout + tested.stderr
    return [
        dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels))
        for labels in re.findall(r"Labels:\{([^}]*)\}", got[1])
    ]


async def test_a_stale_daemon_fires_the_stale_alert_and_a_fresh_one_does_not(
    conn: asyncpg.Connection, make_config: ConfigFactory, tmp_path: Path
) -> None:
    async with events_daemon(conn, make_config, tmp_path) as daemon:
        assert (await daemon.request("POST", "/api/batch-sync/start-sync"))[0] == 200
        await write_events(conn, range(11, 21))  # 100 s of rows the target lacks
        await daemon.wait_for(lambda: daemon.events("sync_stale")[-1:] != [], within=30)
        await asyncio.sleep(0.5)
        stale = await scrape(daemon)
        assert (await daemon.request("POST", "/api/batch-sync/start-sync"))[0] == 200
        await daemon.wait_for(lambda: len(daemon.events("sync_fresh")) == 1, within=30)
        await asyncio.sleep(0.5)
        fresh = await scrape(daemon)

    fired = fires(tmp_path, series([stale] * 10), "SyncdSyncStale", at="8m")
    assert fired == [{"alertname": "SyncdSyncStale", "severity": "warning",
                      "sync_name": "events", **INSTANCE}]  # fmt: skip
    assert fires(tmp_path, series([stale] * 3), "SyncdSyncStale", at="2m") == [], "for: 5m"
    assert fires(tmp_path, series([fresh] * 10), "SyncdSyncStale", at="8m") == []


async def test_a_sync_that_keeps_failing_fires_the_failing_alert(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    missing = EVENTS_SYNC | {"table": "src.no_such_table", "retry": {"attempts": 1}}
    _, path = make_config({"events": missing}, api={"host": "127.0.0.1", "port": 0})
    daemon = Daemon(path, tmp_path)
    await daemon.start()
    scrapes = []
    try:
        await daemon.wait_ready()
        for failures in range(1, 5):  # one scrape after each failed run: a minute apart
            await daemon.request("POST", "/api/batch-sync/start-sync")
            await daemon.wait_for(lambda n=failures: len(daemon.events("run_failed")) >= n)
            scrapes.append(await scrape(daemon))
    finally:
        assert await daemon.stop() == 0

    fired = fires(tmp_path, series(scrapes), "SyncdSyncFailing", at="3m")
    assert fired == [{"alertname": "SyncdSyncFailing", "severity": "critical",
                      "status": "failed", "sync_name": "events", **INSTANCE}]  # fmt: skip
    assert fires(tmp_path, series(scrapes[:2]), "SyncdSyncFailing", at="1m") == []


def test_a_daemon_down_or_without_success_for_hours_fires_its_alert(tmp_path: Path) -> None:
    up = 'up{instance="syncd:8000",job="syncd"}'
    last_success = 'syncd_last_success_timestamp_seconds{instance="syncd:8000",sync_name="a"}'
    down = [{"series": up, "values": "1 1 0 0 0 0"}]
    assert [a["alertname"] for a in fires(tmp_path, down, "SyncdDown", at="5m")] == ["SyncdDown"]
    assert fires(tmp_path, down, "SyncdDown", at="3m") == [], "for: 2m"
    # promtool's clock starts at 0: a success at 0 is 7 hours old at 7h.
    old = [{"series": last_success, "values": "0+0x500"}]
    assert len(fires(tmp_path, old, "SyncdNoRecentSuccess", at="7h")) == 1
    assert fires(tmp_path, old, "SyncdNoRecentSuccess", at="5h") == []


def test_the_dashboard_and_the_rules_name_only_metrics_syncd_exports() -> None:
    exported = set(re.findall(r"^# TYPE (syncd_\w+)", _every_metric(), re.MULTILINE))
    suffixes = ("_total", "_bucket", "_count", "_sum")
    known = exported | {name + suffix for name in exported for suffix in suffixes}
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = [
        rule["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for rule in g["rules"]
    ]
    named = set(re.findall(r"\bsyncd_\w+", " ".join(queries + rules)))
    assert named and named <= known, named - known


def _every_metric() -> str:
    """The exposition of a Metrics that has seen one of everything."""
    from syncd.freshness import freshness
    from syncd.metrics import Metrics
    from syncd.pools import PoolUse
    from syncd.runs import BatchReport, RunResult

    metrics = Metrics()
    metrics.track_pools(lambda: [PoolUse("target", 1, 1, 6, 0)])
    metrics.run_started("a")
    metrics.batch_committed(BatchReport("a", "r", 1, 1, None, 0.1, 1, 1.0, 1))
    metrics.run_finished(RunResult("r", "a", "succeeded"))
    seen = freshness(cursor_kind=None, source_newest=None, synced_to=None,
                     last_success_at=None, max_lag=None)  # fmt: skip
    metrics.freshness_seen("a", seen)
    metrics.runs_queued(0)
    return metrics.render().decode()

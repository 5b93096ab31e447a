"""The chaos scenarios of issue 6, each against a real ``syncd run`` under a live writer.

Every scenario returns a ``Result``: one row of the table. A scenario that this machine
cannot stage says why and is skipped, never passed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from tests.chaos import abuse
from tests.chaos.bugs import OPEN_BUGS
from tests.chaos.cluster import PrivateCluster, Unavailable
from tests.chaos.harness import (
    PREFIX,
    SYNC,
    Params,
    Result,
    Stage,
    boundary_check,
    connect,
    final_catch_up,
    line_of,
    log,
    now_utc,
    problems_in_logs,
    stamp,
    stop_daemon,
    target_ddl,
    verify,
    wait_event,
    wait_progress,
)
from tests.daemon import Daemon

TOKEN = "chaos-token-3f9a61c2"
PWNED = Path("/tmp/syncd-chaos-pwned")
"""What one of the SQL-laden sync names would create, were it ever run."""


# ---- 1. kill -9 ---------------------------------------------------------------------------


async def kill9(p: Params) -> Result:
    """kill -9 of the daemon at random moments, restarting it each time."""
    result = Result("kill9")
    rng = p.rng("kill9")
    async with Stage("kill9", p) as stage:
        config = stage.write_config()
        await stage.writer.start()
        daemon = await stage.start_daemon(config)
        await wait_progress(daemon)
        killed: set[str] = set()
        mid_run = 0
        for i in range(p.kills):
            await asyncio.sleep(rng.uniform(0.05, 1.2))
            live = daemon.live_run_ids()
            began = time.monotonic()
            code = await daemon.stop(signal.SIGKILL)
            down = time.monotonic() - began
            result.expect(code == -signal.SIGKILL, f"kill -9 #{i + 1}: exit {code}")
            result.problems += problems_in_logs(daemon)
            killed |= live
            mid_run += bool(live)
            result.problems += await boundary_check(stage, f"after kill -9 #{i + 1}")
            began = time.monotonic()
            daemon = await stage.start_daemon(config)
            await wait_progress(daemon)
            result.recovered(down + time.monotonic() - began)
            result.repetitions += 1
        await _wind_down(stage, daemon, result)
        await verify(
            stage, result, statuses={"succeeded", "interrupted"}, interrupted=killed,
            max_interrupted=p.kills,
        )  # fmt: skip
        result.notes.append(f"{mid_run}/{p.kills} kills mid-run")
    return result


# ---- 2. SIGTERM ---------------------------------------------------------------------------


async def sigterm(p: Params) -> Result:
    """SIGTERM at random moments: exit 0 within the grace period, resume where it stopped."""
    result = Result("sigterm")
    rng = p.rng("sigterm")
    grace = 10.0
    async with Stage("sigterm", p) as stage:
        config = stage.write_config(grace=f"{int(grace)}s")
        await stage.writer.start()
        daemon = await stage.start_daemon(config)
        await wait_progress(daemon)
        mid_run = 0
        slowest_stop = 0.0
        for i in range(p.kills):
            await asyncio.sleep(rng.uniform(0.05, 1.2))
            live = daemon.live_run_ids()
            took = await stop_daemon(daemon, result, grace_s=grace)
            slowest_stop = max(slowest_stop, took)
            result.problems += problems_in_logs(daemon)
            mid_run += bool(live)
            result.problems += await _recorded_as(stage, live, {"cancelled", "succeeded"}, i)
            result.problems += await boundary_check(stage, f"after SIGTERM #{i + 1}")
            saved = await _position(stage)
            restarted = time.monotonic()
            daemon = await stage.start_daemon(config)
            first = await wait_progress(daemon)
            result.recovered(took + time.monotonic() - restarted)
            result.problems += await _resumed(stage, first, saved, i)
            result.repetitions += 1
        await _wind_down(stage, daemon, result, grace_s=grace)
        # A graceful stop records every run it stops: none may be left to mark interrupted.
        await verify(stage, result, statuses={"succeeded", "cancelled"})
        result.notes.append(f"{mid_run}/{p.kills} stops mid-run, slowest exit {slowest_stop:.2f} s")
    return result


async def _recorded_as(stage: Stage, run_ids: set[str], allowed: set[str], i: int) -> list[str]:
    if not run_ids:
        return []
    conn = await connect(stage.target_dsn)
    try:
        rows = await conn.fetch(
            "SELECT run_id, status FROM syncd.runs WHERE run_id = ANY($1::text[])", list(run_ids)
        )
    finally:
        await conn.close()
    return [
        f"stop #{i + 1}: run {row['run_id']} left as {row['status']}"
        for row in rows
        if row["status"] not in allowed
    ]


async def _position(stage: Stage) -> list[str] | None:
    conn = await connect(stage.target_dsn)
    try:
        value = await conn.fetchval(
            "SELECT position::text FROM syncd.sync_state WHERE sync_name = $1", SYNC
        )
    finally:
        await conn.close()
    return None if value is None else list(json.loads(value))


async def _resumed(
    stage: Stage, first: dict[str, Any], saved: list[str] | None, i: int
) -> list[str]:
    """The first batch after a restart lies beyond the position saved at the stop: the sync
    went on from there rather than from the start. (That it left no gap is the boundary
    check's business; that it read nothing twice, the final offset's.)"""
    if first["event"] != "batch_committed" or saved is None:
        return []
    conn = await connect(stage.target_dsn)
    try:
        beyond = await conn.fetchval(
            "SELECT ($1::text::timestamptz, $2::text::bigint)"
            " > ($3::text::timestamptz, $4::text::bigint)",
            *first["position"],
            *saved,
        )
    finally:
        await conn.close()
    if not beyond:
        return [
            f"restart #{i + 1}: the first batch ends at {first['position']}, not beyond {saved}"
        ]
    return []


# ---- 3. target restart --------------------------------------------------------------------


class ReadyzWatch:
    """Polls /readyz from several clients at once, a few milliseconds apart (an API in use
    while its database restarts), and remembers every answer."""

    def __init__(self, url: str, clients: int = 4, pause_s: float = 0.005) -> None:
        self._url = url
        self._clients = clients
        self._pause = pause_s
        self.answers: list[tuple[float, int | None]] = []
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._poll()) for _ in range(self._clients)]

    async def _poll(self) -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    async with session.get(f"{self._url}/readyz") as answer:
                        status: int | None = answer.status
                        await answer.read()
                except (aiohttp.ClientError, TimeoutError):
                    status = None
                self.answers.append((time.monotonic(), status))
                await asyncio.sleep(self._pause)

    @property
    def went_down(self) -> bool:
        return any(status == 503 for _, status in self.answers)

    @property
    def came_back(self) -> bool:
        down = [t for t, status in self.answers if status == 503]
        return bool(down) and any(s == 200 and t > down[-1] for t, s in self.answers)

    async def wait_back(self, within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.came_back:
                return True
            await asyncio.sleep(0.05)
        return False

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def target_restart(p: Params) -> Result:
    """The target PostgreSQL restarted during a run: the run retries, /readyz goes 503 and back
    to 200, and nothing is lost. Alternates a clean restart (fast) and a crash (immediate)."""
    result = Result("target_restart")
    rng = p.rng("target_restart")
    cluster = await _private_cluster(result)
    if cluster is None:
        return result
    try:
        async with Stage("target_restart", p, target_server=cluster.server) as stage:
            config = stage.write_config()
            await stage.writer.start()
            daemon = await stage.start_daemon(config)
            await wait_progress(daemon)
            in_flight = 0
            for i in range(p.restarts):
                await asyncio.sleep(rng.uniform(0.1, 1.0))
                mode = "fast" if i % 2 == 0 else "immediate"
                mid_run = await _wait_mid_batch(stage, daemon, within=15)
                mark = len(daemon.lines)
                watch = ReadyzWatch(daemon.url)
                watch.start()
                began = time.monotonic()
                down = now_utc()
                await cluster.restart(mode)
                up = now_utc()
                back = await watch.wait_back(60)
                await watch.stop()
                result.expect(watch.went_down, f"restart #{i + 1} ({mode}): /readyz never said 503")
                result.expect(back, f"restart #{i + 1} ({mode}): /readyz did not come back to 200")
                odd = sorted({str(s) for _, s in watch.answers if s not in (200, 503)})
                result.expect(not odd, f"restart #{i + 1} ({mode}): /readyz also answered {odd}")
                await wait_progress(daemon, mark, after=up)
                result.recovered(time.monotonic() - began)
                # The run that was going must carry on after the restart, not fail.
                going = _runs_going_at(daemon, down)
                in_flight += bool(going)
                for run_id in going:
                    end = await wait_event(
                        daemon, 0, ("run_finished", "run_failed"),
                        where=lambda e, r=run_id: e.get("run_id") == r,  # type: ignore[misc]
                    )  # fmt: skip
                    result.expect(
                        end["event"] == "run_finished",
                        f"restart #{i + 1} ({mode}): run {run_id} failed: {end.get('error')}",
                    )
                    result.expect(
                        any(
                            e["event"] == "retrying" and e.get("run_id") == run_id
                            for e in daemon.lines[mark:]
                        ),
                        f"restart #{i + 1} ({mode}): run {run_id} went on without a retry",
                    )
                result.expect(mid_run, f"restart #{i + 1}: no run was mid-batch within 15 s")
                result.repetitions += 1
            failed_at_start = len(daemon.events("run_failed"))
            await _wind_down(stage, daemon, result)
            await verify(stage, result, statuses={"succeeded"})
            result.notes.append(
                f"{in_flight}/{p.restarts} restarts hit a run in flight (each retried and"
                f" finished); {failed_at_start} runs failed to start while the target was down"
            )
    finally:
        await cluster.destroy()
    return result


async def _wait_mid_batch(stage: Stage, daemon: Daemon, within: float) -> bool:
    """Wait until a run is going (by the daemon's log) and a syncd session is busy on the
    target (a statement running or a transaction open)."""
    conn = await connect(stage.target_dsn)
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if daemon.live_run_ids() and await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = $1"
                " AND application_name = 'syncd' AND state IN ('active', 'idle in transaction'))",
                stage.target_db,
            ):
                return True
            await asyncio.sleep(0.002)
        return False
    finally:
        await conn.close()


def _runs_going_at(daemon: Daemon, moment: datetime) -> list[str]:
    """Runs this daemon had started and not ended at ``moment``, by its log."""
    started = {e["run_id"] for e in daemon.events("run_started") if stamp(e) <= moment}
    ended = {
        e.get("run_id")
        for e in daemon.lines
        if e["event"] in ("run_finished", "run_failed") and stamp(e) < moment
    }
    return sorted(started - ended)


# ---- 4. source connections killed --------------------------------------------------------


SOURCE_STATES = (("idle",), ("idle in transaction",), ("active",))


async def source_kill(p: Params) -> Result:
    """pg_terminate_backend on the run's source connection, again and again."""
    result = Result("source_kill")
    rng = p.rng("source_kill")
    async with Stage("source_kill", p) as stage:
        config = stage.write_config(schedule="250ms")  # runs come often: many to cut
        await stage.writer.start()
        daemon = await stage.start_daemon(config)
        await wait_progress(daemon)
        admin = await connect(stage.source_dsn)
        try:
            for i in range(p.source_kills):
                await asyncio.sleep(rng.uniform(0.02, 0.2))
                # In turn: between two batches (the session idle, its transaction over),
                # between the statements of a batch, and mid-statement. (A session ended
                # while idle is what now and then trips asyncpg into an InternalClientError.)
                states = SOURCE_STATES[i % len(SOURCE_STATES)]
                pids = await _wait_for_backends(admin, stage.source_db, 30, states)
                result.expect(bool(pids), f"kill #{i + 1}: no source connection to cut")
                mark = len(daemon.lines)
                began = time.monotonic()
                at = now_utc()
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", pids
                )
                # Batches fetched before the cut may still commit: recovery is the first
                # progress after the retry (or the run's end, had it no more to read).
                seen = await wait_event(
                    daemon, mark, ("retrying", "run_finished", "run_failed"), after=at
                )
                if seen["event"] == "retrying":
                    await wait_progress(daemon, line_of(daemon, seen) + 1)
                result.recovered(time.monotonic() - began)
                result.repetitions += 1
        finally:
            await admin.close()
        retries = len(daemon.events("retrying"))
        failures = [e.get("error") for e in daemon.events("run_failed")]
        result.expect(not failures, f"runs failed instead of retrying: {failures[:3]}")
        await _wind_down(stage, daemon, result)
        await verify(stage, result, statuses={"succeeded"})
        result.notes.append(f"{retries} retries")
    return result


async def _wait_for_backends(
    admin: asyncpg.Connection, database: str, within: float, states: tuple[str, ...]
) -> list[int]:
    """The syncd sessions on ``database`` as soon as one is in one of ``states`` (or, failing
    that within the time, in any state)."""
    deadline = time.monotonic() + within
    anyhow: list[int] = []
    while time.monotonic() < deadline:
        rows = await admin.fetch(
            "SELECT pid, state FROM pg_stat_activity"
            " WHERE datname = $1 AND application_name = 'syncd'",
            database,
        )
        if any(row["state"] in states for row in rows):
            return [row["pid"] for row in rows]
        anyhow = [row["pid"] for row in rows] or anyhow
        await asyncio.sleep(0.002)
    return anyhow


# ---- 5. two daemons -----------------------------------------------------------------------


async def two_daemons(p: Params) -> Result:
    """Two daemons, one target, the same config: never two runs of the sync at once; when the
    holder is killed -9, the other takes the next scheduled run."""
    result = Result("two_daemons")
    rng = p.rng("two_daemons")
    async with Stage("two_daemons", p) as stage:
        config = stage.write_config()
        await stage.writer.start()
        pair = [await stage.start_daemon(config), await stage.start_daemon(config)]
        killed: set[str] = set()
        for i in range(p.takeovers):
            await asyncio.sleep(rng.uniform(0.1, 1.0))
            holder = await _wait_for_holder(stage, pair, within=30)
            if not result.expect(holder is not None, f"takeover #{i + 1}: nobody held the sync"):
                break
            assert holder is not None
            other = pair[1 - pair.index(holder)]
            killed |= holder.live_run_ids()
            mark = len(other.lines)
            began = time.monotonic()
            await holder.stop(signal.SIGKILL)
            started = await wait_event(other, mark, ("run_started",), within=30)
            await wait_event(
                other, mark, ("batch_committed", "run_finished"),
                where=lambda e, r=started["run_id"]: e.get("run_id") == r,  # type: ignore[misc]
            )  # fmt: skip
            result.recovered(time.monotonic() - began)
            result.problems += problems_in_logs(holder)
            pair = [other, await stage.start_daemon(config)]
            result.repetitions += 1
        skipped = sum(len(d.events("run_skipped_busy")) for d in stage.daemons)
        result.expect(skipped > 0, "the two daemons never contended for the sync")
        await final_catch_up(stage, pair[0], result)
        for daemon in pair:
            result.problems += problems_in_logs(daemon)
            await stop_daemon(daemon, result)
        await verify(
            stage, result, statuses={"succeeded", "interrupted"}, interrupted=killed,
            max_interrupted=p.takeovers,
        )  # fmt: skip
        ran = [len(d.events("run_started")) for d in stage.daemons]
        result.notes.append(f"{skipped} runs refused as busy; runs per daemon {ran}")
    return result


async def _wait_for_holder(stage: Stage, pair: list[Daemon], within: float) -> Daemon | None:
    """The daemon holding the sync's lock, as soon as one does."""
    conn = await connect(stage.target_dsn)
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            pid = await conn.fetchval(
                "SELECT holder_pid FROM syncd.sync_state WHERE sync_name = $1", SYNC
            )
            for daemon in pair:
                if daemon.pid == pid and daemon.live_run_ids():
                    return daemon
            await asyncio.sleep(0.005)
    finally:
        await conn.close()
    return None


# ---- 6. statement timeout and a full disk -------------------------------------------------

LOCK_HOLD_S = 3.0


async def lock_timeout(p: Params) -> Result:
    """A lock held on the target table for longer than target.statement_timeout: the run fails
    with the reason recorded, and the next one completes."""
    result = Result("lock_timeout")
    rng = p.rng("lock_timeout")
    reason = "canceling statement due to statement timeout"
    async with Stage("lock_timeout", p) as stage:
        config = stage.write_config(statement_timeout="1s")
        await stage.writer.start()
        daemon = await stage.start_daemon(config)
        await wait_progress(daemon)
        for i in range(p.faults):
            await asyncio.sleep(rng.uniform(0.1, 1.5))
            mark = len(daemon.lines)
            locker = await connect(stage.target_dsn)
            try:
                async with locker.transaction():
                    await locker.execute("LOCK TABLE public.items IN ACCESS EXCLUSIVE MODE")
                    held = time.monotonic()
                    failed = await wait_event(daemon, mark, ("run_failed",), within=30)
                    await asyncio.sleep(max(0.0, LOCK_HOLD_S - (time.monotonic() - held)))
            finally:
                await locker.close()
            released = time.monotonic()
            result.expect(
                reason in failed.get("error", ""),
                f"lock #{i + 1}: the run failed with {failed.get('error')!r}",
            )
            await wait_progress(daemon, line_of(daemon, failed) + 1, after=now_utc())
            result.recovered(time.monotonic() - released)
            # ... and a run completes after it.
            await wait_event(daemon, line_of(daemon, failed) + 1, ("run_finished",), within=300)
            result.problems += await _error_recorded(
                stage, failed["run_id"], reason, f"lock #{i + 1}"
            )
            result.repetitions += 1
        await _wind_down(stage, daemon, result)
        await verify(
            stage, result, statuses={"succeeded", "failed"}, failed_because=lambda e: reason in e
        )
    return result


async def _private_cluster(result: Result) -> PrivateCluster | None:
    """A PostgreSQL cluster of the scenario's own; None, the scenario skipped with the reason,
    where this machine cannot make one."""
    try:
        return await PrivateCluster.create()
    except Unavailable as exc:
        result.skipped = str(exc)
        return None


async def _recovers(
    daemon: Daemon, result: Result, failed: dict[str, Any], mend: Awaitable[object]
) -> None:
    """Once ``mend`` undoes the fault that failed a run, the sync makes progress again (how
    soon is the recovery time) and a run completes."""
    mending = time.monotonic()
    at = now_utc()
    await mend
    await wait_progress(daemon, line_of(daemon, failed) + 1, after=at)
    result.recovered(time.monotonic() - mending)
    await wait_event(daemon, line_of(daemon, failed) + 1, ("run_finished",), within=300)
    result.repetitions += 1


async def _wind_down(
    stage: Stage, daemon: Daemon, result: Result, *, token: str | None = None, grace_s: float = 10
) -> None:
    """How every scenario ends: the daemon catches up with the stopped writer, its log holds
    no problem, and it stops cleanly."""
    await final_catch_up(stage, daemon, result, token=token)
    result.problems += problems_in_logs(daemon)
    await stop_daemon(daemon, result, grace_s=grace_s)


async def _error_recorded(stage: Stage, run_id: str, reason: str, when: str) -> list[str]:
    conn = await connect(stage.target_dsn)
    try:
        run = await conn.fetchrow("SELECT status, error FROM syncd.runs WHERE run_id = $1", run_id)
    finally:
        await conn.close()
    if run is None:
        return [f"{when}: the failed run {run_id} is not recorded"]
    if run["status"] != "failed" or reason not in (run["error"] or ""):
        return [f"{when}: run {run_id} recorded as {run['status']}: {run['error']!r}"]
    return []


async def disk_full(p: Params) -> Result:
    """The target table's tablespace fills up (a tmpfs made just big enough): the run fails
    with a clear recorded error, nothing half-written remains, and once there is room the
    next run completes."""
    result = Result("disk_full")
    rng = p.rng("disk_full")
    reason = "No space left on device"
    cluster = await _private_cluster(result)
    if cluster is None:
        return result
    try:
        roomy = max(64 << 20, p.rows * 600)
        try:
            space = await cluster.mount_tmpfs("tablespace", roomy)
        except RuntimeError as exc:
            result.skipped = f"cannot mount a tmpfs here: {exc}"
            return result
        admin = await connect(f"{cluster.server}/postgres")
        try:
            await admin.execute(f"CREATE TABLESPACE chaos_small LOCATION '{space}'")
        finally:
            await admin.close()
        in_small_space = (
            target_ddl(tail=" USING INDEX TABLESPACE chaos_small")
            + " WITH (fillfactor = 100) TABLESPACE chaos_small"
        )
        async with Stage(
            "disk_full", p, target_server=cluster.server, target_table=in_small_space
        ) as stage:
            config = stage.write_config()
            await stage.writer.start()
            daemon = await stage.start_daemon(config)
            await wait_event(daemon, 0, ("run_finished",), within=300)
            for i in range(p.faults):
                await asyncio.sleep(rng.uniform(0.1, 1.0))
                mark = len(daemon.lines)
                used = cluster.used_bytes(space)
                await cluster.resize_tmpfs(space, used + 64 * 1024)
                failed = await wait_event(daemon, mark, ("run_failed",), within=120)
                result.expect(
                    reason in failed.get("error", ""),
                    f"full disk #{i + 1}: the run failed with {failed.get('error')!r}",
                )
                result.problems += await _error_recorded(
                    stage, failed["run_id"], reason, f"full disk #{i + 1}"
                )
                result.problems += await boundary_check(stage, f"full disk #{i + 1}")
                await _recovers(daemon, result, failed, cluster.resize_tmpfs(space, roomy))
            await _wind_down(stage, daemon, result)
            await verify(
                stage, result, statuses={"succeeded", "failed"},
                failed_because=lambda e: reason in e,
            )  # fmt: skip
            result.notes.append(
                f"tablespace on a tmpfs cut to its use + 64 KiB, then {roomy >> 20} MiB"
            )
        # The databases are gone now; the tablespace can go too.
        admin = await connect(f"{cluster.server}/postgres")
        try:
            await admin.execute("DROP TABLESPACE IF EXISTS chaos_small")
        finally:
            await admin.close()
    finally:
        await cluster.destroy()
    return result


# ---- 7. poison data -----------------------------------------------------------------------

POISON = "12345678.90"
"""Fits the source's numeric(12,2), overflows the hand-made target's numeric(9,2)."""


async def poison(p: Params) -> Result:
    """A source row the target refuses: the run fails naming the sync, the row's key and the
    column; earlier batches stay committed and nothing half-written remains."""
    result = Result("poison")
    rng = p.rng("poison")
    async with Stage("poison", p, target_table=target_ddl(amount_type="numeric(9, 2)")) as stage:
        config = stage.write_config()
        await stage.writer.start()
        daemon = await stage.start_daemon(config)
        await wait_progress(daemon)
        poisoned: list[int] = []
        for i in range(p.faults):
            await asyncio.sleep(rng.uniform(0.1, 1.0))
            key = rng.randint(1, p.rows)
            poisoned.append(key)
            mark = len(daemon.lines)
            await stage.writer.change(
                "UPDATE src.items SET amount = $2::numeric, version = version + 1,"
                " updated_at = clock_timestamp() WHERE id = $1",
                key,
                POISON,
            )
            failed = await wait_event(daemon, mark, ("run_failed",), within=60)
            error = failed.get("error", "")
            for part in (
                f"sync {SYNC!r}",
                f"id={key}",
                "column 'amount'",
                "numeric field overflow",
            ):
                result.expect(
                    part in error, f"poison #{i + 1}: {part!r} not in the error {error!r}"
                )
            result.problems += await _error_recorded(
                stage, failed["run_id"], f"id={key}", f"poison #{i + 1}"
            )
            result.problems += await boundary_check(stage, f"poison #{i + 1}")
            status, view = await daemon.request(
                "GET", f"{PREFIX}/status", params={"sync_name": SYNC}
            )
            result.expect(
                status == 200 and f"id={key}" in (view.get("last_error") or ""),
                f"poison #{i + 1}: /status does not show the error: {view.get('last_error')!r}",
            )
            mend = stage.writer.change(
                "UPDATE src.items SET amount = 1.25, version = version + 1,"
                " updated_at = clock_timestamp() WHERE id = $1",
                key,
            )
            await _recovers(daemon, result, failed, mend)
        await _wind_down(stage, daemon, result)
        await verify(
            stage, result, statuses={"succeeded", "failed"},
            failed_because=lambda e: any(f"id={k}" in e and "'amount'" in e for k in poisoned),
        )  # fmt: skip
        result.notes.append("numeric overflow; NUL in text is the Oracle path's (nul policy)")
    return result


# ---- 8. HTTP abuse ------------------------------------------------------------------------


async def http_abuse(p: Params) -> Result:
    """Malformed requests, a burst of concurrent starts and slow clients, while /healthz is
    timed from another process: no 500, exactly one run from the burst, every error JSON
    with a message, and /healthz answering throughout (under 100 ms in the long version)."""
    result = Result("http_abuse")
    rng = p.rng("http_abuse")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with Stage("http_abuse", p) as stage:
        config = stage.write_config(schedule="1h", token=TOKEN)
        await stage.writer.start()
        daemon = await stage.start_daemon(config)
        await wait_event(daemon, 0, ("run_finished",), within=300)
        assert daemon.port is not None
        probe = abuse.HealthProbe(f"{daemon.url}/healthz")
        await probe.start()
        slow = abuse.SlowClients("127.0.0.1", daemon.port, p.slow_clients, TOKEN)
        await slow.start()
        try:
            # A full pass from the start, in small batches: the burst's run outlasts the burst.
            status, body = await daemon.request(
                "POST", f"{PREFIX}/reset", params={"sync_name": SYNC}, headers=auth
            )
            result.expect(status == 200, f"reset answered {status}: {body}")
            burst = await _burst(daemon.url, p.http_burst, auth)
            started = [b for s, b in burst if s == 202]
            refused = [b for s, b in burst if s == 409]
            result.expect(
                len(started) == 1 and len(refused) == p.http_burst - 1,
                f"the burst of {p.http_burst} starts got {sorted(s for s, _ in burst)}",
            )
            run_id = started[0]["run_id"] if started else None
            wrong_409 = sorted(
                {
                    f"run_id {b.get('run_id')}: {b.get('message')}"
                    for b in refused
                    if b.get("run_id") != run_id or not b.get("message")
                }
            )
            result.expect(
                not wrong_409,
                f"{sum(1 for b in refused if b.get('run_id') != run_id)} of the burst's 409s do"
                f" not name the running run {run_id}: {wrong_409[:3]}",
            )
            requests = abuse.malformed(TOKEN, SYNC, p.http_requests, rng)
            answers, wrong = await abuse.barrage(daemon.url, requests)
            result.problems += wrong[:20]
            if len(wrong) > 20:
                result.problems.append(f"... and {len(wrong) - 20} more wrong answers")
            if run_id is not None:
                await wait_event(
                    daemon, 0, ("run_finished", "run_failed"), within=300,
                    where=lambda e: e.get("run_id") == run_id,
                )  # fmt: skip
        finally:
            await slow.stop()
            figures = await probe.stop()
        result.repetitions = len(answers) + len(burst)
        result.expect(
            figures["failure_count"] == 0,
            f"/healthz failed {figures['failure_count']} times: {figures['failures']}",
        )
        if p.healthz_bound_ms is not None:
            result.expect(
                figures["max_ms"] is not None and figures["max_ms"] < p.healthz_bound_ms,
                f"/healthz took up to {figures['max_ms']} ms"
                f" ({figures['over_100ms']} probes over 100 ms)",
            )
        conn = await connect(stage.target_dsn)
        try:
            http_runs = await conn.fetchval(
                "SELECT count(*) FROM syncd.runs WHERE trigger = 'http'"
            )
        finally:
            await conn.close()
        result.expect(http_runs == 1, f"{http_runs} runs started over HTTP, expected 1")
        pwned = await asyncio.to_thread(PWNED.exists)
        result.expect(not pwned, f"{PWNED} exists: SQL from a sync name ran")
        statuses: dict[int | None, int] = {}
        for answer in answers:
            statuses[answer.status] = statuses.get(answer.status, 0) + 1
        await _wind_down(stage, daemon, result, token=TOKEN)
        await verify(stage, result, statuses={"succeeded"}, after_reset=True)
        result.notes.append(
            f"healthz max {figures['max_ms']} ms over {figures['probes']} probes;"
            f" {slow.opened} slow clients ({slow.closed_by_server} cut off);"
            f" answers {dict(sorted(statuses.items(), key=lambda kv: kv[0] or 0))}"
        )
    return result


async def _burst(url: str, count: int, auth: dict[str, str]) -> list[tuple[int, dict[str, Any]]]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        gate = asyncio.Event()

        async def one() -> tuple[int, dict[str, Any]]:
            await gate.wait()
            async with session.post(
                f"{url}{PREFIX}/start", json={"sync_name": SYNC, "batch_size": 100}, headers=auth
            ) as answer:
                return answer.status, await answer.json()

        tasks = [asyncio.create_task(one()) for _ in range(count)]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*tasks)


# ---- 9. soak ------------------------------------------------------------------------------


async def soak(p: Params) -> Result:
    """Schedules every 10 s with the writer going, for ``soak_s``: memory, file descriptors
    and database connections stay flat."""
    result = Result("soak")
    if p.soak_s <= 0:
        result.skipped = "long version only"
        return result
    async with Stage("soak", p) as stage:
        config = stage.write_config(schedule="10s")
        await stage.writer.start()
        daemon = await stage.start_daemon(config)
        await wait_event(daemon, 0, ("run_finished",), within=600)
        admin = await connect(stage.source_dsn)
        samples: list[tuple[float, int, int, int]] = []
        began = time.monotonic()
        try:
            while time.monotonic() - began < p.soak_s:
                await asyncio.sleep(5)
                if daemon.live_run_ids():
                    continue  # between runs only: the same moment of the cycle each time
                connections = await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'syncd'"
                    " AND datname = ANY($1::text[])",
                    [stage.source_db, stage.target_db],
                )
                samples.append(
                    (time.monotonic() - began, daemon.rss_bytes(), daemon.open_fds(), connections)
                )
        finally:
            await admin.close()
        runs = len(daemon.events("run_finished"))
        result.repetitions = runs
        window = min(300.0, p.soak_s / 6)
        first = [s for s in samples if s[0] <= window] or samples[:1]
        last = [s for s in samples if s[0] >= p.soak_s - window] or samples[-1:]
        rss = (max(s[1] for s in first), max(s[1] for s in last))
        fds = (max(s[2] for s in first), max(s[2] for s in last))
        conns = (max(s[3] for s in first), max(s[3] for s in last))
        result.expect(
            rss[1] <= rss[0] * 1.10 + (8 << 20),
            f"RSS grew from {rss[0] >> 20} MiB to {rss[1] >> 20} MiB",
        )
        result.expect(fds[1] <= fds[0] + 2, f"open files grew from {fds[0]} to {fds[1]}")
        result.expect(conns[1] <= conns[0], f"connections grew from {conns[0]} to {conns[1]}")
        await _wind_down(stage, daemon, result)
        await verify(stage, result, statuses={"succeeded"})
        result.notes.append(
            f"{p.soak_s / 60:g} min, {runs} runs:"
            f" RSS {rss[0] / 2**20:.1f} -> {rss[1] / 2**20:.1f} MiB,"
            f" fds {fds[0]} -> {fds[1]}, connections {conns[0]} -> {conns[1]}"
        )
    return result


# ---- the registry -------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    number: str
    name: str
    run: Callable[[Params], Awaitable[Result]]
    long_only: bool = False


SCENARIOS = [
    Scenario("1", "kill9", kill9),
    Scenario("2", "sigterm", sigterm),
    Scenario("3", "target_restart", target_restart),
    Scenario("4", "source_kill", source_kill),
    Scenario("5", "two_daemons", two_daemons),
    Scenario("6a", "lock_timeout", lock_timeout),
    Scenario("6b", "disk_full", disk_full),
    Scenario("7", "poison", poison),
    Scenario("8", "http_abuse", http_abuse),
    Scenario("9", "soak", soak, long_only=True),
]
BY_NAME = {s.name: s for s in SCENARIOS}


async def run(name: str, params: Params) -> Result:
    """One scenario, timed; a harness error fails it with the traceback's last lines."""
    scenario = BY_NAME[name]
    began = time.monotonic()
    log(name, f"starting ({params.label}: {params.rows:,} rows)")
    try:
        result = await scenario.run(params)
    except Exception as exc:
        result = Result(name)
        tail = "".join(traceback.format_exception(exc)[-3:]).strip().replace("\n", " | ")
        result.problems.append(f"harness error: {tail}")
    if result.skipped is None:
        for bug in OPEN_BUGS.get(name, []):
            result.problems.append(f"open product bug (tests/chaos/bugs.py): {bug}")
    result.scenario = f"{scenario.number}. {name}"
    result.duration_s = time.monotonic() - began
    log(name, f"{result.verdict} in {result.duration_s:.1f} s")
    return result

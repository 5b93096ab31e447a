"""No wait without a bound: a run ends, and says why, whatever its connections do."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from syncd.engine import Engine
from syncd.errors import SourceError, SyncdError
from syncd.metrics import Metrics
from syncd.notify import Notifier
from syncd.runner import Runner
from syncd.sources import Window
from syncd.sources.postgres import PostgresSource
from syncd.state import StateStore
from tests.conftest import ConfigFactory
from tests.helpers import Recorder, create_items, eventually, fingerprint, run_sync, wait_for_value

ITEMS_BY_TIME = {
    "table": "src.items",
    "key": ["id"],
    "cursor": "updated_at",
    "target_table": "public.items",
}

# The source query waits at row 21 while the test holds advisory lock 1, and writes to
# the target wait while it holds lock 2: both sides can be parked at a known place.
GATES = """
CREATE FUNCTION src.gate(id bigint) RETURNS boolean LANGUAGE plpgsql VOLATILE COST 10000 AS $$
BEGIN
    IF id > 20 THEN PERFORM pg_advisory_xact_lock_shared(1); END IF;
    RETURN true;
END $$;
CREATE FUNCTION public.gate_writes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_advisory_xact_lock_shared(2); RETURN NULL; END $$;
CREATE TABLE public.items (id bigint PRIMARY KEY, updated_at timestamptz, name text,
                           amount numeric(12, 2));
CREATE TRIGGER gate BEFORE INSERT ON public.items
    FOR EACH STATEMENT EXECUTE FUNCTION public.gate_writes();
"""

BOTH_PARKED = (
    "SELECT true WHERE (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
    " AND objid IN (1, 2) AND NOT granted) = 2"
)


def terminate_target_then_source(dsn: str) -> None:
    """Terminate both of syncd's sessions while the event loop is held still, so that the
    run learns of both losses at once, the writer's first."""
    sessions = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'syncd' AND datname = current_database()"
    )
    subprocess.run(
        ["psql", dsn, "-qAt", "-c", f"{sessions} AND query LIKE 'COPY%'",
         "-c", f"{sessions} AND query NOT LIKE 'COPY%'"],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    time.sleep(0.3)


async def test_both_connections_dying_while_a_batch_waits_in_the_handoff_ends_no_run_stuck(
    db: str, conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    await create_items(conn, 60)
    await conn.execute(GATES)
    config, _ = make_config(
        {
            "gated": {
                "query": "SELECT * FROM src.items WHERE src.gate(id)",
                "key": ["id"],
                "target_table": "public.items",
                "batch_size": 10,
                "retry": {"initial_delay": "50ms", "max_delay": "100ms"},
            }
        }
    )
    holder = await asyncpg.connect(db)
    await holder.execute("SELECT pg_advisory_lock(1), pg_advisory_lock(2)")
    run = asyncio.create_task(run_sync(config, "gated"))
    # The writer waits inside batch 1, batch 2 waits in the handoff, and the fetcher
    # waits inside the source transaction of batch 3.
    await wait_for_value(conn, BOTH_PARKED)

    terminate_target_then_source(db)
    await holder.execute("SELECT pg_advisory_unlock_all()")
    result = await asyncio.wait_for(run, timeout=30)
    await holder.close()

    assert result.status == "succeeded"
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")


async def test_a_source_read_waits_no_longer_than_the_statement_timeout_and_the_next_run_resumes(
    db: str, conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    await create_items(conn, 2_000)
    config, _ = make_config(
        {"items": ITEMS_BY_TIME | {"batch_size": 50, "retry": {"attempts": 2}}},
        sources={"pg": {"kind": "postgres", "dsn": db, "statement_timeout": "500ms"}},
    )
    recorder = Recorder()
    blocker = await asyncpg.connect(db)
    transaction = blocker.transaction()

    async def lock_the_source_mid_run() -> None:
        await recorder.first_batch.wait()
        await transaction.start()
        await blocker.execute("LOCK TABLE src.items IN ACCESS EXCLUSIVE MODE")

    locking = asyncio.create_task(lock_the_source_mid_run())
    with pytest.raises(SyncdError, match="statement timeout"):
        await asyncio.wait_for(run_sync(config, "items", observer=recorder), timeout=30)
    await locking
    first_read = sum(report.rows for report in recorder.reports)
    await transaction.rollback()
    await blocker.close()

    second = await run_sync(config, "items")
    assert first_read + second.rows_read == 2_000, "the next run started over"
    assert await fingerprint(conn, "public.items") == await fingerprint(conn, "src.items")


def make_runner(config_factory: ConfigFactory, **top: object) -> tuple[Runner, Metrics]:
    config, _ = config_factory({"items": ITEMS_BY_TIME}, **top)
    metrics = Metrics()
    return Runner(config, metrics=metrics, notifier=Notifier(environ={})), metrics


async def test_a_target_that_never_answers_is_retried_and_the_run_ends_failed(
    make_config: ConfigFactory,
) -> None:
    config, _ = make_config(
        {
            "items": ITEMS_BY_TIME
            | {"retry": {"attempts": 3, "initial_delay": "10ms", "max_delay": "20ms"}}
        },
        target={"dsn": "postgresql://postgres@127.0.0.1:1/postgres"},
    )
    runner = Runner(config, metrics=Metrics(), notifier=Notifier(environ={}))

    with capture_logs() as logs:
        result = await runner.wait(runner.trigger("items", trigger="test"))

    assert result.status == "failed"
    assert result.error is not None and result.error.startswith("gave up after 3 attempts")
    assert runner.last_result("items") is result and runner.live("items") is None
    assert [e["attempt"] for e in logs if e["event"] == "retrying"] == [1, 2]
    (failed,) = [e for e in logs if e["event"] == "run_failed"]
    assert failed["error"] == result.error


async def test_a_failure_to_record_the_outcome_leaves_the_runs_own_error_in_place(
    conn: asyncpg.Connection, make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_items(conn, 3_000)
    config, _ = make_config({"items": ITEMS_BY_TIME | {"batch_size": 50, "retry": {"attempts": 1}}})
    connect_target = Engine.connect_target
    connections = 0

    async def refused_after_the_first(self: Engine) -> asyncpg.Connection:
        nonlocal connections
        connections += 1
        if connections > 1:
            raise SyncdError("the target refused the login")
        return await connect_target(self)

    monkeypatch.setattr(Engine, "connect_target", refused_after_the_first)
    recorder = Recorder()
    killer = await asyncpg.connect(config.target.dsn)

    async def terminate_the_writer() -> None:
        await recorder.first_batch.wait()
        await killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'syncd' AND datname = current_database()"
        )

    killing = asyncio.create_task(terminate_the_writer())
    with capture_logs() as logs, pytest.raises(SyncdError) as failure:
        await run_sync(config, "items", observer=recorder)
    await killing
    await killer.close()

    assert str(failure.value).startswith("gave up after 1 attempts")
    assert (
        "refused the login"
        in next(e for e in logs if e["event"] == "run_record_not_saved")["error"]
    )


async def test_a_final_record_that_meets_a_dead_session_is_written_on_a_fresh_one(
    conn: asyncpg.Connection, make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_items(conn, 100)
    config, _ = make_config({"items": ITEMS_BY_TIME})
    finish_run = StateStore.finish_run
    calls = 0

    async def on_a_session_that_died_unnoticed(self: StateStore, *args: object) -> None:
        # What asyncpg says of a backend terminated while it was not looking.
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncpg.InternalClientError("cannot switch to state 15; another operation")
        await finish_run(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(StateStore, "finish_run", on_a_session_that_died_unnoticed)
    with capture_logs() as logs:
        result = await run_sync(config, "items")

    assert result.status == "succeeded" and calls == 2
    assert await conn.fetchval("SELECT status FROM syncd.runs") == "succeeded"
    assert await conn.fetchval("SELECT holder_run_id FROM syncd.sync_state") is None
    assert [e for e in logs if e["event"] == "run_record_not_saved"] == []


async def test_the_watchdog_stops_while_a_run_makes_no_progress_and_resumes_after(
    tmp_path: Path, conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    await create_items(conn, 100)
    await conn.execute("CREATE TABLE public.items AS SELECT * FROM src.items WHERE false")
    await conn.execute("ALTER TABLE public.items ADD PRIMARY KEY (id)")
    config, _ = make_config({"items": ITEMS_BY_TIME}, stall_timeout="1s")
    address = str(tmp_path / "notify")
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(address)
    systemd.setblocking(False)
    notifier = Notifier(environ={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000"})
    runner = Runner(config, metrics=Metrics(), notifier=notifier)

    def pings() -> int:
        count = 0
        while True:
            try:
                count += systemd.recv(4096).decode().count("WATCHDOG=1")
            except BlockingIOError:
                return count

    blocker = await asyncpg.connect(config.target.dsn)
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute("LOCK TABLE public.items IN ACCESS EXCLUSIVE MODE")
    try:
        async with notifier.watchdog(runner.healthy):
            with capture_logs() as logs:
                live = runner.trigger("items", trigger="test")
                await asyncio.sleep(0.5)
                assert pings() > 0, "no pings while the run was young"
                await eventually(lambda: any(e["event"] == "run_stalled" for e in logs))
                pings()
                await asyncio.sleep(1.0)
                assert pings() == 0, "the watchdog was petted while the run was stuck"
                await transaction.rollback()
                assert (await runner.wait(live)).status == "succeeded"
                await asyncio.sleep(0.5)
                assert pings() > 0, "the watchdog did not resume"
    finally:
        await blocker.close()
        systemd.close()
        notifier.close()


async def test_a_fetcher_that_fails_after_handing_over_a_stream_fails_the_run_with_its_error(
    conn: asyncpg.Connection, make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fetcher hands a batch's stream over before copying into it. Failing in between,
    the stream must end, or the writer would wait on it for ever, and the run must say
    what failed, not that a stream broke."""
    await create_items(conn, 1)
    await conn.execute("ANALYZE src.items")  # the estimate: one row, soon passed
    await create_items(conn, 499, start_id=2)
    config, _ = make_config({"items": ITEMS_BY_TIME | {"batch_size": 10}})
    estimate = PostgresSource.estimate_rows
    calls = 0

    async def fails_the_second_time(self: PostgresSource, window: Window) -> int | None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise SourceError("the estimate could not be read")
        return await estimate(self, window)

    monkeypatch.setattr(PostgresSource, "estimate_rows", fails_the_second_time)

    with pytest.raises(SourceError, match="the estimate could not be read"):
        await asyncio.wait_for(run_sync(config, "items"), timeout=30)

"""Many syncs in one daemon: the run queue, one budgeted pool per database, the backoff
every run waits behind, spread schedules, and long runs that leave a slot to short ones."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from structlog.testing import capture_logs

from syncd import pg
from syncd.config import Config
from syncd.errors import Busy, ConfigError
from syncd.metrics import Metrics
from syncd.notify import Notifier
from syncd.pools import Backoff, Connections, PoolExhausted
from syncd.runner import LiveRun, Runner
from syncd.scheduler import Schedules, default_offset
from tests.conftest import ConfigFactory
from tests.daemon import Daemon
from tests.helpers import eventually, fingerprint, wait_for_value
from tests.test_api import login_role  # noqa: F401 (a fixture, which pytest finds by its name)

# Source queries wait in here while the test holds advisory lock 7: runs can be parked.
GATE = """
CREATE FUNCTION src.gate() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM pg_advisory_xact_lock_shared(7); RETURN true; END $$;
"""
HELD_AT_THE_GATE = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 7 AND NOT granted"
)


async def make_tables(conn: asyncpg.Connection, names: list[str], rows: int) -> None:
    for name in names:
        await conn.execute(
            f"CREATE TABLE src.{name} (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL,"
            f" note text); CREATE INDEX ON src.{name} (updated_at, id);"
            f" INSERT INTO src.{name} SELECT n, timestamptz '2025-01-01' + n * interval '1 s',"
            f" 'row ' || n FROM generate_series(1, {rows}) AS n"
        )


def plain(name: str, **spec: Any) -> dict[str, Any]:
    """A sync of src.NAME into public.NAME."""
    return {
        "table": f"src.{name}",
        "key": ["id"],
        "cursor": "updated_at",
        "target_table": f"public.{name}",
    } | spec


def gated(name: str, **spec: Any) -> dict[str, Any]:
    """The same, whose reads wait at the gate."""
    return plain(name, table=None, query=f"SELECT * FROM src.{name} WHERE src.gate()", **spec)


@contextlib.asynccontextmanager
async def daemon_parts(config: Config) -> AsyncIterator[tuple[Runner, Connections, Metrics]]:
    """The runner and the pools as ``syncd run`` makes them, without the process around."""
    metrics = Metrics()
    async with Connections(config, Backoff()) as connections:
        metrics.track_pools(connections.use)
        runner = Runner(config, metrics=metrics, notifier=Notifier({}), connections=connections)
        try:
            yield runner, connections, metrics
        finally:
            await runner.drain(5)


@contextlib.asynccontextmanager
async def gate_closed(conn: asyncpg.Connection) -> AsyncIterator[None]:
    await conn.execute("SELECT pg_advisory_lock(7)")
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock(7)")


async def parked(conn: asyncpg.Connection, count: int) -> None:
    """Until ``count`` runs wait at the gate."""
    await wait_for_value(conn, f"SELECT true WHERE ({HELD_AT_THE_GATE}) >= {count}")


def drain_events(events: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    taken = []
    while not events.empty():
        taken.append(events.get_nowait())
    return taken


# -- the queue ------------------------------------------------------------------------------


async def test_at_most_max_concurrent_runs_execute_and_the_rest_start_in_turn(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    names = [f"t{i}" for i in range(5)]
    await make_tables(conn, names, 20)
    await conn.execute(GATE)
    config, _ = make_config({n: gated(n) for n in names}, max_concurrent_runs=2)

    async with (
        daemon_parts(config) as (runner, _, _),
        runner.subscribers.subscription(100) as events,
    ):
        async with gate_closed(conn):
            with capture_logs() as logs:
                lives = [runner.trigger(n, trigger="test") for n in names]
            assert [live.state for live in lives] == ["running"] * 2 + ["queued"] * 3
            assert [runner.queue_position(n) for n in names] == [None, None, 1, 2, 3]
            assert runner.counts() == {"running": 2, "queued": 3, "max_concurrent_runs": 2}
            queued = [e for e in logs if e["event"] == "run_queued"]
            assert [(e["sync_name"], e["position"]) for e in queued] == [
                ("t2", 1), ("t3", 2), ("t4", 3)
            ]  # fmt: skip
            await parked(conn, 2)
            await asyncio.sleep(0.2)  # nothing else starts while both slots are taken
            assert await conn.fetchval(HELD_AT_THE_GATE) == 2
        results = [await runner.wait(live) for live in lives]

        assert [r.status for r in results] == ["succeeded"] * 5
        running, most, started = 0, 0, []
        published = drain_events(events)
        queued_events = [e for e in published if e["type"] == "run_queued"]
        assert [(e["sync_name"], e["position"]) for e in queued_events] == [
            ("t2", 1), ("t3", 2), ("t4", 3)
        ]  # fmt: skip
        assert queued_events[-1]["runs"] == {"running": 2, "queued": 3, "max_concurrent_runs": 2}
        for event in published:
            if event["type"] == "run_started":
                running += 1
                started.append(event["sync_name"])
            elif event["type"] == "run_finished":
                running -= 1
            most = max(most, running)
        assert most == 2 and started == names  # first come, first started
    for name in names:
        assert await fingerprint(conn, f"public.{name}") == await fingerprint(conn, f"src.{name}")


async def test_a_sync_has_one_pending_run_and_later_triggers_fold_into_it(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    await make_tables(conn, ["a", "b"], 30)
    await conn.execute(GATE)
    config, _ = make_config({"a": gated("a"), "b": plain("b")}, max_concurrent_runs=1)

    async with daemon_parts(config) as (runner, _, _):
        async with gate_closed(conn):
            running = runner.trigger("a", trigger="test")
            pending = runner.trigger("b", trigger="schedule")
            assert runner.trigger("b", trigger="http", batch_size=7) is pending
            assert runner.trigger("b", trigger="schedule") is pending
            assert (pending.state, pending.batch_size, pending.trigger) == ("queued", 7, "schedule")
            with pytest.raises(Busy) as busy:
                runner.trigger("a", trigger="http")
            assert busy.value.run_id == running.run_id
        assert (await runner.wait(pending)).status == "succeeded"

    runs = await conn.fetch("SELECT run_id, batches FROM syncd.runs WHERE sync_name = 'b'")
    assert [(r["run_id"], r["batches"]) for r in runs] == [(pending.run_id, 5)]  # 30 rows by 7


async def test_a_run_starts_only_while_its_source_has_a_connection_to_spare(
    conn: asyncpg.Connection, make_config: ConfigFactory, db: str
) -> None:
    await make_tables(conn, ["x1", "x2", "y1"], 10)
    await conn.execute(GATE)
    config, _ = make_config(
        {"x1": gated("x1", source="x"), "x2": plain("x2", source="x"), "y1": gated("y1")},
        sources={"pg": {"kind": "postgres", "dsn": db},
                 "x": {"kind": "postgres", "dsn": db, "max_connections": 1}},
        max_concurrent_runs=3,
    )  # fmt: skip

    async with daemon_parts(config) as (runner, _, _):
        async with gate_closed(conn):
            x1, x2, y1 = (runner.trigger(n, trigger="test") for n in ("x1", "x2", "y1"))
            # A slot is free, but x's one connection is x1's: y1 goes first.
            assert (x1.state, x2.state, y1.state) == ("running", "queued", "running")
            await parked(conn, 2)
        assert [(await runner.wait(r)).status for r in (x1, x2, y1)] == ["succeeded"] * 3


@contextlib.asynccontextmanager
async def b_behind_a(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> AsyncIterator[tuple[Runner, Metrics, LiveRun]]:
    """One slot, a's, whose reads wait at the closed gate, and b queued behind it."""
    await make_tables(conn, ["a", "b"], 10)
    await conn.execute(GATE)
    config, _ = make_config({"a": gated("a"), "b": plain("b")}, max_concurrent_runs=1)
    async with daemon_parts(config) as (runner, _, metrics), gate_closed(conn):
        runner.trigger("a", trigger="test")
        pending = runner.trigger("b", trigger="test")
        await parked(conn, 1)
        yield runner, metrics, pending


async def test_on_shutdown_queued_runs_never_start_and_their_waiters_are_told(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    async with b_behind_a(conn, make_config) as (runner, _, pending):
        draining = asyncio.create_task(runner.drain(0.2))
        result = await runner.wait(pending)
        await draining

    assert (result.status, result.error) == ("cancelled", "syncd stopped before the run started")
    assert await conn.fetchval("SELECT count(*) FROM syncd.runs WHERE sync_name = 'b'") == 0


async def test_the_queue_and_the_pools_are_in_the_metrics(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    async with b_behind_a(conn, make_config) as (_, metrics, _):
        text = metrics.render().decode()
    assert "syncd_runs_queued 1.0" in text
    assert 'syncd_pool_connections{pool="target",state="in_use"} 1.0' in text
    assert 'syncd_pool_connections{pool="source:pg",state="in_use"} 1.0' in text
    assert 'syncd_pool_max_connections{pool="target"} 6.0' in text
    assert 'syncd_pool_max_connections{pool="source:pg"} 4.0' in text


# -- the pools ------------------------------------------------------------------------------


async def test_a_writer_connection_returns_to_the_pool_without_the_sync_s_lock(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    await make_tables(conn, ["a"], 10)
    config, _ = make_config({"a": plain("a")})

    async with daemon_parts(config) as (runner, connections, _):
        first = await runner.wait(runner.trigger("a", trigger="test"))
        assert first.status == "succeeded"
        assert [(use.pool, use.in_use, use.idle) for use in connections.use()] == [
            ("target", 0, 1), ("source:pg", 0, 1)
        ]  # fmt: skip
        pooled = set(await _syncd_pids(conn))
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = ANY($1)",
            list(pooled),
        )
        assert len(pooled) == 2 and held == 0
        # The next run takes the same two sessions, and can take the lock again.
        await conn.execute("UPDATE src.a SET updated_at = updated_at + interval '1 day'")
        second = await runner.wait(runner.trigger("a", trigger="test"))
        assert (second.status, second.rows_read) == ("succeeded", 10)
        assert set(await _syncd_pids(conn)) == pooled


async def _syncd_pids(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'syncd'"
        " AND datname = current_database() AND backend_type = 'client backend'"
    )
    return [row["pid"] for row in rows]


async def test_a_connection_whose_state_is_in_doubt_is_closed_never_lent_again(
    make_config: ConfigFactory,
) -> None:
    config, _ = make_config({"a": plain("a")})
    async with Connections(config, Backoff()) as connections:
        pool = connections.target
        with pytest.raises(LookupError):
            async with pool.connection() as failed:
                raise LookupError("the request failed half-way")
        # Said to be clean, but a transaction is still open: closed all the same.
        in_transaction = await pool.lend()
        await in_transaction.execute("BEGIN")
        pool.give_back(in_transaction, clean=True)
        assert failed.is_closed() and in_transaction.is_closed()
        assert pool.use() == pool.use().__class__("target", 0, 0, 6, 0)
        async with pool.connection() as fresh:
            assert fresh not in (failed, in_transaction)


async def test_connections_cut_off_mid_run_are_closed_and_their_places_freed(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    await make_tables(conn, ["a"], 10)
    await conn.execute(GATE)
    config, _ = make_config({"a": gated("a")})

    async with daemon_parts(config) as (runner, connections, _):
        async with gate_closed(conn):
            live = runner.trigger("a", trigger="test")
            await parked(conn, 1)
            cut = await _syncd_pids(conn)
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", cut
            )
        assert (await runner.wait(live)).status == "succeeded"  # retried on new connections
        uses = connections.use()
        assert [use.in_use for use in uses] == [0, 0]
        alive = await _syncd_pids(conn)
        assert sum(use.idle for use in uses) == len(alive) and not set(alive) & set(cut)


@pytest.mark.parametrize("side", ["target", "source"])
async def test_a_run_that_finds_every_connection_in_use_fails_saying_so(
    conn: asyncpg.Connection, make_config: ConfigFactory, db: str, side: str
) -> None:
    await make_tables(conn, ["a"], 10)
    config, _ = make_config(
        {"a": plain("a")},
        target={"pool_timeout": "300ms"},
        sources={"pg": {"kind": "postgres", "dsn": db, "pool_timeout": "300ms"}},
    )
    size = 6 if side == "target" else 4
    async with (
        daemon_parts(config) as (runner, connections, _),
        contextlib.AsyncExitStack() as held,
    ):
        for _ in range(size):
            await held.enter_async_context(
                connections.target.connection()
                if side == "target"
                else connections.open_source(config.syncs["a"], config.sources["pg"])
            )
        result = await runner.wait(runner.trigger("a", trigger="test"))

    name = "the target" if side == "target" else "source 'pg'"
    assert (result.status, result.error) == (
        "failed",
        f"no connection to {name} within 300ms: all {size} are in use",
    )


# -- the backoff ----------------------------------------------------------------------------


@pytest.fixture
async def limited_role(db: str, login_role: str) -> str:  # noqa: F811 (that fixture)
    """A DSN to the test's database as a role that may hold two sessions at most."""
    owner = await asyncpg.connect(db)
    try:
        await owner.execute(f'ALTER ROLE "{login_role}" CONNECTION LIMIT 2')
        await owner.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO "{login_role}"')
    finally:
        await owner.close()
    parts = urlsplit(db)
    return urlunsplit(parts._replace(netloc=f"{login_role}@{parts.hostname}:{parts.port}"))


async def test_a_server_with_no_slot_free_holds_every_run_back_and_none_fails(
    conn: asyncpg.Connection,
    make_config: ConfigFactory,
    limited_role: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = [f"t{i}" for i in range(8)]
    await make_tables(conn, names, 20)
    config, _ = make_config({n: plain(n) for n in names}, target={"dsn": limited_role})
    loop = asyncio.get_running_loop()
    attempts: list[float] = []
    windows: list[tuple[float, float]] = []
    connect_to, refused = pg.connect_to, Backoff.refused

    async def noted_attempt(database: Any) -> asyncpg.Connection:
        if database.dsn == limited_role:
            attempts.append(loop.time())
        return await connect_to(database)

    def noted_refusal(backoff: Backoff, database: str, error: BaseException) -> None:
        refused(backoff, database, error)
        window = (loop.time(), loop.time() + backoff.remaining)
        if not windows or windows[-1][1] < window[1]:
            windows.append(window)

    monkeypatch.setattr(pg, "connect_to", noted_attempt)
    monkeypatch.setattr(Backoff, "refused", noted_refusal)
    async with daemon_parts(config) as (runner, _, _):
        with capture_logs() as logs:
            lives = [runner.trigger(n, trigger="test") for n in names]
            results = [await runner.wait(live) for live in lives]

    assert [r.status for r in results] == ["succeeded"] * 8
    refusals = [e for e in logs if e["event"] == "connections_refused"]
    assert refusals and all("too many connections for role" in e["error"] for e in refusals)
    # While a backoff lasts, no run anywhere tries to connect: they wait, and mostly take
    # the connections that the others gave back meanwhile.
    assert windows
    assert [t for t in attempts for start, end in windows if start < t < end] == []
    for name in names:
        assert await fingerprint(conn, f"public.{name}") == await fingerprint(conn, f"src.{name}")


ORACLE = {"kind": "oracle", "dsn": "crm-db:1521/FREEPDB1", "user": "SYNCD", "password": "pw"}


async def test_an_oracle_source_shares_one_pool_and_backs_off_when_out_of_sessions(
    db: str, make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.oracle.harness import database_error, fake_oracle

    config, _ = make_config(
        {"opps": {"source": "crm", "table": "CRM.OPPS", "target_table": "public.opps"}},
        sources={"crm": ORACLE | {"max_connections": 3, "pool_timeout": "300ms"}},
    )
    sync, source = config.syncs["opps"], config.sources["crm"]
    async with fake_oracle(db, monkeypatch) as oracle, Connections(config, Backoff()) as pools:
        async with pools.open_source(sync, source), pools.open_source(sync, source):
            pass
        (arguments,) = oracle.pool_arguments  # one pool for the source, whoever reads it
        assert (arguments["max"], arguments["wait_timeout"]) == (3, 10_000)
        assert oracle.pools[0].release.await_count == 2

        oracle.acquire_error = database_error("ORA-00018: maximum number of sessions exceeded", 18)
        with capture_logs() as logs, pytest.raises(PoolExhausted) as failure:
            async with pools.open_source(sync, source):
                pass
        assert str(failure.value) == (
            "no connection to source 'crm' within 300ms: source 'crm' had no connection"
            " slot free (Oracle refused the request: ORA-00018: maximum number of sessions"
            " exceeded)"
        )
        assert [e["event"] for e in logs] == ["connections_refused"]
        assert pools.backoff.remaining > 0  # and every other run waits behind it


# -- spread schedules -----------------------------------------------------------------------


class Triggers:
    """Stands in for the runner: notes each sync that a schedule asks to run."""

    def __init__(self) -> None:
        self.fired: list[str] = []

    def trigger(self, sync_name: str, *, trigger: str) -> None:
        self.fired.append(sync_name)


async def test_syncs_with_the_same_schedule_fire_spread_over_it_at_offsets_of_their_own(
    make_config: ConfigFactory,
) -> None:
    names = [f"s{i:02}" for i in range(40)]
    syncs = {n: plain(n, schedule={"every": "10s"}) for n in names}
    syncs["pinned"] = plain("pinned", schedule={"every": "10s", "offset": "0s"})
    syncs["cron"] = plain("cron", schedule={"cron": "* * * * *", "offset": "15s"})
    config, _ = make_config(syncs)
    triggers = Triggers()
    schedules = Schedules(triggers)  # type: ignore[arg-type]
    schedules.apply(config)
    schedules.start()
    try:
        await eventually(lambda: set(triggers.fired) == set(syncs))  # each catches up at start
        next_runs = {name: schedules.next_run_at(name) for name in syncs}
    finally:
        schedules.shutdown()

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for name in names:
        assert (next_runs[name] - epoch) % timedelta(seconds=10) == default_offset(
            name, timedelta(seconds=10)
        )
    assert (next_runs["pinned"] - epoch) % timedelta(seconds=10) == timedelta()
    assert (next_runs["cron"].second, next_runs["cron"].microsecond) == (15, 0)
    # Each second of the interval has its share of the 40, give or take what a hash gives.
    in_one_second = [0] * 10
    for name in names:
        in_one_second[
            (next_runs[name] - epoch) % timedelta(seconds=10) // timedelta(seconds=1)
        ] += 1
    assert min(in_one_second) >= 1 and max(in_one_second) <= 8, in_one_second


@pytest.mark.parametrize(
    ("top", "message"),
    [
        ({"max_concurrent_runs": 6}, "max_concurrent_runs (6) must be below"
         " target.max_connections (6): each running sync holds one target connection"),
        ({"target": {"max_connections": 1}}, "target.max_connections: Input should be greater"),
        ({"long_run": "0s"}, "long_run: expected a duration above zero"),
    ],
)  # fmt: skip
def test_budgets_that_cannot_work_are_refused(
    make_config: ConfigFactory, top: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_config({"a": plain("a")}, **top)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"every": "10s", "offset": "10s"}, "'offset' must be shorter than 'every'"),
        ({"every": "10s", "offset": "-1s"}, "expected a duration such as"),
        ({"cron": "* * * * *", "offest": "1s"}, "unknown key 'offest'; did you mean 'offset'"),
    ],
)
def test_an_offset_outside_its_interval_is_refused(
    make_config: ConfigFactory, schedule: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config({"a": plain("a", schedule=schedule)})


# -- fairness -------------------------------------------------------------------------------


async def slow_target(conn: asyncpg.Connection, name: str, per_batch_s: float) -> None:
    """public.NAME, made before syncd makes it, taking ``per_batch_s`` for every batch."""
    await conn.execute(
        f"CREATE TABLE public.{name} (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL,"
        f" note text);"
        f" CREATE FUNCTION public.slow_{name}() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN PERFORM pg_sleep({per_batch_s}); RETURN NULL; END $$;"
        f" CREATE TRIGGER slow BEFORE INSERT ON public.{name}"
        f" FOR EACH STATEMENT EXECUTE FUNCTION public.slow_{name}()"
    )


async def test_long_runs_leave_a_slot_to_short_ones_and_continue_after(
    conn: asyncpg.Connection, make_config: ConfigFactory
) -> None:
    bigs, smalls = ["big1", "big2"], [f"small{i}" for i in range(4)]
    await make_tables(conn, bigs, 600)
    await make_tables(conn, smalls, 10)
    for big in bigs:
        await slow_target(conn, big, 0.1)  # 30 batches of 20 rows: 3 s a load
    syncs = {n: plain(n, batch_size=20) for n in bigs} | {n: plain(n) for n in smalls}
    config, _ = make_config(syncs, max_concurrent_runs=2, long_run="1s")

    async with (
        daemon_parts(config) as (runner, _, _),
        runner.subscribers.subscription(100) as events,
    ):
        with capture_logs() as logs:
            loads = [runner.trigger(n, trigger="test") for n in bigs]
            await eventually(lambda: all(live.rows_read > 0 for live in loads))
            shorts = [runner.trigger(n, trigger="test") for n in smalls]
            results = [await runner.wait(live) for live in loads + shorts]

    assert [r.status for r in results] == ["succeeded"] * 6
    assert [r.rows_read for r in results] == [600, 600] + [10] * 4  # over all their slices
    finished = [e["sync_name"] for e in drain_events(events) if e["type"] == "run_finished"]
    # Both slots were long runs' when the short ones came: one load gave its slot up, and
    # every short run ended before the loads did.
    assert set(finished[-2:]) == set(bigs), finished
    yielded = [e["sync_name"] for e in logs if e["event"] == "run_yielded"]
    assert yielded
    runs = await conn.fetch(
        "SELECT sync_name, trigger, status FROM syncd.runs WHERE sync_name = $1"
        " ORDER BY started_at",
        yielded[0],
    )
    assert [(r["trigger"], r["status"]) for r in runs][:2] == [
        ("test", "cancelled"), ("resume", "succeeded" if len(runs) == 2 else "cancelled")
    ]  # fmt: skip
    for name in bigs + smalls:
        assert await fingerprint(conn, f"public.{name}") == await fingerprint(conn, f"src.{name}")


# -- two hundred syncs on a server of forty connections ------------------------------------


@pytest.fixture
async def forty_connections() -> AsyncIterator[str]:
    """A PostgreSQL cluster of the test's own with max_connections = 40; its server URL."""
    from tests.chaos.cluster import PrivateCluster, Unavailable

    try:
        cluster = await PrivateCluster.create(max_connections=40)
    except Unavailable as exc:
        pytest.skip(str(exc))
    try:
        yield cluster.server
    finally:
        await cluster.destroy()


@pytest.mark.timeout(180)
async def test_two_hundred_syncs_converge_within_their_budgets_on_a_server_of_forty(
    forty_connections: str, tmp_path: Path
) -> None:
    from tests.many import make_fleet, watching

    fleet = await make_fleet(forty_connections, 200, 2000)
    daemon = Daemon(fleet.config(tmp_path / "config.yaml", every="5s"), tmp_path)
    await daemon.start()
    try:
        await daemon.wait_for(lambda: daemon.port is not None)
        # Watching from before the first run: all 200 start at once, each with a load to do.
        async with watching(forty_connections, daemon) as watch:
            await daemon.wait_ready()
            synced = lambda: {e["sync_name"] for e in daemon.events("run_finished")}  # noqa: E731
            await daemon.wait_for(lambda: len(synced()) == 200, within=120)
            for round_ in range(2):  # a writer touching 1% of each table, twice
                await fleet.touch(round_=round_)
                await asyncio.sleep(5)
            differ = await fleet.converge(within=60)
        assert await daemon.stop() == 0
    finally:
        if daemon.alive:
            await daemon.stop(signal.SIGKILL)

    assert differ == []
    # The server's own count, every 50 ms: never more than the budgets (target 6, source 4).
    assert watch.samples > 100
    assert 0 < watch.peak_connections["target"] <= 6, watch.peak_connections
    assert 0 < watch.peak_connections["source"] <= 4, watch.peak_connections
    assert daemon.events("run_failed") == [] and daemon.events("connections_refused") == []
    target = await asyncpg.connect(fleet.target_dsn)
    try:
        outcomes = await target.fetch("SELECT status, count(*) FROM syncd.runs GROUP BY status")
    finally:
        await target.close()
    assert {r["status"] for r in outcomes} == {"succeeded"}, outcomes
    # /healthz answered every probe, each within its 2 s bound, all the while.
    assert watch.healthz_failures == [] and len(watch.healthz_ms) > 50
    print(
        f"\n200 syncs: {sum(r['count'] for r in outcomes)} runs, peak connections"
        f" {watch.peak_connections}, healthz p99 {watch.healthz_p99_ms():.1f} ms,"
        f" RSS {max(watch.rss_bytes) / 2**20:.0f} MiB, daemon CPU {watch.cpu_seconds:.1f} s"
    )

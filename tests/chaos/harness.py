"""What every chaos scenario shares: databases of its own, a live writer, a real ``syncd run``
and the checks that end each scenario.

Each scenario gets a source and a target database made for it (and dropped after), a source
table of ``Params.rows`` rows, and a writer that keeps inserting rows and updating others
while faults are injected into the daemon and what is around it. At the end the writer
stops, one last run is asked for through the API, and the target is compared with the
source and with syncd's own bookkeeping.

Every change to a source row raises its ``version`` by one, from 0 at its insert (a
trigger refuses, failing the writer, any change that does not). On the target, statement
triggers log each row syncd takes in, inserted or changed by its upsert, as (id, version),
numbered in order and written in the transaction that wrote the row. That log has no key
at all: a row applied twice shows there as a repeated (id, version), as the target table's
own primary key never could.

What the checks hold exactly, and what only as a bound:

- content, exact: row count and md5 over every row in key order are the source's;
- per key, exact: each row the target took in is at a newer version than the one before
  it for that key (one at the same version is a duplicate, and the table's "rows
  duplicated"; one at an older version went back in time), and the last is the source's
  current version (by the md5);
- per key, a bound: so a key is applied at most as often as the source had versions of it,
  but not exactly as often, because a row changed twice before the sync reached it is read
  once. The notes give the slack as "N of M source versions applied";
- bookkeeping against the rows, exact: the runs' ``rows_written`` add up to the lines of
  the target's log (both commit in the batch's transaction); without a reset,
  ``rows_read`` equals ``rows_written``, since every version differs from the one before:
  a version read once is written, one read twice is counted unchanged;
- the position, exact: at the end the saved position is the source's last row; after each
  fault (``boundary_check``) no target row lies beyond it, every source row at or before it
  is in the target as it is in the source, and the counters match the rows;
- the run history: statuses, interrupted runs, overlaps, failure reasons, counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg
import yaml

from tests.daemon import Daemon
from tests.helpers import fingerprint

SERVER = os.environ.get("SYNCD_TEST_SERVER", "postgresql://postgres@127.0.0.1:5432")
SYNC = "items"
SOURCE_TABLE = "src.items"
TARGET_TABLE = "public.items"
PREFIX = "/api/batch-sync"
PROGRESS = ("batch_committed", "run_finished")


@dataclass(frozen=True)
class Params:
    """How hard a run of the harness pushes: the short version for CI, the long one by hand."""

    label: str
    rows: int
    batch_size: int
    kills: int
    """kill -9 and SIGTERM repetitions (scenarios 1 and 2)."""
    restarts: int
    source_kills: int
    takeovers: int
    faults: int
    """Repetitions of the statement timeout, full disk and poison scenarios."""
    soak_s: float
    writer_rows: int = 20
    """Rows inserted, and other rows updated, by each writer transaction."""
    writer_pause_s: float = 0.05
    seed: int = 20261129
    http_requests: int = 1000
    http_burst: int = 200
    slow_clients: int = 40
    healthz_bound_ms: float | None = None
    """The slowest /healthz answer allowed under abuse: a figure to meet by hand, on a quiet
    machine; CI, where other work shares the cores, only reports it and requires an answer."""

    def rng(self, scenario: str) -> random.Random:
        return random.Random(f"{self.seed}-{self.label}-{scenario}")

    def with_(self, **changes: Any) -> Params:
        return replace(self, **changes)


SHORT = Params(
    "short", rows=200_000, batch_size=200, kills=5, restarts=2, source_kills=30, takeovers=3,
    faults=2, soak_s=0,
)  # fmt: skip
LONG = Params(
    "long", rows=1_000_000, batch_size=500, kills=20, restarts=5, source_kills=60, takeovers=10,
    faults=4, soak_s=30 * 60, healthz_bound_ms=100,
)  # fmt: skip


@dataclass
class Result:
    """One row of the table, and the reasons behind a FAIL."""

    scenario: str
    repetitions: int = 0
    rows_checked: int = 0
    rows_lost: int = 0
    rows_duplicated: int = 0
    """Rows the target took in a second time: an (id, version) repeated in its log."""
    max_recovery_s: float | None = None
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    checked: bool = False
    """Set once the final comparison of target and source has run."""

    @property
    def verdict(self) -> str:
        if self.skipped is not None:
            return "SKIP"
        if self.problems or self.rows_lost or self.rows_duplicated or not self.checked:
            return "FAIL"
        return "pass"

    def expect(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return ok

    def recovered(self, seconds: float) -> None:
        self.max_recovery_s = max(self.max_recovery_s or 0.0, seconds)


def log(scenario: str, message: str) -> None:
    """Progress on stderr; the table alone goes to stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {scenario}: {message}", file=sys.stderr)


# ---- databases ----------------------------------------------------------------------------


async def connect(dsn: str) -> asyncpg.Connection:
    # UTC on every side, so that rows print the same text in the source and the target.
    return await asyncpg.connect(
        dsn, server_settings={"timezone": "UTC", "application_name": "syncd-chaos"}
    )


async def create_database(server: str, name: str) -> str:
    admin = await connect(f"{server}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return f"{server}/{name}"


async def drop_database(server: str, name: str) -> None:
    admin = await connect(f"{server}/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


SOURCE_DDL = """
CREATE SCHEMA src;
CREATE TABLE src.items (
    id          bigint PRIMARY KEY,
    updated_at  timestamptz NOT NULL,
    version     integer NOT NULL,
    name        text NOT NULL,
    amount      numeric(12, 2),
    note        text
);
"""
# Three rows share each initial cursor value, so keyset ties are crossed all the time.
SOURCE_FILL = """
INSERT INTO src.items
SELECT n, timestamptz '2025-01-01 00:00:00+00' + (n / 3) * interval '1 second', 0,
       'item ' || n, n * 1.25,
       CASE WHEN n % 7 = 0 THEN NULL ELSE repeat(chr(97 + (n % 26)::int), (n % 40)::int) END
  FROM generate_series(1::bigint, $1::bigint) AS n
"""
SOURCE_INDEX = "CREATE INDEX ON src.items (updated_at, id); ANALYZE src.items"
# Made after the fill, whose rows are all at version 0, so as not to slow it.
SOURCE_VERSIONING = """
CREATE FUNCTION src.one_version_per_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.version <> (CASE TG_OP WHEN 'INSERT' THEN 0 ELSE OLD.version + 1 END) THEN
        RAISE EXCEPTION 'row % of src.items: versions start at 0 and go up by one a change',
            NEW.id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER one_version_per_change BEFORE INSERT OR UPDATE ON src.items
    FOR EACH ROW EXECUTE FUNCTION src.one_version_per_change();
"""


def target_ddl(amount_type: str = "numeric(12, 2)", tail: str = "") -> str:
    """The target table, made by the harness so that its log of applied rows is there before
    syncd writes one; same columns in the same order as the source, so rows print alike."""
    return (
        "CREATE TABLE public.items (id bigint NOT NULL, updated_at timestamptz NOT NULL,"
        f" version integer NOT NULL, name text NOT NULL, amount {amount_type}, note text,"
        f" PRIMARY KEY (id){tail})"
    )


# One line per row the target takes in, in the transaction that writes it, numbered in
# order; deliberately without any key or unique index, so that a row applied twice shows.
APPLIED_LOG = """
CREATE SCHEMA chaos;
CREATE TABLE chaos.applied (
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    id          bigint NOT NULL,
    version     integer NOT NULL
);
CREATE FUNCTION chaos.log_applied() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos.applied (id, version) SELECT id, version FROM written;
    RETURN NULL;
END $$;
CREATE TRIGGER log_inserts AFTER INSERT ON public.items REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION chaos.log_applied();
CREATE TRIGGER log_updates AFTER UPDATE ON public.items REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION chaos.log_applied();
"""


# ---- the writer ---------------------------------------------------------------------------


class Writer:
    """One connection that keeps inserting new rows and updating random old ones.

    Transactions run one after another on purpose: each one's ``clock_timestamp()`` is later
    than every committed row's, so no row commits behind a position the sync has passed.
    (Concurrent writers committing late is what ``lookback`` is for; the normal suite tests
    that.) Every change the harness makes to the source goes through ``change`` for the
    same reason.
    """

    def __init__(self, dsn: str, next_id: int, params: Params, rng: random.Random) -> None:
        self._dsn = dsn
        self._next_id = next_id
        self._rows = params.writer_rows
        self._pause = params.writer_pause_s
        self._rng = rng
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    async def start(self) -> None:
        self._conn = await connect(self._dsn)
        self._task = asyncio.create_task(self._loop(), name="chaos-writer")

    async def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                await self._one()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._pause)
        except BaseException as exc:
            self.error = exc
            raise

    async def _one(self) -> None:
        assert self._conn is not None
        first, last = self._next_id, self._next_id + self._rows - 1
        ids = self._rng.sample(range(1, first), min(self._rows, first - 1))
        async with self._lock, self._conn.transaction():
            await self._conn.execute(
                "INSERT INTO src.items SELECT n, clock_timestamp(), 0, 'new ' || n, n * 1.25,"
                " 'written while syncing' FROM generate_series($1::bigint, $2::bigint) AS n",
                first,
                last,
            )
            await self._conn.execute(
                "UPDATE src.items SET version = version + 1, updated_at = clock_timestamp(),"
                " name = 'updated ' || id || ' v' || (version + 1) WHERE id = ANY($1::bigint[])",
                ids,
            )
        self._next_id = last + 1

    async def change(self, query: str, *args: Any) -> str:
        """Run one statement of the harness's own on the writer's connection, in turn; like
        the writer's own, it must bump the version of each row it changes."""
        assert self._conn is not None
        async with self._lock:
            status: str = await self._conn.execute(query, *args)
        return status

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


# ---- a scenario's stage -------------------------------------------------------------------


class Stage:
    """A source and a target database of the scenario's own, the writer, and the daemons.

    ``target_table`` is the statement that makes the target table (``target_ddl``).
    """

    def __init__(
        self,
        scenario: str,
        params: Params,
        *,
        target_server: str = SERVER,
        target_table: str = target_ddl(),
    ) -> None:
        self.scenario = scenario
        self.params = params
        self.target_table = target_table
        tag = f"syncd_chaos_{scenario}_{uuid.uuid4().hex[:8]}"
        self.source_server = SERVER
        self.target_server = target_server
        self.source_db = f"{tag}_src"
        self.target_db = f"{tag}_dst"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"syncd-chaos-{scenario}-"))
        self.daemons: list[Daemon] = []
        self.writer = Writer(self.source_dsn, params.rows + 1, params, params.rng(scenario))
        self._created: list[tuple[str, str]] = []

    @property
    def source_dsn(self) -> str:
        return f"{self.source_server}/{self.source_db}"

    @property
    def target_dsn(self) -> str:
        return f"{self.target_server}/{self.target_db}"

    async def __aenter__(self) -> Stage:
        try:
            await create_database(self.source_server, self.source_db)
            self._created.append((self.source_server, self.source_db))
            await create_database(self.target_server, self.target_db)
            self._created.append((self.target_server, self.target_db))
            conn = await connect(self.source_dsn)
            try:
                await conn.execute(SOURCE_DDL)
                await conn.execute(SOURCE_FILL, self.params.rows)
                await conn.execute(SOURCE_INDEX)
                await conn.execute(SOURCE_VERSIONING)
            finally:
                await conn.close()
            conn = await connect(self.target_dsn)
            try:
                await conn.execute(self.target_table)
                await conn.execute(APPLIED_LOG)
            finally:
                await conn.close()
        except BaseException:
            await self._clean()
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._clean()

    async def _clean(self) -> None:
        await self.writer.stop()
        for daemon in self.daemons:
            if daemon.alive:
                with contextlib.suppress(Exception):
                    await daemon.stop(signal.SIGKILL)
        for server, name in reversed(self._created):
            with contextlib.suppress(Exception):
                await drop_database(server, name)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def write_config(
        self,
        *,
        schedule: str = "1s",
        statement_timeout: str | None = None,
        token: str | None = None,
        grace: str = "10s",
        name: str = "config.yaml",
    ) -> Path:
        target: dict[str, Any] = {"dsn": self.target_dsn, "state_schema": "syncd"}
        if statement_timeout is not None:
            target["statement_timeout"] = statement_timeout
        api: dict[str, Any] = {"host": "127.0.0.1", "port": 0}
        if token is not None:
            api["token"] = token
        document = {
            "target": target,
            "sources": {"src": {"kind": "postgres", "dsn": self.source_dsn}},
            "syncs": {
                SYNC: {
                    "source": "src",
                    "table": SOURCE_TABLE,
                    "key": ["id"],
                    "cursor": "updated_at",
                    "target_table": TARGET_TABLE,
                    "batch_size": self.params.batch_size,
                    "schedule": {"every": schedule},
                    "retry": {"attempts": 10, "initial_delay": "200ms", "max_delay": "2s"},
                }
            },
            "api": api,
            "grace_period": grace,
            "logging": {"level": "info", "format": "json"},
        }
        path = self.workdir / name
        path.write_text(yaml.safe_dump(document))
        return path

    async def start_daemon(self, config: Path) -> Daemon:
        daemon = Daemon(config, self.workdir)
        self.daemons.append(daemon)
        await daemon.start()
        await daemon.wait_ready()
        return daemon


# ---- waiting on a daemon ------------------------------------------------------------------


def stamp(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["timestamp"])


async def wait_event(
    daemon: Daemon,
    since: int,
    names: tuple[str, ...],
    *,
    within: float = 60,
    where: Callable[[dict[str, Any]], bool] | None = None,
    after: datetime | None = None,
) -> dict[str, Any]:
    """The first event named ``names`` logged from line ``since`` on (and at ``after`` or later)."""
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        for event in daemon.lines[since:]:
            if (
                event["event"] in names
                and (where is None or where(event))
                and (after is None or stamp(event) >= after)
            ):
                found.append(event)
                return True
        return False

    await daemon.wait_for(seen, within)
    return found[0]


def line_of(daemon: Daemon, event: dict[str, Any]) -> int:
    """Where ``event`` is in the daemon's log."""
    for index in range(len(daemon.lines) - 1, -1, -1):
        if daemon.lines[index] is event:
            return index
    raise ValueError("not a line of this daemon")


async def wait_progress(
    daemon: Daemon, since: int = 0, *, within: float = 60, after: datetime | None = None
) -> dict[str, Any]:
    """A batch committed or a run finished: the daemon is getting work done."""
    return await wait_event(daemon, since, PROGRESS, within=within, after=after)


def now_utc() -> datetime:
    return datetime.now(UTC)


async def final_catch_up(
    stage: Stage, daemon: Daemon, result: Result, *, token: str | None = None
) -> None:
    """Stop the writer, then have the daemon run the sync to the end through the API."""
    await stage.writer.stop()
    result.expect(stage.writer.error is None, f"the writer failed: {stage.writer.error!r}")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status, body = await daemon.request(
            "POST", f"{PREFIX}/start-sync", params={"sync_name": SYNC}, headers=headers
        )
        if status == 200:
            return
        if status != 409:  # 409: a scheduled run (or another daemon's) is going; try again
            result.problems.append(f"the final run answered {status}: {body}")
            return
        await asyncio.sleep(0.1)
    result.problems.append("the final run could not start within 300 s")


async def stop_daemon(daemon: Daemon, result: Result, *, grace_s: float = 10) -> float:
    """SIGTERM: the daemon must exit 0 within its grace period. Returns how long it took."""
    began = time.monotonic()
    code = await daemon.stop(signal.SIGTERM)
    took = time.monotonic() - began
    result.expect(code == 0, f"daemon {daemon.pid} exited {code} on SIGTERM")
    tail = "; ".join(f"{e.get('timestamp', '')[11:23]} {e['event']}" for e in daemon.lines[-12:])
    result.expect(
        took < grace_s,
        f"daemon {daemon.pid} took {took:.1f} s to stop (grace {grace_s} s); its log ended: {tail}",
    )
    return took


def problems_in_logs(daemon: Daemon) -> list[str]:
    """Lines that no scenario should cause: unexpected errors in request handling, or a log
    line that was not JSON."""
    found = []
    for event in daemon.lines:
        if event["event"] == "request_failed":
            raised = event.get("exception") or [{}]
            found.append(
                f"daemon {daemon.pid} logged request_failed (a 500) on {event.get('path')}:"
                f" {raised[-1].get('exc_type')}: {str(raised[-1].get('exc_value'))[:150]}"
            )
    error = daemon.log_reader_error
    if error is not None and daemon.alive:
        found.append(f"daemon {daemon.pid}: its log could not be read: {error!r}")
    return found


# ---- checks -------------------------------------------------------------------------------


async def boundary_check(stage: Stage, when: str) -> list[str]:
    """The target is exactly at a batch boundary: no row beyond the saved position, every
    source row whose current version is at or before it is there, as it is in the source,
    and the counters match the rows the target took in.

    The target is read in one repeatable-read snapshot (rows and position commit together),
    then the source; the writer only adds versions later than any saved position, so this
    holds whether the daemon is alive or not.
    """
    problems: list[str] = []
    target = await connect(stage.target_dsn)
    try:
        async with target.transaction(isolation="repeatable_read", readonly=True):
            if await target.fetchval("SELECT to_regclass('syncd.sync_state')") is None:
                return problems
            state = await target.fetchrow(
                "SELECT position->>0 AS cursor, position->>1 AS key, current_offset, total_synced"
                " FROM syncd.sync_state WHERE sync_name = $1",
                SYNC,
            )
            if state is None or state["cursor"] is None:
                count = await target.fetchval("SELECT count(*) FROM public.items")
                if count:
                    problems.append(f"{when}: {count} target rows but no saved position")
                return problems
            position = (state["cursor"], state["key"])
            beyond = await target.fetchval(
                "SELECT count(*) FROM public.items"
                " WHERE (updated_at, id) > ($1::text::timestamptz, $2::text::bigint)",
                *position,
            )
            rows: dict[int, int] = {
                r[0]: r[1]
                for r in await target.fetch(
                    "SELECT id, hashtextextended(t::text, 0) FROM public.items t"
                )
            }
            sums = await target.fetchrow(
                "SELECT coalesce(sum(rows_read), 0), coalesce(sum(rows_written), 0)"
                " FROM syncd.runs WHERE sync_name = $1",
                SYNC,
            )
            assert sums is not None
            read, written = sums
            applied = await target.fetchval("SELECT count(*) FROM chaos.applied")
    finally:
        await target.close()
    if beyond:
        problems.append(f"{when}: {beyond} target rows lie beyond the saved position {position}")
    if (read, written) != (state["current_offset"], state["total_synced"]):
        problems.append(
            f"{when}: runs add up to {read} read / {written} written, sync_state says"
            f" {state['current_offset']} / {state['total_synced']}"
        )
    if written != applied:
        problems.append(f"{when}: the runs wrote {written} rows, the target took in {applied}")
    source = await connect(stage.source_dsn)
    try:
        expected = await source.fetch(
            "SELECT id, hashtextextended(t::text, 0) FROM src.items t"
            " WHERE (updated_at, id) <= ($1::text::timestamptz, $2::text::bigint)",
            *position,
        )
    finally:
        await source.close()
    missing = sum(1 for key, digest in expected if rows.get(key) != digest)
    if missing:
        problems.append(
            f"{when}: {missing} of the {len(expected)} source rows at or before the saved"
            " position are missing or different in the target"
        )
    return problems


async def _row_digests(dsn: str, table: str) -> dict[int, str]:
    conn = await connect(dsn)
    try:
        return {r[0]: r[1] for r in await conn.fetch(f"SELECT id, md5(t::text) FROM {table} AS t")}
    finally:
        await conn.close()


@dataclass(frozen=True)
class Applications:
    """What the target's log of applied rows says, against the source's versions."""

    applied: int
    """Rows the target took in: inserted, or changed by an update."""
    repeated: int
    """Rows taken in at the version the target already had: applied twice."""
    older: int
    """Rows taken in at a version older than the one the target already had."""
    versions: int
    """Versions the source's rows have had."""


async def applications(stage: Stage) -> Applications:
    """Each key's applications in the order the target took them in, against the one before."""
    target = await connect(stage.target_dsn)
    try:
        tally = await target.fetchrow(
            "SELECT count(*) AS applied,"
            " count(*) FILTER (WHERE version = before) AS repeated,"
            " count(*) FILTER (WHERE version < before) AS older"
            " FROM (SELECT version, lag(version) OVER (PARTITION BY id ORDER BY seq) AS before"
            " FROM chaos.applied) AS a"
        )
    finally:
        await target.close()
    source = await connect(stage.source_dsn)
    try:
        # Exact: every row starts at version 0 and each change adds one (SOURCE_VERSIONING).
        versions = await source.fetchval("SELECT count(*) + sum(version) FROM src.items")
    finally:
        await source.close()
    assert tally is not None
    return Applications(**dict(tally), versions=versions)


async def verify(
    stage: Stage,
    result: Result,
    *,
    statuses: set[str],
    interrupted: set[str] | None = None,
    max_interrupted: int = 0,
    failed_because: Callable[[str], bool] | None = None,
    after_reset: bool = False,
) -> None:
    """The final comparison, once the writer has stopped and the daemons have caught up.

    ``statuses``: the run statuses this scenario may leave; ``interrupted``: runs that were
    cut off by a kill and must say so; ``failed_because``: what every failed run's error
    must be about (the fault the scenario injected, nothing else).
    """
    source = await connect(stage.source_dsn)
    target = await connect(stage.target_dsn)
    try:
        source_print = await fingerprint(source, SOURCE_TABLE)
        target_print = await fingerprint(target, TARGET_TABLE)
        result.rows_checked = source_print[0]
        last_source = await source.fetchrow(
            "SELECT updated_at, id FROM src.items ORDER BY updated_at DESC, id DESC LIMIT 1"
        )
        state = await target.fetchrow(
            "SELECT (position->>0)::timestamptz AS cursor, (position->>1)::bigint AS key, *"
            " FROM syncd.sync_state WHERE sync_name = $1",
            SYNC,
        )
        runs = await target.fetch(
            "SELECT * FROM syncd.runs WHERE sync_name = $1 ORDER BY started_at, run_id", SYNC
        )
    finally:
        await source.close()
        await target.close()

    if source_print != target_print:
        source_rows = await _row_digests(stage.source_dsn, SOURCE_TABLE)
        target_rows = await _row_digests(stage.target_dsn, TARGET_TABLE)
        result.rows_lost = sum(1 for k, d in source_rows.items() if target_rows.get(k) != d)
        extra = len(set(target_rows) - set(source_rows))
        result.expect(extra == 0, f"{extra} target rows are not in the source")
        result.expect(
            result.rows_lost > 0 or extra > 0,
            f"the fingerprints differ ({source_print} / {target_print}) though no row does",
        )
    tally = await applications(stage)
    result.rows_duplicated = tally.repeated
    result.expect(
        tally.older == 0, f"{tally.older} rows went back to an older version in the target"
    )
    result.checked = True

    if not result.expect(state is not None, "no sync_state row"):
        return
    assert state is not None and last_source is not None
    result.expect(state["is_complete"], "the sync is not marked complete after the final run")
    result.expect(state["holder_pid"] is None, f"the sync is still held by {state['holder_pid']}")
    result.expect(
        (state["cursor"], state["key"]) == (last_source["updated_at"], last_source["id"]),
        f"the saved position {(state['cursor'], state['key'])} is not the source's last row"
        f" {(last_source['updated_at'], last_source['id'])}",
    )

    # The run history.
    result.expect(bool(runs), "no runs recorded")
    seen_statuses = {r["status"] for r in runs}
    result.expect(
        seen_statuses <= statuses,
        f"run statuses {sorted(seen_statuses - statuses)} not expected here",
    )
    if runs:
        result.expect(runs[-1]["status"] == "succeeded", "the last run did not succeed")
    for before, after in itertools.pairwise(runs):
        if before["finished_at"] is None or before["finished_at"] > after["started_at"]:
            result.problems.append(
                f"runs overlap: {before['run_id']} ({before['started_at']} to"
                f" {before['finished_at']}) and {after['run_id']} (from {after['started_at']})"
            )
    for run in runs:
        if run["rows_unchanged"] != run["rows_read"] - run["rows_written"]:
            result.problems.append(f"run {run['run_id']}: rows_unchanged does not add up")
        if run["status"] == "failed" and failed_because is not None:
            result.expect(
                failed_because(run["error"] or ""),
                f"run {run['run_id']} failed for another reason: {run['error']}",
            )
    cut_off = {r["run_id"] for r in runs if r["status"] == "interrupted"}
    result.expect(
        len(cut_off) <= max_interrupted,
        f"{len(cut_off)} runs marked interrupted, at most {max_interrupted} expected",
    )
    if interrupted:
        result.expect(
            interrupted <= cut_off,
            f"killed runs not marked interrupted: {sorted(interrupted - cut_off)}",
        )

    # The counters move with the rows, in the same transactions.
    written_ever = sum(r["rows_written"] for r in runs)
    result.expect(
        written_ever == tally.applied,
        f"the runs wrote {written_ever} rows, the target took in {tally.applied}",
    )
    counted = runs
    if after_reset:
        counted = [
            r for r in runs if state["reset_at"] is None or r["started_at"] > state["reset_at"]
        ]
    read = sum(r["rows_read"] for r in counted)
    written = sum(r["rows_written"] for r in counted)
    result.expect(
        read == state["current_offset"],
        f"current_offset is {state['current_offset']} but the runs read {read} rows",
    )
    result.expect(
        written == state["total_synced"],
        f"total_synced is {state['total_synced']} but the runs wrote {written} rows",
    )
    if not after_reset:
        # Without a reset no pass reads a version twice; one that did would count it unchanged.
        result.expect(
            state["current_offset"] == state["total_synced"],
            f"current_offset {state['current_offset']} != total_synced {state['total_synced']}:"
            " rows read twice",
        )
    else:
        result.expect(
            state["total_synced"] <= state["current_offset"],
            "total_synced exceeds current_offset",
        )
    result.notes.append(
        f"{len(runs)} runs; {tally.applied:,} of {tally.versions:,} source versions applied"
    )

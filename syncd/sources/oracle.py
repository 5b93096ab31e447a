"""An Oracle source: python-oracledb's asyncio thin driver, reading keyset batches.

Every batch is one query, never OFFSET:

    WHERE c >= :after1 AND (c > :after1 OR k > :after2) AND c < :before
    ORDER BY c, k FETCH FIRST n ROWS ONLY

Its binds carry each column's own type, so Oracle compares like with like and
an index on (c, k) serves the query as a range scan. A time cursor is read only
up to the database's own clock less the sync's ``lag``, which gives a transaction
that has stamped a row but not yet committed that long before the keyset moves
past it. A full pass may instead read at one system change number, kept in the
checkpoint so that a resumed pass sees the same data.

Sessions come from a python-oracledb pool of at most the source's ``max_connections``
(the daemon's, shared by its runs, or one of a run's own), and every round trip, the
first included, is bounded by the source's ``statement_timeout``. A connection
interrupted mid-call (cancelled, timed out, cut off) is dropped unless the
driver still calls it healthy, so no half-read reply is ever handed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import oracledb
import structlog

from syncd import clock
from syncd.config import DATABASE_TIME_ZONE, OracleSourceConfig, SyncConfig
from syncd.errors import ConfigError, SourceError
from syncd.handoff import mark_seen
from syncd.identifiers import TableName
from syncd.retry import Retryable
from syncd.sources import (
    Batch,
    Column,
    Limits,
    Position,
    RecordBatch,
    Shape,
    SnapshotExpired,
    Window,
    refuse_null_keys,
)
from syncd.sources.oracle_types import (
    OracleType,
    RowReader,
    bind_value,
    json_text_unparsed,
    oracle_type,
    position_text,
    refusal,
)
from syncd.verify.sides import Side

log = structlog.get_logger("syncd.sources.oracle")

Result = TypeVar("Result")

FETCH_ROWS = 1000
"""Rows fetched per round trip: what the driver holds at once, whatever the batch size."""
KEEPALIVE_MINUTES = 1
"""How often the connection's socket is probed while idle, so a vanished peer is noticed."""
RESET_S = 5.0
"""How long a call cut short (cancelled, or past call_timeout) may take to unwind: the
driver sends a break and waits for the server's reset, with no limit of its own."""

SESSION_SQL = "ALTER SESSION SET TIME_ZONE = 'UTC' NLS_SORT = BINARY NLS_COMP = BINARY"
"""UTC makes local-time-zone values and SYS_EXTRACT_UTC agree; binary collation makes
ORDER BY and ``>`` agree on text keys, which the keyset depends on."""


# -- Connecting -------------------------------------------------------------------------


async def _prepare_session(
    call_timeout_ms: int, conn: oracledb.AsyncConnection, requested_tag: str | None
) -> None:
    # Set before the first call, so that no round trip of this session is unbounded.
    conn.call_timeout = call_timeout_ms
    with conn.cursor() as cursor:
        await cursor.execute(SESSION_SQL)


class OracleSession:
    """A connection whose every call is bounded: by call_timeout, and then by RESET_S for
    the driver to unwind a call that was cut short. A call still unwinding after that is
    left behind, and its connection is abandoned: dropped, never released."""

    def __init__(self, conn: oracledb.AsyncConnection, call_timeout_s: float) -> None:
        self.conn = conn
        self._limit = call_timeout_s + RESET_S
        self.abandoned = False

    async def call(self, awaitable: Awaitable[Result]) -> Result:
        call = asyncio.ensure_future(awaitable)
        try:
            async with asyncio.timeout(self._limit):
                return await asyncio.shield(call)
        except (asyncio.CancelledError, TimeoutError):
            call.add_done_callback(mark_seen)
            call.cancel()
            try:
                await asyncio.wait({call}, timeout=RESET_S)
            finally:
                if not call.done():
                    self.abandoned = True
            raise


async def create_oracle_pool(config: OracleSourceConfig) -> oracledb.AsyncConnectionPool:
    """A pool of at most the source's ``max_connections`` prepared sessions; opens none yet.
    Its host is looked up now, once (``resolved``)."""
    connect_timeout = config.connect_timeout.total_seconds()
    dsn = await resolved(config.dsn, connect_timeout)
    with _oracle_errors(config.user, reading=None):
        return oracledb.create_pool_async(
            dsn=dsn,
            user=config.user,
            password=config.secret(),
            min=0,
            max=config.max_connections,
            increment=1,
            # Callers never ask for more sessions than max (the daemon keeps a budget in front
            # of the pool); should one have to wait all the same, the wait has a bound.
            getmode=oracledb.POOL_GETMODE_TIMEDWAIT,
            wait_timeout=int(connect_timeout * 1000),
            session_callback=partial(
                _prepare_session, int(config.statement_timeout.total_seconds() * 1000)
            ),
            program="syncd",
            tcp_connect_timeout=connect_timeout,
            expire_time=KEEPALIVE_MINUTES,
        )


async def take_session(
    pool: oracledb.AsyncConnectionPool, config: OracleSourceConfig
) -> OracleSession:
    """One prepared session from ``pool``, within the source's ``connect_timeout``."""
    connect_timeout = config.connect_timeout.total_seconds()
    with _oracle_errors(config.user, reading=None):
        try:
            async with asyncio.timeout(connect_timeout):
                conn: oracledb.AsyncConnection = await pool.acquire()
        except TimeoutError:
            raise Retryable(
                f"Oracle did not accept a session within {connect_timeout:g} s"
            ) from None
    return OracleSession(conn, config.statement_timeout.total_seconds())


async def give_back_session(pool: oracledb.AsyncConnectionPool, session: OracleSession) -> None:
    # Releasing a connection whose reply was half read would block on it, or
    # hand the next user its leftovers; dropping closes it without a word.
    async with _at_most(RESET_S):
        if session.conn.is_healthy() and not session.abandoned:
            await pool.release(session.conn)
        else:
            # python-oracledb annotates drop() with the synchronous Connection class.
            await pool.drop(session.conn)  # type: ignore[arg-type]


@asynccontextmanager
async def oracle_connection(config: OracleSourceConfig) -> AsyncIterator[OracleSession]:
    """One prepared session of a pool of its own, closed afterwards; dropped rather than
    released if a call was cut short."""
    pool = await create_oracle_pool(config)
    try:
        session = await take_session(pool, config)
        try:
            yield session
        finally:
            await give_back_session(pool, session)
    finally:
        async with _at_most(RESET_S):
            await pool.close(force=True)


_EASY_CONNECT = re.compile(
    r"(?P<prefix>(?:tcp:)?(?://)?)(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*)(?P<rest>(?::\d+)?/.*)"
)


async def resolved(dsn: str, within: float) -> str:
    """An Easy Connect string with its host name looked up on the event loop's resolver.

    python-oracledb's thin mode resolves the host with a blocking getaddrinfo, which
    stalls every other task while the resolver takes its time. Given an address, it has
    nothing to look up. A TNS alias, a connect descriptor, several hosts or TLS (whose
    certificate is checked against the name) are passed on as they are.
    """
    match = _EASY_CONNECT.fullmatch(dsn)
    if match is None or _is_address(match["host"]):
        return dsn
    port = int(match["rest"].split("/")[0].lstrip(":") or 1521)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(within):
            addresses = await loop.getaddrinfo(match["host"], port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise Retryable(
            f"looking up the Oracle host {match['host']} took over {within:g} s"
        ) from None
    except OSError as exc:
        raise Retryable(
            f"cannot look up the Oracle host {match['host']}: {exc.strerror or exc}"
        ) from None
    address = str(addresses[0][4][0])
    host = f"[{address}]" if ":" in address else address
    return f"{match['prefix']}{host}{match['rest']}"


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@asynccontextmanager
async def _at_most(seconds: float) -> AsyncIterator[None]:
    """Give up on what the block waits for after ``seconds``: the pool's own cleanup, when
    a connection is stuck, must not hold the run."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            yield


_OUT_OF_SESSIONS = ("ORA-00018", "ORA-00020", "ORA-12516", "ORA-12519", "ORA-12520")
"""Sessions or processes exhausted, or a listener with no handler free: the server is full."""


def out_of_sessions(exc: BaseException) -> bool:
    """Whether a failure to get a session says that the database has no room for one more.
    Thin mode reports a listener's refusals as DPY-6000 "(Similar to ORA-12516)"."""
    return any(
        isinstance(error, oracledb.Error) and any(code in str(error) for code in _OUT_OF_SESSIONS)
        for error in (exc, exc.__cause__)
    )


async def check_oracle(config: OracleSourceConfig) -> str:
    try:
        async with oracle_connection(config) as session:
            return f"Oracle Database {session.conn.version}"
    except Retryable as exc:
        raise SourceError(str(exc)) from exc


@asynccontextmanager
async def open_oracle_source(
    config: OracleSourceConfig,
    sync: SyncConfig,
    session: AbstractAsyncContextManager[OracleSession] | None = None,
) -> AsyncIterator[OracleSource]:
    """The source of ``sync`` on a session of its own, or on ``session``: one lent by the
    daemon's pool for the source."""
    if sync.table is None:
        raise SourceError(
            "an Oracle sync reads a table or a view: put the query in a view and name it in 'table'"
        )
    async with session or oracle_connection(config) as lent:
        yield OracleSource(lent, sync, config)


# -- Errors -----------------------------------------------------------------------------

# Worth another try: the connection is gone or the database is (re)starting. Oracle's
# own connection-loss codes (ORA-03113, ORA-03114, ORA-03135, killed sessions) reach
# thin mode as DPY-4011, and a refused TCP connection (ORA-12541) as DPY-6005.
_RETRYABLE = {
    "DPY-4011",  # the database or network closed the connection
    "DPY-4024",  # call_timeout exceeded
    "DPY-6000",  # the listener refused the connection, e.g. while the database starts
    "DPY-6005",  # cannot connect
    "ORA-01555",  # snapshot too old, outside a snapshot pass: the batch can simply rerun
}

# Reading at an SCN that undo or flashback no longer cover (or after DDL on the table).
_SNAPSHOT_GONE = {"ORA-01555", "ORA-08180", "ORA-08181", "ORA-01466", "ORA-22924"}
"""ORA-22924: snapshot too old for a LOB read at the SCN."""

_ORACLE_CODE = re.compile(r"\bORA-\d{5}\b")


def classify(
    exc: oracledb.Error, *, user: str, reading: str | None, scn: str | None = None
) -> Exception:
    """The exception to raise for a driver error: Retryable, SnapshotExpired or SourceError.

    ``reading`` names what was being read, ``scn`` the snapshot it was read at.
    """
    error = exc.args[0]
    code: str = getattr(error, "full_code", "")
    # The first line names the error; later ones may say why (a refused connection,
    # a host not found). The help-portal link is left out.
    text = " ".join(line for line in str(exc).splitlines() if not line.startswith("Help:"))
    # A parallel query server's error arrives wrapped, as ORA-12801 with the cause after it.
    codes = {code, *_ORACLE_CODE.findall(text)}
    if scn is not None and codes & _SNAPSHOT_GONE:
        return SnapshotExpired(
            f"Oracle can no longer read {reading} as of SCN {scn} ({text});"
            " the pass starts again at a new SCN"
        )
    if codes & _RETRYABLE or getattr(error, "isrecoverable", False):
        return Retryable(text)
    if code == "DPY-4001":
        return SourceError(f"no password for the Oracle user {user}: set password or password_file")
    if code == "ORA-01017":
        return SourceError(f"Oracle refused the login of {user}: invalid username or password")
    if code == "ORA-28000":
        return SourceError(f"the Oracle account {user} is locked")
    if code == "ORA-00942" and reading == "V$DATABASE":
        return SourceError(
            f"snapshot: scn reads the current SCN from V$DATABASE, which {user} may not read:"
            f" GRANT SELECT ON V_$DATABASE TO {user}"
        )
    if code == "ORA-00942":
        return SourceError(
            f"{reading} does not exist or {user} may not read it:"
            f" GRANT SELECT ON {reading} TO {user}"
        )
    if code == "ORA-01031" and scn is not None:
        return SourceError(
            f"snapshot: scn reads {reading} AS OF SCN, which needs the FLASHBACK privilege:"
            f" GRANT FLASHBACK ON {reading} TO {user}"
        )
    if code == "ORA-00904":
        return SourceError(f"{reading} has no such column: {text}")
    return SourceError(f"Oracle refused the request: {text}")


@contextmanager
def _oracle_errors(user: str, reading: str | None, scn: str | None = None) -> Iterator[None]:
    try:
        yield
    except oracledb.Error as exc:
        raise classify(exc, user=user, reading=reading, scn=scn) from exc


# -- SQL --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    """What a sync reads, quoted for Oracle."""

    table: str
    select: tuple[str, ...]
    order: tuple[str, ...]
    """The cursor (if any) then the key columns; the key columns alone for a backfill."""
    cursor: str | None
    """Rows whose cursor is NULL are not read, whether or not the order includes it."""
    local_time_cursor: bool = False
    """The cursor is a TIMESTAMP WITH LOCAL TIME ZONE. Its binds travel as TIMESTAMP WITH
    TIME ZONE at +00:00 and are cast back in the query, so that the index still serves:
    a LOCAL TIME ZONE bind's naive fields would be read in DBTIMEZONE, which need not be
    UTC, and every saved position would shift by its offset."""

    def bind(self, name: str, column: int) -> str:
        """The placeholder for a bind compared with order column ``column``."""
        if column == 0 and self.local_time_cursor:
            return f"CAST(:{name} AS TIMESTAMP WITH LOCAL TIME ZONE)"
        return f":{name}"


@dataclass(frozen=True)
class Bounds:
    """Which conditions one batch query carries; their values travel as binds."""

    after: bool = False
    """(order) > (:after1, :after2, …)"""
    since: bool = False
    """cursor >= :since, the saved cursor value less the lookback"""
    until: bool = False
    """(order) <= (:until1, :until2, …)"""
    before: bool = False
    """cursor < :before, the database clock less the lag"""
    scn: bool = False
    """AS OF SCN :scn"""
    null_cursor: bool = False
    """cursor IS NULL: the rows no cursor order holds, read by key"""


def batch_sql(relation: Relation, bounds: Bounds, limit: int | None) -> str:
    """The query for one batch of at most ``limit`` rows (a literal), or, without a limit,
    for the whole window in keyset order."""
    order = relation.order
    cursor = relation.cursor or order[0]
    conditions = []
    if bounds.after:
        conditions.append(beyond(relation, "after", ">=", ">", ">"))
    if bounds.since:
        conditions.append(f"{cursor} >= {relation.bind('since', 0)}")
    if bounds.until:
        conditions.append(beyond(relation, "until", "<=", "<", "<="))
    if bounds.before:
        conditions.append(f"{cursor} < {relation.bind('before', 0)}")
    bounded = bounds.since or bounds.before or (bounds.after and order[0] == relation.cursor)
    if relation.cursor is not None and bounds.null_cursor:
        conditions.insert(0, f"{relation.cursor} IS NULL")
    elif relation.cursor is not None and not bounded:
        # A NULL cursor has no place in the order; sqlglot spells IS NOT NULL this way.
        conditions.insert(0, f"NOT {relation.cursor} IS NULL")
    sql = f"SELECT {', '.join(relation.select)} FROM {relation.table}"
    if bounds.scn:
        sql += " AS OF SCN :scn"
    if conditions:
        sql += f" WHERE {' AND '.join(conditions)}"
    ascending = ", ".join(f"{column} ASC NULLS LAST" for column in order)
    sql += f" ORDER BY {ascending}"
    return sql if limit is None else sql + f" FETCH FIRST {int(limit)} ROWS ONLY"


def beyond(relation: Relation, name: str, loose: str, strict: str, last: str) -> str:
    """A row comparison written out column by column, each leading column first as a
    plain range (``loose``), so that Oracle can start an index range scan there."""
    order = relation.order
    sql = f"{order[-1]} {last} {relation.bind(f'{name}{len(order)}', len(order) - 1)}"
    for i in reversed(range(len(order) - 1)):
        column, bind = order[i], relation.bind(f"{name}{i + 1}", i)
        inner = f"({sql})" if " AND " in sql else sql
        sql = f"{column} {loose} {bind} AND ({column} {strict} {bind} OR {inner})"
    return sql


COLUMNS_SQL = (
    "SELECT COLUMN_NAME, DATA_TYPE, DATA_PRECISION, DATA_SCALE, NULLABLE FROM ALL_TAB_COLUMNS"
    " WHERE OWNER = COALESCE(:owner, SYS_CONTEXT('USERENV', 'CURRENT_SCHEMA'))"
    " AND TABLE_NAME = :table_name ORDER BY COLUMN_ID"
)
PRIMARY_KEY_SQL = (
    "SELECT cc.COLUMN_NAME FROM ALL_CONSTRAINTS c JOIN ALL_CONS_COLUMNS cc"
    " ON cc.OWNER = c.OWNER AND cc.CONSTRAINT_NAME = c.CONSTRAINT_NAME"
    " WHERE c.OWNER = COALESCE(:owner, SYS_CONTEXT('USERENV', 'CURRENT_SCHEMA'))"
    " AND c.TABLE_NAME = :table_name AND c.CONSTRAINT_TYPE = 'P' ORDER BY cc.POSITION"
)
NUM_ROWS_SQL = (
    "SELECT NUM_ROWS FROM ALL_TABLES"
    " WHERE OWNER = COALESCE(:owner, SYS_CONTEXT('USERENV', 'CURRENT_SCHEMA'))"
    " AND TABLE_NAME = :table_name"
)
LEADING_INDEX_SQL = (
    "SELECT COUNT(*) FROM ALL_IND_COLUMNS"
    " WHERE TABLE_OWNER = COALESCE(:owner, SYS_CONTEXT('USERENV', 'CURRENT_SCHEMA'))"
    " AND TABLE_NAME = :table_name AND COLUMN_POSITION = 1 AND COLUMN_NAME = :column_name"
)
NATIONAL_CHARSET_SQL = (
    "SELECT VALUE FROM NLS_DATABASE_PARAMETERS WHERE PARAMETER = 'NLS_NCHAR_CHARACTERSET'"
)
_NATIONAL_TEXT = ("NCHAR", "NVARCHAR2", "NCLOB")
CLOCK_SQL = "SELECT SYS_EXTRACT_UTC(SYSTIMESTAMP) FROM DUAL"
WALL_CLOCK_SQL = "SELECT CAST(SYSTIMESTAMP AS TIMESTAMP) FROM DUAL"
"""The server's wall clock, in its operating system's zone: what SYSDATE gives."""
SCN_SQL = "SELECT CURRENT_SCN FROM V$DATABASE"


def null_cursors_sql(relation: Relation) -> str:
    """How many rows have a NULL cursor, which an index on the cursor answers."""
    return f"SELECT COUNT(*) FROM {relation.table} WHERE {relation.cursor} IS NULL"


def newest_sql(relation: Relation) -> str:
    """The newest cursor value, as batches select it (an instant in UTC for a zoned one):
    MAX over the column itself, which an index answers at its end."""
    assert relation.cursor is not None
    newest = f"MAX({relation.cursor})"
    zoned = any(s == f"SYS_EXTRACT_UTC({relation.cursor})" for s in relation.select)
    return f"SELECT {f'SYS_EXTRACT_UTC({newest})' if zoned else newest} FROM {relation.table}"


def null_keys_sql(table: str, columns: Sequence[str]) -> str:
    """How many rows hold NULL in each of ``columns``, which are quoted."""
    counts = ", ".join(f"COUNT(CASE WHEN {c} IS NULL THEN 1 END)" for c in columns)
    either = " OR ".join(f"{c} IS NULL" for c in columns)
    return f"SELECT {counts} FROM {table} WHERE {either}"


# -- Reading ----------------------------------------------------------------------------

Binds = dict[str, tuple[Any, oracledb.DbType]]
"""Bind name to (value, the type it is bound as): a batch query's binds."""


@dataclass(frozen=True)
class _Keyset:
    """One order to read in: the query's relation, how positions bind, how rows read."""

    relation: Relation
    binds: tuple[oracledb.DbType, ...]
    """The type each order column's position value is bound as."""
    reader: RowReader


@dataclass(frozen=True)
class _Described:
    shape: Shape
    keysets: dict[bool, _Keyset]
    """By (cursor, key), and by key alone (for a backfill)."""
    cursor_bind: oracledb.DbType | None
    cursor_is_time: bool
    zone_less: bool
    """The cursor is a DATE or TIMESTAMP: a wall-clock time in the application's zone."""
    data_types: dict[str, str]
    """Each column's Oracle type, as ALL_TAB_COLUMNS names it."""


class OracleSource:
    def __init__(
        self, session: OracleSession, sync: SyncConfig, config: OracleSourceConfig
    ) -> None:
        self._session = session
        self._sync = sync
        self._user = config.user
        self._source = config
        self._table = TableName.parse(sync.table or "")
        self._names = {"owner": self._table.schema, "table_name": self._table.name}
        self._described: _Described | None = None

    async def null_cursors(self) -> int:
        described = await self._ensure_described()
        relation = described.keysets[False].relation
        if relation.cursor is None:
            return 0
        rows = await self._query(null_cursors_sql(relation), reading=str(self._table))
        return _int(rows[0][0]) or 0

    async def newest_cursor(self) -> str | None:
        described = await self._ensure_described()
        relation = described.keysets[False].relation
        if relation.cursor is None:
            return None
        rows = await self._query(newest_sql(relation), reading=str(self._table))
        newest = rows[0][0] if rows else None
        return None if newest is None else position_text(newest)

    async def comparison(self) -> Side:
        # Imported here: the verify side builds on this module's relations.
        from syncd.verify.oracle_side import OracleSide, OracleTable

        described = await self._ensure_described()
        by_key = described.keysets[True]
        table = OracleTable(
            described.shape,
            described.data_types,
            described.keysets[False].relation,
            by_key.relation,
            by_key.binds,
            described.cursor_bind,
            by_key.reader,
        )
        return OracleSide(self._query, table, str(self._table))

    def abort(self) -> None:
        # Its calls unwind within RESET_S on their own; the session must not be reused.
        self._session.abandoned = True

    async def describe(self) -> Shape:
        return (await self._ensure_described()).shape

    async def _ensure_described(self) -> _Described:
        if self._described is None:
            self._described = await self._describe()
        return self._described

    async def _describe(self) -> _Described:
        sync = self._sync
        rows = await self._query(COLUMNS_SQL, self._names, reading="ALL_TAB_COLUMNS")
        if not rows:
            raise SourceError(
                f"the source table {self._table} does not exist or {self._user} cannot see it"
                " (names are case-sensitive, and Oracle keeps unquoted names in upper case)"
            )
        found = {name: (data_type, _int(p), _int(s)) for name, data_type, p, s, _ in rows}
        nullable = {name for name, *_, null in rows if null != "N"}
        key = tuple(sync.key) if sync.key else await self._primary_key()
        order = (*([sync.cursor] if sync.cursor else []), *key)
        wanted = set(order) | set(sync.columns or found)
        missing = [name for name in (*order, *(sync.columns or ())) if name not in found]
        if missing:
            raise SourceError(
                f"the source table {self._table} has no column "
                + ", ".join(repr(m) for m in dict.fromkeys(missing))
                + f" (it has {', '.join(found)})"
            )
        chosen = [name for name in found if name in wanted]
        types = {name: self._type(name, *found[name]) for name in chosen}
        order_binds = tuple(self._order_bind(name, found[name][0], types[name]) for name in order)
        cursor_is_time = sync.cursor is not None and types[sync.cursor].is_time
        zone_less = cursor_is_time and not types[sync.cursor or ""].at_utc
        if sync.lag is not None and zone_less and self._source.cursor_time_zone is None:
            raise ConfigError(
                f"sources.{sync.source}.cursor_time_zone: lag holds back rows newer than 'now',"
                f" and {sync.cursor} ({found[sync.cursor or ''][0]}) has no time zone: name the"
                " zone the application writes it in (such as America/New_York), or 'database'"
            )
        if (sync.lookback is not None or sync.lag is not None) and not cursor_is_time:
            raise SourceError(
                f"lookback and lag need a DATE or TIMESTAMP cursor; {sync.cursor!r} is"
                f" {found[sync.cursor or ''][0]}"
            )
        columns = tuple(
            Column(name=name, target_name=_target_name(name), pg_type=types[name].pg_type)
            for name in chosen
        )
        targets = [c.target_name for c in columns]
        if len(set(targets)) < len(targets):
            raise SourceError(
                "two source columns would have the same name in the target: " + ", ".join(targets)
            )
        relation = Relation(
            table=".".join(_quote(part) for part in (self._table.schema, self._table.name) if part),
            select=tuple(_selected(_quote(name), types[name]) for name in chosen),
            order=tuple(_quote(name) for name in order),
            cursor=_quote(sync.cursor) if sync.cursor else None,
            local_time_cursor=sync.cursor is not None and types[sync.cursor].local_time,
        )
        await self._refuse_national_text(
            [name for name in chosen if found[name][0] in _NATIONAL_TEXT]
        )
        await self._refuse_null_keys(relation.table, [k for k in key if k in nullable])
        readers = {
            by_key: RowReader(
                chosen,
                [types[name] for name in chosen],
                [chosen.index(n) for n in (key if by_key else order)],
                [chosen.index(k) for k in key],
                sync.nul,
            )
            for by_key in (False, True)
        }
        missing_index = await self._missing_index(order, relation.order)
        if missing_index is not None:
            log.warning(
                "no_usable_index",
                source=f"the source table {self._table}",
                reads="the whole window in one sorted query each run",
                suggestion=missing_index,
            )
        return _Described(
            shape=Shape(columns=columns, key=key, cursor=sync.cursor, missing_index=missing_index),
            cursor_bind=order_binds[0] if sync.cursor else None,
            keysets={
                False: _Keyset(relation, order_binds, readers[False]),
                True: _Keyset(
                    replace(relation, order=relation.order[-len(key) :], local_time_cursor=False),
                    order_binds[-len(key) :],
                    readers[True],
                ),
            },
            cursor_is_time=cursor_is_time,
            zone_less=zone_less,
            data_types={name: found[name][0] for name in chosen},
        )

    def _type(
        self, name: str, data_type: str, precision: int | None, scale: int | None
    ) -> OracleType:
        mapped = oracle_type(data_type, precision, scale)
        if mapped is None:
            raise SourceError(refusal(data_type, name, str(self._table)))
        return mapped

    def _order_bind(self, name: str, data_type: str, mapped: OracleType) -> oracledb.DbType:
        if mapped.bind is None:
            raise SourceError(
                f"{name} ({data_type}) cannot order a keyset: a key or cursor must be a number,"
                " text, RAW, DATE, or TIMESTAMP of at most microseconds"
            )
        return mapped.bind

    async def _refuse_null_keys(self, table: str, nullable: list[str]) -> None:
        if not nullable:
            return
        sql = null_keys_sql(table, [_quote(name) for name in nullable])
        (counts,) = await self._query(sql, reading=str(self._table))
        refuse_null_keys(
            f"the source table {self._table}",
            {name: int(count) for name, count in zip(nullable, counts, strict=True)},
        )

    async def _refuse_national_text(self, columns: list[str]) -> None:
        """Thin mode reads NCHAR, NVARCHAR2 and NCLOB only in the AL16UTF16 national
        character set; in any other it fails on the first row, so say so beforehand."""
        if not columns:
            return
        ((charset,),) = await self._query(NATIONAL_CHARSET_SQL, reading="NLS_DATABASE_PARAMETERS")
        if charset != "AL16UTF16":
            raise SourceError(
                f"{', '.join(columns)} of {self._table}: python-oracledb's thin mode reads"
                f" national character columns only in AL16UTF16, and this database's national"
                f" character set is {charset}; read them through a view that selects"
                " TO_CHAR (or TO_CLOB) of each, or leave them out with 'columns'"
            )

    async def _missing_index(self, order: tuple[str, ...], quoted: tuple[str, ...]) -> str | None:
        """The CREATE INDEX the table lacks for its keyset to be read range by range, if any:
        an index leading with the first order column is enough."""
        binds = self._names | {"column_name": order[0]}
        ((indexes,),) = await self._query(LEADING_INDEX_SQL, binds, reading="ALL_IND_COLUMNS")
        if indexes:
            return None
        table = ".".join(_quote(part) for part in (self._table.schema, self._table.name) if part)
        return f"CREATE INDEX ON {table} ({', '.join(quoted)})"

    async def _primary_key(self) -> tuple[str, ...]:
        rows = await self._query(PRIMARY_KEY_SQL, self._names, reading="ALL_CONSTRAINTS")
        if not rows:
            raise SourceError(
                f"the source table {self._table} has no primary key; name one with 'key'"
            )
        return tuple(row[0] for row in rows)

    async def estimate_rows(self, window: Window) -> int | None:
        """The optimizer's row count for a whole pass; other windows are not guessed at."""
        if window != Window():
            return None
        rows = await self._query(NUM_ROWS_SQL, self._names, reading="ALL_TABLES")
        return _int(rows[0][0]) if rows else None

    async def read(self, window: Window, limits: Limits) -> AsyncGenerator[Batch, None]:
        described = await self._ensure_described()
        keyset = described.keysets[window.by_key]
        cursor_bind = described.cursor_bind or keyset.binds[0]
        fixed: Binds = {}
        if window.until is not None:
            fixed |= self._position_binds("until", window.until, keyset)
        if described.cursor_is_time and not window.by_key:
            now = await self._now(described.zone_less)
            fixed["before"] = (now - (self._sync.lag or timedelta()), cursor_bind)
        scn = None
        if self._sync.snapshot == "scn":
            scn = window.snapshot or await self._current_scn()
            fixed["scn"] = (int(scn), oracledb.DB_TYPE_NUMBER)
        bounds = Bounds(
            until=window.until is not None,
            before="before" in fixed,
            scn=scn is not None,
            null_cursor=window.null_cursor,
        )
        lower: Binds = {}
        if window.cursor_from is not None:
            since = bind_value(window.cursor_from, cursor_bind) - (window.lookback or timedelta())
            lower, bounds = {"since": (since, cursor_bind)}, replace(bounds, since=True)
        elif window.after is not None:
            lower = self._position_binds("after", window.after, keyset)
            bounds = replace(bounds, after=True)
        # Without an index each batch's query would sort the whole table: sort it once,
        # and take every batch from that one result, in keyset order all the same.
        one_pass = described.shape.missing_index is not None and not window.by_key
        limit = None if one_pass else limits.rows
        while True:
            last: RecordBatch | None = None
            async for rows, exhausted in self._fetch_batches(
                batch_sql(keyset.relation, bounds, limit), fixed | lower, scn, limits, limit
            ):
                last = self._batch(keyset.reader, rows, exhausted, scn)
                yield last
                if exhausted:
                    return
            if last is None:
                return
            lower = self._position_binds("after", last.end, keyset)
            bounds = replace(bounds, after=True, since=False)

    def _batch(
        self, reader: RowReader, rows: list[Any], exhausted: bool, scn: str | None
    ) -> RecordBatch:
        records, cleaned = reader.records(rows)
        return RecordBatch(
            records=records,
            end=reader.position(rows[-1]),
            exhausted=exhausted,
            snapshot=scn,
            values_cleaned=cleaned,
        )

    async def _fetch_batches(
        self, sql: str, binds: Binds, scn: str | None, limits: Limits, limit: int | None
    ) -> AsyncGenerator[tuple[list[Any], bool], None]:
        """The rows of one query, ``limit`` at most, fetched a round trip at a time and cut
        into batches within ``limits``; each with whether the window has no rows after it,
        which a query stopped by its own limit cannot say."""
        reading = str(self._table)
        with self._session.conn.cursor() as cursor:
            with _oracle_errors(self._user, reading, scn):
                cursor.outputtypehandler = json_text_unparsed
                cursor.arraysize = min(limits.rows, FETCH_ROWS)
                # One more row than a round trip's worth lets the execute round trip also
                # learn that a small result has ended.
                cursor.prefetchrows = cursor.arraysize + 1
                cursor.setinputsizes(**{name: bind for name, (_, bind) in binds.items()})
                await self._session.call(
                    cursor.execute(
                        sql,
                        {name: value for name, (value, _) in binds.items()},
                        fetch_lobs=False,
                        fetch_decimals=True,
                    )
                )
            pending: deque[Any] = deque()
            fetched_in_all, ended = 0, False
            while True:
                rows: list[Any] = []
                size = 0
                while len(rows) < limits.rows and size < limits.bytes:
                    if not pending:
                        if ended:
                            break
                        with _oracle_errors(self._user, reading, scn):
                            fetched = await self._session.call(cursor.fetchmany(cursor.arraysize))
                        fetched_in_all += len(fetched)
                        ended = len(fetched) < cursor.arraysize or fetched_in_all == limit
                        pending.extend(fetched)
                        continue
                    row = pending.popleft()
                    rows.append(row)
                    size += _row_bytes(row)
                if not rows:
                    return
                drained = ended and not pending
                yield rows, drained and (limit is None or fetched_in_all < limit)
                if drained:
                    return

    async def _now(self, zone_less: bool) -> datetime:
        """The database's 'now' as the cursor counts time: an instant in UTC for a zoned
        cursor; for a zone-less one, the wall clock of the zone it is written in."""
        zone = self._source.cursor_time_zone
        if zone_less and zone == DATABASE_TIME_ZONE:
            ((wall,),) = await self._query(WALL_CLOCK_SQL, reading="DUAL")
            return wall  # type: ignore[no-any-return]
        ((utc,),) = await self._query(CLOCK_SQL, reading="DUAL")
        now = utc.replace(tzinfo=UTC)
        if not zone_less:
            return now  # type: ignore[no-any-return]
        # Without a zone, the cursor is taken to be UTC (and lag was refused).
        return clock.wall_now(ZoneInfo(zone or "UTC"), now)

    async def _current_scn(self) -> str:
        (scn,) = (await self._query(SCN_SQL, reading="V$DATABASE"))[0]
        return str(int(scn))

    def _position_binds(self, name: str, position: Position, keyset: _Keyset) -> Binds:
        if len(position) != len(keyset.binds):
            raise SourceError(
                f"the saved position has {len(position)} values but the sync orders by"
                f" {len(keyset.binds)} columns; the key or cursor changed: reset the sync"
            )
        return {
            f"{name}{i}": (None if text is None else bind_value(text, bind), bind)
            for i, (text, bind) in enumerate(zip(position, keyset.binds, strict=True), 1)
        }

    async def _query(
        self,
        sql: str,
        values: dict[str, Any] | None = None,
        *,
        types: dict[str, oracledb.DbType] | None = None,
        reading: str,
        scn: str | None = None,
    ) -> list[Any]:
        """Run one query and fetch all its rows: LOBs as str and bytes, numbers as Decimal.
        ``types`` binds values as those types."""
        with _oracle_errors(self._user, reading, scn), self._session.conn.cursor() as cursor:
            cursor.outputtypehandler = json_text_unparsed
            if types:
                cursor.setinputsizes(**types)
            await self._session.call(
                cursor.execute(sql, values or {}, fetch_lobs=False, fetch_decimals=True)
            )
            rows: list[Any] = await self._session.call(cursor.fetchall())
            return rows


def _selected(column: str, mapped: OracleType) -> str:
    """How a column is selected. No alias: ORDER BY would take an alias over the column
    and sort by the expression, which no index on the column serves."""
    if mapped.at_utc:
        return f"SYS_EXTRACT_UTC({column})"
    if mapped.serialized:
        return f"JSON_SERIALIZE({column} RETURNING CLOB)"
    return column


def _quote(name: str) -> str:
    return oracledb.enquote_name(name, capitalize=False)


_UNQUOTED = re.compile(r"[A-Z][A-Z0-9_$#]*")


def _target_name(name: str) -> str:
    """Oracle's upper-case unquoted names become PostgreSQL's lower-case ones."""
    return name.lower() if _UNQUOTED.fullmatch(name) else name


def _row_bytes(row: Sequence[Any]) -> int:
    """About what a fetched row takes: its text and binary values, and a word for others."""
    return sum(len(value) if isinstance(value, str | bytes) else 8 for value in row)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)

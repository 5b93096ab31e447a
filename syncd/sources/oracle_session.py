"""An Oracle session and its pool: connecting, bounding every call, and unwinding one cut short.

Sessions come from a python-oracledb pool of at most the source's ``max_connections``
(the daemon's, shared by its runs, or one of a run's own), and every round trip, the
first included, is bounded by the source's ``statement_timeout``. A connection
interrupted mid-call (cancelled, timed out, cut off) is dropped unless the
driver still calls it healthy, so no half-read reply is ever handed back.

A driver error becomes Retryable, SnapshotExpired or a SourceError saying what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any, TypeVar

import oracledb

from syncd.config import OracleSourceConfig
from syncd.errors import SourceError
from syncd.handoff import mark_seen
from syncd.retry import Retryable
from syncd.sources import SnapshotExpired
from syncd.sources.oracle_types import json_text_unparsed

Result = TypeVar("Result")

KEEPALIVE_MINUTES = 1
"""How often the connection's socket is probed while idle, so a vanished peer is noticed."""
RESET_S = 5.0
"""How long a call cut short (cancelled, or past call_timeout) may take to unwind: the
driver sends a break and waits for the server's reset, with no limit of its own."""

SESSION_SQL = "ALTER SESSION SET TIME_ZONE = 'UTC' NLS_SORT = BINARY NLS_COMP = BINARY"
"""UTC makes local-time-zone values and SYS_EXTRACT_UTC agree; binary collation makes
ORDER BY and ``>`` agree on text keys, which the keyset depends on."""


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

    def __init__(self, conn: oracledb.AsyncConnection, call_timeout_s: float, user: str) -> None:
        self.conn = conn
        self.user = user
        """Whom the session is logged in as, named in what a failure says to do."""
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

    async def query(
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
        with oracle_errors(self.user, reading, scn), self.conn.cursor() as cursor:
            cursor.outputtypehandler = json_text_unparsed
            if types:
                cursor.setinputsizes(**types)
            await self.call(
                cursor.execute(sql, values or {}, fetch_lobs=False, fetch_decimals=True)
            )
            rows: list[Any] = await self.call(cursor.fetchall())
            return rows


async def create_oracle_pool(config: OracleSourceConfig) -> oracledb.AsyncConnectionPool:
    """A pool of at most the source's ``max_connections`` prepared sessions; opens none yet.
    Its host is looked up now, once (``resolved``)."""
    connect_timeout = config.connect_timeout.total_seconds()
    dsn = await resolved(config.dsn, connect_timeout)
    with oracle_errors(config.user, reading=None):
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
    with oracle_errors(config.user, reading=None):
        try:
            async with asyncio.timeout(connect_timeout):
                conn: oracledb.AsyncConnection = await pool.acquire()
        except TimeoutError:
            raise Retryable(
                f"Oracle did not accept a session within {connect_timeout:g} s"
            ) from None
    return OracleSession(conn, config.statement_timeout.total_seconds(), config.user)


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


class ScnNotGranted(SourceError):
    """The user may not read at an SCN: SELECT on V$DATABASE or FLASHBACK is not granted."""


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
        return ScnNotGranted(
            f"reading at an SCN takes the current one from V$DATABASE, which {user} may not"
            f" read: GRANT SELECT ON V_$DATABASE TO {user}"
        )
    if code == "ORA-00942":
        return SourceError(
            f"{reading} does not exist or {user} may not read it:"
            f" GRANT SELECT ON {reading} TO {user}"
        )
    if code == "ORA-01031" and scn is not None:
        return ScnNotGranted(
            f"reading {reading} AS OF SCN needs the FLASHBACK privilege:"
            f" GRANT FLASHBACK ON {reading} TO {user}"
        )
    if code == "ORA-00904":
        return SourceError(f"{reading} has no such column: {text}")
    return SourceError(f"Oracle refused the request: {text}")


@contextmanager
def oracle_errors(user: str, reading: str | None, scn: str | None = None) -> Iterator[None]:
    try:
        yield
    except oracledb.Error as exc:
        raise classify(exc, user=user, reading=reading, scn=scn) from exc

"""The daemon's connections: a budget and a pool for each database, and one backoff for all.

Whoever asks, the runs' writers and sources or the API, a database gets no more than its
``max_connections`` from the whole daemon. A borrower waits a bounded time for one of them
and then fails, saying that they are all in use. A connection goes back to its pool only
when its borrower knows its session is clean (no transaction open, no lock held); any other
is closed at once, and its place made free for a new one.

When a server says that it has no connection slot left, no run anywhere in the daemon
connects for a while: each refusal in a row makes the while longer, and the first
connection that succeeds ends the streak. Runs wait behind it rather than each retrying
into a full server, which is what takes an application's own connections away.

The one-shot ``syncd sync`` is one run, which needs one connection to each side: it opens
its own (``OwnConnections``), and that is within any budget.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol, TypeVar

import asyncpg
import structlog

from syncd import pg, retry
from syncd.config import (
    Config,
    OracleSourceConfig,
    PostgresSourceConfig,
    RetryConfig,
    SyncConfig,
    TargetConfig,
)
from syncd.errors import Unavailable
from syncd.sources import Source, open_source
from syncd.units import format_duration

if TYPE_CHECKING:
    import oracledb

    from syncd.sources.oracle_session import OracleSession

log = structlog.get_logger("syncd.pools")

Connection = TypeVar("Connection")

BACKOFF = RetryConfig(initial_delay=timedelta(seconds=1), max_delay=timedelta(seconds=30))
"""How long nobody connects after a server had no slot free: doubling from 1 s up to 30 s."""
IDLE_CLOSE_S = 300.0
"""An idle connection unused for this long is closed: the budget is a ceiling, not a claim."""
CLOSE_S = 5.0
"""How long closing a connection politely may take before it is cut."""


class PoolExhausted(Unavailable):
    """No connection to the database came free in time."""


@dataclass(frozen=True)
class PoolUse:
    """What one pool holds now, for status and metrics."""

    pool: str
    in_use: int
    idle: int
    max: int
    waiting: int
    """Borrowers waiting for one of its connections."""


@dataclass(frozen=True)
class Patience:
    """How long one borrower waits for a connection, all told, and what it says then."""

    label: str
    """The database, as messages name it: "the target", "source 'crm'"."""
    within: float
    deadline: float
    """When the wait ends, on the event loop's clock."""

    @classmethod
    def starting_now(cls, label: str, within: timedelta | float) -> Patience:
        seconds = within.total_seconds() if isinstance(within, timedelta) else within
        return cls(label, seconds, asyncio.get_running_loop().time() + seconds)

    def exhausted(self, why: str) -> PoolExhausted:
        waited = format_duration(timedelta(seconds=self.within))
        return PoolExhausted(f"no connection to {self.label} within {waited}: {why}")


class Backoff:
    """Daemon-wide: after a server refused a connection for lack of slots, nobody connects."""

    def __init__(self, policy: RetryConfig = BACKOFF) -> None:
        self._policy = policy
        self._until = 0.0
        self._refusals = 0
        self._reason = ""

    @property
    def remaining(self) -> float:
        """Seconds until connecting is allowed again; 0 when it is."""
        return max(0.0, self._until - asyncio.get_running_loop().time())

    def refused(self, database: str, error: BaseException) -> None:
        now = asyncio.get_running_loop().time()
        if now < self._until:
            return  # asked before the backoff began: the same refusal, not one more in a row
        self._refusals += 1
        delay = retry.delay(self._policy, min(self._refusals, 16))
        self._until = now + delay
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        self._reason = f"{database} had no connection slot free ({reason})"
        log.warning(
            "connections_refused",
            database=database,
            backoff_s=round(delay, 2),
            refusals=self._refusals,
            error=reason,
        )

    def connected(self) -> None:
        self._refusals = 0

    async def wait(self, patience: Patience) -> None:
        """Until connecting is allowed again, or PoolExhausted if not within ``patience``."""
        loop = asyncio.get_running_loop()
        while self._until > loop.time():
            if self._until > patience.deadline:
                raise patience.exhausted(self._reason)
            await asyncio.sleep(self._until - loop.time())


class Budget:
    """At most ``size`` connections to one database at a time, across the daemon."""

    def __init__(self, label: str, size: int, backoff: Backoff) -> None:
        self.label = label
        self.size = size
        self.backoff = backoff
        self._free = asyncio.Semaphore(size)
        self.in_use = 0
        self.waiting = 0

    async def take(self, patience: Patience) -> None:
        """A place for one connection, or PoolExhausted when ``patience`` runs out."""
        self.waiting += 1
        try:
            async with asyncio.timeout_at(patience.deadline):
                await self._free.acquire()
        except TimeoutError:
            raise patience.exhausted(f"all {self.size} are in use") from None
        finally:
            self.waiting -= 1
        self.in_use += 1

    def give(self) -> None:
        self.in_use -= 1
        self._free.release()

    async def connect(
        self,
        open_connection: Callable[[], Awaitable[Connection]],
        refused: Callable[[BaseException], bool],
        *,
        patience: Patience,
        patient: bool,
        idle: Callable[[], Connection | None] = lambda: None,
    ) -> Connection:
        """An ``idle`` connection if there is one, else a new one. A refusal for lack of
        slots starts the backoff for everyone: a ``patient`` borrower waits it out (and
        takes a connection given back meanwhile) while ``patience`` lasts, another gets
        the refusal at once."""
        while True:
            if (connection := idle()) is not None:
                return connection
            if patient and self.backoff.remaining > 0:
                await self.backoff.wait(patience)
                continue
            try:
                connection = await open_connection()
            except Exception as exc:
                if not refused(exc):
                    raise
                self.backoff.refused(self.label, exc)
                if not patient:
                    raise
                continue
            self.backoff.connected()
            return connection


def _out_of_slots(exc: BaseException) -> bool:
    # 53300: max_connections reached, or a role's or database's CONNECTION LIMIT.
    return isinstance(exc, asyncpg.TooManyConnectionsError)


class PostgresPool:
    """One PostgreSQL database's connections, lent as plain asyncpg connections.

    A patient borrower (a run) waits up to the database's ``pool_timeout``, behind the
    backoff, and gets refusals no retry can mend in plain words. An impatient one (an API
    request, or the daemon waiting for its target to answer) waits only as long as it says
    and gets the driver's errors as they are, to sort them itself.
    """

    def __init__(
        self, name: str, database: TargetConfig | PostgresSourceConfig, backoff: Backoff
    ) -> None:
        self.name = name
        self.database = database
        label = "the target" if name == "target" else f"source {name.removeprefix('source:')!r}"
        self.budget = Budget(label, database.max_connections, backoff)
        self._idle: list[tuple[asyncpg.Connection, asyncio.TimerHandle]] = []
        self._closed = False

    async def lend(
        self, within: float | None = None, *, patient: bool = True
    ) -> asyncpg.Connection:
        patience = Patience.starting_now(
            self.budget.label, self.database.pool_timeout if within is None else within
        )
        await self.budget.take(patience)
        try:
            return await self.budget.connect(
                self._connect_explained if patient else self._connect,
                _out_of_slots,
                patience=patience,
                patient=patient,
                idle=self._reuse,
            )
        except BaseException:
            self.budget.give()
            raise

    def give_back(self, conn: asyncpg.Connection, *, clean: bool) -> None:
        """Kept for the next borrower when ``clean`` (no transaction open, no lock held),
        else closed at once; either way its place is free again."""
        if clean and not self._closed and not conn.is_closed() and not conn.is_in_transaction():
            expiry = asyncio.get_running_loop().call_later(IDLE_CLOSE_S, self._expire, conn)
            self._idle.append((conn, expiry))
        else:
            conn.terminate()
        self.budget.give()

    @contextlib.asynccontextmanager
    async def connection(
        self, within: float | None = None, *, patient: bool = True
    ) -> AsyncIterator[asyncpg.Connection]:
        """A connection for the block, kept afterwards only if the block ended well."""
        conn = await self.lend(within, patient=patient)
        clean = False
        try:
            yield conn
            clean = True
        finally:
            self.give_back(conn, clean=clean)

    def use(self) -> PoolUse:
        return PoolUse(
            self.name, self.budget.in_use, len(self._idle), self.budget.size, self.budget.waiting
        )

    def retire(self) -> None:
        """Out of use after a reload: idle connections close now, lent ones when they come
        back."""
        self._closed = True
        while (conn := self._reuse()) is not None:
            conn.terminate()

    async def close(self) -> None:
        self._closed = True
        idle = []
        while (conn := self._reuse()) is not None:
            idle.append(conn)
        await asyncio.gather(*(_close(conn) for conn in idle))

    def _reuse(self) -> asyncpg.Connection | None:
        # The most recently used first: the others may then stay idle long enough to close.
        while self._idle:
            conn, expiry = self._idle.pop()
            expiry.cancel()
            if not conn.is_closed():
                return conn
        return None

    def _expire(self, conn: asyncpg.Connection) -> None:
        self._idle = [(c, expiry) for c, expiry in self._idle if c is not conn]
        conn.terminate()

    async def _connect(self) -> asyncpg.Connection:
        return await pg.open_to(self.database)

    async def _connect_explained(self) -> asyncpg.Connection:
        return await pg.connect_to(self.database)


async def _close(conn: asyncpg.Connection) -> None:
    try:
        await conn.close(timeout=CLOSE_S)
    except Exception:
        conn.terminate()


class OraclePool:
    """One Oracle source's sessions: python-oracledb's own pool, within the budget."""

    def __init__(self, name: str, config: OracleSourceConfig, backoff: Backoff) -> None:

        self.name = name
        self.database = config
        label = f"source {name.removeprefix('source:')!r}"
        self.budget = Budget(label, config.max_connections, backoff)
        self._pool: oracledb.AsyncConnectionPool | None = None
        """Made by the first session asked for: making it looks up the database's host."""

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[OracleSession]:
        from syncd.sources import oracle_session

        patience = Patience.starting_now(self.budget.label, self.database.pool_timeout)
        await self.budget.take(patience)
        try:
            if self._pool is None:
                self._pool = await oracle_session.create_oracle_pool(self.database)
            pool = self._pool
            session = await self.budget.connect(
                lambda: oracle_session.take_session(pool, self.database),
                oracle_session.out_of_sessions,
                patience=patience,
                patient=True,
            )
            try:
                yield session
            finally:
                await oracle_session.give_back_session(pool, session)
        finally:
            self.budget.give()

    def use(self) -> PoolUse:
        opened, busy = (0, 0) if self._pool is None else (self._pool.opened, self._pool.busy)
        idle = max(0, opened - busy)
        return PoolUse(self.name, self.budget.in_use, idle, self.budget.size, self.budget.waiting)

    def retire(self) -> None:
        """Nothing to do at once: the driver's pool is closed with the daemon, its sessions
        in use by runs that started before a reload must not be cut."""

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close(force=True)


class Connector(Protocol):
    """Where a run gets its connections."""

    async def take_target(self) -> asyncpg.Connection: ...

    async def give_back_target(self, conn: asyncpg.Connection, *, clean: bool) -> None:
        """``clean``: no transaction open and the sync's lock released."""
        ...

    def open_source(
        self, sync: SyncConfig, source: PostgresSourceConfig | OracleSourceConfig
    ) -> AbstractAsyncContextManager[Source]: ...


class OwnConnections:
    """A run's own connections, opened for it and closed after it: one run, ``syncd sync``."""

    def __init__(self, config: Config) -> None:
        self._config = config

    async def take_target(self) -> asyncpg.Connection:
        return await pg.connect_to(self._config.target)

    async def give_back_target(self, conn: asyncpg.Connection, *, clean: bool) -> None:
        if clean:
            await _close(conn)
        else:
            conn.terminate()

    def open_source(
        self, sync: SyncConfig, source: PostgresSourceConfig | OracleSourceConfig
    ) -> AbstractAsyncContextManager[Source]:
        return open_source(source, sync)


class Connections:
    """The daemon's pools: the target's, made at once, and each source's, when first used.
    Pools are named ``target`` and ``source:NAME``."""

    def __init__(self, config: Config, backoff: Backoff) -> None:
        self.backoff = backoff
        self.target = PostgresPool("target", config.target, backoff)
        self._postgres: dict[str, PostgresPool] = {}
        self._oracle: dict[str, OraclePool] = {}
        self._retired: list[PostgresPool | OraclePool] = []

    async def __aenter__(self) -> Connections:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pools = [self.target, *self._postgres.values(), *self._oracle.values(), *self._retired]
        await asyncio.gather(*(pool.close() for pool in pools))

    async def take_target(self) -> asyncpg.Connection:
        return await self.target.lend()

    async def give_back_target(self, conn: asyncpg.Connection, *, clean: bool) -> None:
        self.target.give_back(conn, clean=clean)

    def open_source(
        self, sync: SyncConfig, source: PostgresSourceConfig | OracleSourceConfig
    ) -> AbstractAsyncContextManager[Source]:
        name = sync.source
        if isinstance(source, OracleSourceConfig):
            from syncd.sources.oracle import open_oracle_source

            oracle = self._oracle.get(name)
            if oracle is None or oracle.database != source:
                self._retire(name)
                oracle = self._oracle[name] = OraclePool(f"source:{name}", source, self.backoff)
            return open_oracle_source(source, sync, oracle.session())
        from syncd.sources.postgres import open_postgres_source

        postgres = self._postgres.get(name)
        if postgres is None or postgres.database != source:
            self._retire(name)
            postgres = self._postgres[name] = PostgresPool(f"source:{name}", source, self.backoff)
        return open_postgres_source(source, sync, postgres.connection())

    def use(self) -> list[PoolUse]:
        pools: list[PostgresPool | OraclePool] = [self.target, *self._postgres.values()]
        return [pool.use() for pool in [*pools, *self._oracle.values()]]

    def _retire(self, name: str) -> None:
        """A reload changed the source: new connections follow the new settings."""
        retired = self._postgres.pop(name, None) or self._oracle.pop(name, None)
        if retired is not None:
            retired.retire()
            self._retired.append(retired)

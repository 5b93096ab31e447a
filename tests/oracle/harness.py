"""A PostgreSQL database dressed as Oracle, behind autospecced python-oracledb objects.

No Oracle server runs here. What does run is the Oracle source itself: its pool,
session setup, binds and fetches go through ``create_autospec`` fakes of the real
driver classes (a misspelt argument or attribute fails), and every SQL text it
sends is parsed as Oracle by sqlglot, turned into PostgreSQL and run on a real
database. The rows come back as python-oracledb would return them: Decimal
numbers, naive datetimes, IntervalYM, str for CLOBs (which may hold NULs, so
PostgreSQL keeps them as bytea), dicts with Decimal numbers for JSON.

Where Oracle and PostgreSQL differ, the fake follows Oracle and says so:

- A bind sent as DATE (set so, or a bare datetime) loses its fractional seconds.
- TIMESTAMP WITH TIME ZONE fetched without SYS_EXTRACT_UTC loses its offset: the
  driver returns the naive local time it was written in (here, Berlin).
- AS OF SCN reads an exported PostgreSQL snapshot; a forgotten SCN fails with
  ORA-08181, a real ``oracledb.DatabaseError``.
- Without fetch_decimals=True numbers come back as int or float, and without
  fetch_lobs=False LOBs come back as locators, as the driver's defaults would.
- ALL_TAB_COLUMNS, ALL_CONSTRAINTS, ALL_CONS_COLUMNS, ALL_TABLES, ALL_IND_COLUMNS
  and DUAL are real tables, filled as Oracle's dictionary would be.
- The session is what ALTER SESSION makes it, starting from a client in Germany's
  defaults: TIME_ZONE Europe/Berlin, NLS_SORT GERMAN, NLS_COMP BINARY. Text is
  ordered by NLS_SORT (GERMAN: 'a' < 'A' < 'b'; BINARY: 'A' < 'B' < 'a') and compared
  by NLS_SORT only under NLS_COMP LINGUISTIC.
- The database's time zone (DBTIMEZONE) is -05:00: a TIMESTAMP WITH LOCAL TIME ZONE
  bind's naive fields are read in it, as thin mode's are; LOCAL TIME ZONE values are
  fetched in the session's time zone.
- A cancelled fetch is answered as the driver answers it: a break, then a reset that
  takes ``reset_delay`` seconds, after which the connection is healthy again.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from unittest.mock import MagicMock, create_autospec
from zoneinfo import ZoneInfo

import asyncpg
import oracledb
import sqlglot
from sqlglot import exp

USER = "SYNCD"
HOST, HOST_ADDRESS = "crm-db", "10.0.0.15"
"""The fake database's host name in the tests' DSNs, and the address it resolves to."""
_SERIALIZED = re.compile(r"JSON_SERIALIZE\((\"[^\"]+\") RETURNING CLOB\)")
WRITERS_ZONE = ZoneInfo("Europe/Berlin")
DB_TIME_ZONE = timezone(timedelta(hours=-5))
"""DBTIMEZONE, in which Oracle reads a LOCAL TIME ZONE bind's naive fields."""
LINGUISTIC = "de-x-icu"


@dataclass
class Session:
    """What ALTER SESSION set; a new session starts from the client's defaults."""

    time_zone: str = "Europe/Berlin"
    nls_sort: str = "GERMAN"
    nls_comp: str = "BINARY"

    def apply(self, sql: str) -> None:
        for name, value in re.findall(r"(\w+)\s*=\s*'?([^'\s]+)'?", sql):
            setattr(self, name.lower(), value.upper() if name.upper() != "TIME_ZONE" else value)

    @property
    def zone(self) -> Any:
        if re.fullmatch(r"[+-]\d\d:\d\d", self.time_zone):
            hours, minutes = self.time_zone[1:].split(":")
            sign = -1 if self.time_zone[0] == "-" else 1
            return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))
        return ZoneInfo("UTC" if self.time_zone.upper() == "UTC" else self.time_zone)

    def collation(self, comparing: bool) -> str:
        linguistic = self.nls_sort != "BINARY" and (not comparing or self.nls_comp == "LINGUISTIC")
        return LINGUISTIC if linguistic else "C"


DICTIONARY_DDL = """
CREATE TABLE all_tab_columns (owner text, table_name text, column_name text,
    data_type text, data_precision numeric, data_scale numeric, column_id integer,
    nullable text);
CREATE TABLE all_constraints (owner text, constraint_name text, table_name text,
    constraint_type text);
CREATE TABLE all_cons_columns (owner text, constraint_name text, table_name text,
    column_name text, position integer);
CREATE TABLE all_tables (owner text, table_name text, num_rows numeric);
CREATE TABLE all_ind_columns (index_owner text, index_name text, table_owner text,
    table_name text, column_name text, column_position integer);
CREATE TABLE nls_database_parameters (parameter text, value text);
INSERT INTO nls_database_parameters VALUES ('NLS_NCHAR_CHARACTERSET', 'AL16UTF16');
CREATE TABLE dual (dummy text);
INSERT INTO dual VALUES ('X');
"""


def database_error(message: str, code: int = 0) -> oracledb.Error:
    """The exception python-oracledb raises for ``message``, built the way it builds it."""
    error = oracledb._Error(message, code=code)
    exception: oracledb.Error = error.exc_type(error)
    return exception


class Locator:
    """What a LOB column returns when the caller forgot fetch_lobs=False."""


@dataclass
class Declared:
    """One column as Oracle's dictionary describes it, and how PostgreSQL stores it."""

    data_type: str
    precision: int | None
    scale: int | None
    storage: str
    nullable: bool = True


_NUMBER = re.compile(r"(NUMBER|FLOAT)(?:\((\d+)(?:,\s*(-?\d+))?\))?")
_SIZED = re.compile(r"(VARCHAR2|NVARCHAR2|CHAR|NCHAR|RAW)\((\d+)\)")
_TIMESTAMP = re.compile(r"TIMESTAMP(?:\((\d)\))?( WITH (?:LOCAL )?TIME ZONE)?")
_STORAGE = {
    "BINARY_FLOAT": "real",
    "BINARY_DOUBLE": "double precision",
    "DATE": "timestamp(0)",
    "CLOB": "bytea",
    "NCLOB": "bytea",
    "BLOB": "bytea",
    "BOOLEAN": "boolean",
    "JSON": "jsonb",
    "LONG": "text",
    "LONG RAW": "bytea",
    "XMLTYPE": "xml",
}


def declare(declaration: str) -> Declared:
    """What ALL_TAB_COLUMNS says about a column declared as ``declaration``."""
    if declaration.endswith(" NOT NULL"):
        declared = declare(declaration.removesuffix(" NOT NULL"))
        return replace(declared, storage=f"{declared.storage} NOT NULL", nullable=False)
    if match := _NUMBER.fullmatch(declaration):
        kind, precision, scale = match[1], match[2], match[3]
        p = None if precision is None else int(precision)
        s = int(scale) if scale is not None else (0 if p is not None and kind == "NUMBER" else None)
        storage = "numeric" if p is None or kind == "FLOAT" else f"numeric({p},{max(s or 0, 0)})"
        return Declared(kind, p, s, storage)
    if match := _SIZED.fullmatch(declaration):
        kind, size = match[1], match[2]
        # Stored in the database's default collation; each query sorts and compares
        # text the way its session's NLS settings say.
        storage = "bytea" if kind == "RAW" else 'text COLLATE "default"'
        if kind in ("CHAR", "NCHAR"):
            storage = f'char({size}) COLLATE "default"'
        return Declared(kind, None, None, storage)
    if match := _TIMESTAMP.fullmatch(declaration):
        digits, zone = int(match[1] or 6), match[2] or ""
        storage = "timestamptz" if zone else f"timestamp({min(digits, 6)})"
        return Declared(f"TIMESTAMP({digits}){zone}", None, digits, storage)
    if declaration.startswith("INTERVAL"):
        return Declared(declaration, None, None, "interval")
    return Declared(declaration, None, None, _STORAGE[declaration])


@dataclass
class Statement:
    """One execute the source made: its SQL, binds, input sizes and fetch flags."""

    sql: str
    binds: dict[str, Any]
    sizes: dict[str, Any]
    fetch_lobs: bool | None
    fetch_decimals: bool | None
    arraysize: int
    prefetchrows: int
    outputtypehandler: Any
    rows_returned: int = 0
    """The rows the server produced for it, whether or not they were fetched."""


@dataclass
class FakeOracle:
    dsn: str
    tables: dict[tuple[str, str], dict[str, Declared]] = field(default_factory=dict)
    statements: list[Statement] = field(default_factory=list)
    session: list[str] = field(default_factory=list)
    pools: list[MagicMock] = field(default_factory=list)
    connections: list[MagicMock] = field(default_factory=list)
    pool_arguments: list[dict[str, Any]] = field(default_factory=list)
    healthy: bool = True
    """What is_healthy() answers."""
    clock: datetime | None = None
    """What SYSTIMESTAMP says, when a test sets the time; else the real time."""
    os_zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("America/New_York"))
    """The server's operating system zone: SYSTIMESTAMP's, and so SYSDATE's."""
    reset_delay: float = 0.0
    """How long the driver's reset after a cancelled call takes (a break, then a wait)."""
    session_state: Session = field(default_factory=Session)
    fetch_gate: asyncio.Event | None = None
    """When set, fetches wait for it, as a slow network would."""
    fetch_waiting: asyncio.Event = field(default_factory=asyncio.Event)
    before_execute: Callable[[str], None] | None = None
    """Called with each SQL text first; may raise, as Oracle would."""
    answer: Callable[[str], Awaitable[list[tuple[Any, ...]] | None]] | None = None
    """Answers a statement in the database's place when it gives rows (None: the database
    answers): for SQL that PostgreSQL cannot run, such as STANDARD_HASH."""
    acquire_error: Exception | None = None
    """Raised by pool.acquire(), as a refused connection or login would be."""
    acquire_gate: asyncio.Event | None = None
    """When set, pool.acquire() waits for it, as a listener that never answers would."""
    _conn: asyncpg.Connection | None = None
    _busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    _snapshots: dict[int, tuple[asyncpg.Connection, str]] = field(default_factory=dict)
    _translated: dict[str, tuple[exp.Expression, str, list[str]]] = field(default_factory=dict)

    async def start(self) -> None:
        self._conn = await _connect(self.dsn)
        await self._conn.execute(DICTIONARY_DDL)

    async def close(self) -> None:
        await self.expire_snapshots()
        if self._conn is not None:
            await self._conn.close()

    @property
    def conn(self) -> asyncpg.Connection:
        assert self._conn is not None
        return self._conn

    def install(self, monkeypatch: Any) -> None:
        """Make ``oracledb.create_pool_async`` hand out pools onto this database, and the
        name of its host resolve to HOST_ADDRESS."""
        create_pool = create_autospec(oracledb.create_pool_async, spec_set=True)
        create_pool.side_effect = self._create_pool
        monkeypatch.setattr(oracledb, "create_pool_async", create_pool)
        resolve = socket.getaddrinfo

        def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
            if host == HOST:
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (HOST_ADDRESS, 1521))]
            return resolve(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    async def create_table(
        self,
        name: str,
        columns: dict[str, str],
        primary_key: list[str] | None = None,
        owner: str = "CRM",
        num_rows: int | None = None,
        indexes: Sequence[Sequence[str]] | None = None,
    ) -> str:
        """Create ``owner.name`` with Oracle column declarations; returns its quoted name.

        ``indexes`` lists the table's indexes by their columns, the primary key's among
        them; by default every column leads an index of its own, as if the table were
        indexed for whatever a test reads it by.
        """
        declared = {column: declare(text) for column, text in columns.items()}
        self.tables[(owner, name)] = declared
        quoted = f'"{owner}"."{name}"'
        definitions = [f'"{c}" {d.storage}' for c, d in declared.items()]
        if primary_key:
            definitions.append("PRIMARY KEY (" + ", ".join(f'"{k}"' for k in primary_key) + ")")
        await self.conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{owner}"')
        await self.conn.execute(f"CREATE TABLE {quoted} ({', '.join(definitions)})")
        await self.conn.executemany(
            "INSERT INTO all_tab_columns VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            [
                (
                    owner,
                    name,
                    column,
                    d.data_type,
                    d.precision,
                    d.scale,
                    i,
                    "N" if not d.nullable or column in (primary_key or ()) else "Y",
                )
                for i, (column, d) in enumerate(declared.items(), 1)
            ],
        )
        if primary_key:
            constraint = f"PK_{name}"
            await self.conn.execute(
                "INSERT INTO all_constraints VALUES ($1, $2, $3, 'P')", owner, constraint, name
            )
            await self.conn.executemany(
                "INSERT INTO all_cons_columns VALUES ($1, $2, $3, $4, $5)",
                [(owner, constraint, name, k, i) for i, k in enumerate(primary_key, 1)],
            )
        await self.conn.execute("INSERT INTO all_tables VALUES ($1, $2, $3)", owner, name, num_rows)
        if indexes is None:
            indexes = [[column] for column in declared]
        await self.conn.executemany(
            "INSERT INTO all_ind_columns VALUES ($1, $2, $1, $3, $4, $5)",
            [
                (owner, f"IX_{name}_{i}", name, column, position)
                for i, columns in enumerate(indexes)
                for position, column in enumerate(columns, 1)
            ],
        )
        return quoted

    async def expire_snapshots(self) -> None:
        """Forget every SCN handed out, as undo retention eventually does: between two
        statements, so that each fails as Oracle's would, at its start."""
        async with self._busy:
            for exporter, _ in self._snapshots.values():
                await exporter.close()
            self._snapshots.clear()

    # -- the driver's side --------------------------------------------------------------

    def _create_pool(self, dsn: str | None = None, **arguments: Any) -> MagicMock:
        self.pool_arguments.append({"dsn": dsn, **arguments})
        pool = create_autospec(oracledb.AsyncConnectionPool, spec_set=True, instance=True)
        callback = arguments.get("session_callback")
        pool.acquire.side_effect = lambda *args, **kwargs: self._acquire(callback)
        self.pools.append(pool)
        return pool

    async def _acquire(self, session_callback: Any) -> MagicMock:
        if self.acquire_error is not None:
            raise self.acquire_error
        if self.acquire_gate is not None:
            await self.acquire_gate.wait()
        conn = create_autospec(oracledb.AsyncConnection, spec_set=True, instance=True)
        self.connections.append(conn)
        self.session_state = Session()
        conn.cursor.side_effect = self._cursors()
        conn.is_healthy.side_effect = lambda: self.healthy
        conn.version = "23.6.0.24.10"
        if session_callback is not None:
            await session_callback(conn, None)
        return conn

    def _cursors(self) -> Callable[..., MagicMock]:
        """conn.cursor(): one autospecced cursor per connection (building one is slow),
        fresh each time it is opened."""
        cursor = create_autospec(oracledb.AsyncCursor, spec_set=True, instance=True)
        cursor.__enter__.return_value = cursor
        sizes: dict[str, Any] = {}
        rows: list[tuple[Any, ...]] = []

        def open_cursor(scrollable: bool = False) -> MagicMock:
            sizes.clear()
            rows.clear()
            cursor.arraysize, cursor.prefetchrows, cursor.outputtypehandler = 100, 2, None
            return cursor

        def setinputsizes(*args: Any, **kwargs: Any) -> dict[str, Any]:
            sizes.update(kwargs)
            return kwargs

        async def execute(
            statement: str,
            parameters: dict[str, Any] | None = None,
            *,
            suspend_on_success: bool = False,
            fetch_lobs: bool | None = None,
            fetch_decimals: bool | None = None,
            **keyword_parameters: Any,
        ) -> None:
            binds = dict(parameters or {}, **keyword_parameters)
            self.statements.append(
                Statement(
                    statement,
                    binds,
                    dict(sizes),
                    fetch_lobs,
                    fetch_decimals,
                    cursor.arraysize,
                    cursor.prefetchrows,
                    cursor.outputtypehandler,
                )
            )
            if self.before_execute is not None:
                self.before_execute(statement)
            answered = None if self.answer is None else await self.answer(statement)
            if answered is None:
                answered = await self._run(
                    statement, binds, dict(sizes), fetch_lobs, fetch_decimals
                )
            rows[:] = answered
            self.statements[-1].rows_returned = len(rows)
            sizes.clear()

        async def fetchmany(size: int | None = None) -> list[tuple[Any, ...]]:
            if self.fetch_gate is not None:
                self.fetch_waiting.set()
                try:
                    await self.fetch_gate.wait()
                except asyncio.CancelledError:
                    # The driver sends a break and waits for the server's reset before
                    # it lets the cancellation through; the connection stays usable.
                    await asyncio.sleep(self.reset_delay)
                    raise
            count = cursor.arraysize if size is None else size
            batch, rows[:] = rows[:count], rows[count:]
            return batch

        async def fetchall() -> list[tuple[Any, ...]]:
            batch, rows[:] = rows[:], []
            return batch

        cursor.setinputsizes.side_effect = setinputsizes
        cursor.execute.side_effect = execute
        cursor.fetchmany.side_effect = fetchmany
        cursor.fetchall.side_effect = fetchall
        return open_cursor

    # -- Oracle SQL on PostgreSQL -------------------------------------------------------

    async def _run(
        self,
        sql: str,
        binds: dict[str, Any],
        sizes: dict[str, Any],
        fetch_lobs: bool | None,
        fetch_decimals: bool | None,
    ) -> list[tuple[Any, ...]]:
        if sql.startswith("ALTER SESSION"):
            self.session.append(sql)
            self.session_state.apply(sql)
            return []
        tree, pg_sql, names = self._translate(sql)
        if any(t.name == "V$DATABASE" for t in tree.find_all(exp.Table)):
            return [(Decimal(await self._new_scn()),)]
        args = [_as_bound(binds[name], sizes.get(name)) for name in names]
        zone = self.session_state.zone
        table = tree.find(exp.Table)
        version = table.args.get("version") if table is not None else None
        scn = None if version is None else int(binds[version.expression.name])
        # A server finishes a query its client stopped waiting for; so does this one,
        # rather than leave its PostgreSQL connection mid-transaction.
        records = await asyncio.shield(self._server_side(pg_sql, args, scn))
        declared = self._output_types(tree)
        return [
            tuple(
                _as_fetched(value, kind, fetch_lobs, fetch_decimals, zone)
                for value, kind in zip(record, declared, strict=True)
            )
            for record in records
        ]

    def _translate(self, sql: str) -> tuple[exp.Expression, str, list[str]]:
        session = self.session_state
        cache_key = f"{session.nls_sort}/{session.nls_comp}/{self.clock}/{self.os_zone}/{sql}"
        if cache_key not in self._translated:
            # sqlglot reads JSON_SERIALIZE without its RETURNING clause; a CLOB is text.
            tree = sqlglot.parse_one(_SERIALIZED.sub(r"JSON_SERIALIZE(\1)", sql), read="oracle")
            names: list[str] = []
            texts = self._text_columns(tree)

            def collated(node: exp.Expression, comparing: bool) -> exp.Expression:
                if isinstance(node, exp.Column) and node.name in texts:
                    collation = exp.Identifier(this=session.collation(comparing), quoted=True)
                    return exp.Collate(this=node.copy(), expression=collation)
                return node

            def systimestamp() -> exp.Expression:
                if self.clock is None:
                    return exp.Anonymous(this="clock_timestamp")
                moment = exp.Literal.string(self.clock.isoformat())
                return exp.Cast(this=moment, to=exp.DataType.build("timestamptz"))

            def to_postgres(node: exp.Expression) -> exp.Expression:
                if isinstance(node, exp.Placeholder):
                    if node.name not in names:
                        names.append(node.name)
                    return exp.Parameter(this=exp.Literal.number(names.index(node.name) + 1))
                if isinstance(node, exp.Table) and node.args.get("version") is not None:
                    node = node.copy()
                    node.set("version", None)
                    return node
                if isinstance(node, exp.Anonymous) and node.name.upper() == "SYS_EXTRACT_UTC":
                    value = node.expressions[0].transform(to_postgres)
                    return exp.AtTimeZone(this=value, zone=exp.Literal.string("UTC"))
                if isinstance(node, exp.Anonymous) and node.name.upper() == "JSON_SERIALIZE":
                    value = node.expressions[0].transform(to_postgres)
                    return exp.Cast(this=value, to=exp.DataType.build("text"))
                if isinstance(node, exp.Anonymous) and node.name.upper() == "SYS_CONTEXT":
                    return exp.Literal.string(USER)
                if isinstance(node, exp.Cast) and node.to.this == exp.DataType.Type.TIMESTAMPLTZ:
                    return exp.Cast(
                        this=node.this.transform(to_postgres),
                        to=exp.DataType.build("timestamptz"),
                    )
                if type(node).__name__ == "Systimestamp":
                    return systimestamp()
                if (
                    isinstance(node, exp.Cast)
                    and type(node.this).__name__ == "Systimestamp"
                    and node.to.this == exp.DataType.Type.TIMESTAMP
                ):
                    # The offset dropped: the wall time of the server's own zone.
                    zone = exp.Literal.string(self.os_zone.key)
                    return exp.AtTimeZone(this=systimestamp(), zone=zone)
                # A node returned new is not visited again: its children are done here.
                if isinstance(node, exp.Ordered):
                    node = node.copy()
                    node.set("this", collated(node.this.transform(to_postgres), comparing=False))
                    return node
                if isinstance(node, exp.GT | exp.GTE | exp.LT | exp.LTE | exp.EQ | exp.NEQ):
                    node = node.copy()
                    node.set("this", collated(node.this.transform(to_postgres), comparing=True))
                    node.set("expression", node.expression.transform(to_postgres))
                    return node
                return node

            pg_tree = tree.copy().transform(to_postgres)
            self._translated[cache_key] = (tree, pg_tree.sql(dialect="postgres"), names)
        return self._translated[cache_key]

    def _text_columns(self, tree: exp.Expression) -> set[str]:
        table = tree.find(exp.Table)
        if table is None:
            return set()
        declared = self.tables.get((table.db or USER, table.name), {})
        return {name for name, d in declared.items() if "COLLATE" in d.storage}

    def _output_types(self, tree: exp.Expression) -> list[Declared | None]:
        table = tree.find(exp.Table)
        declared: dict[str, Declared] = {}
        if table is not None:
            declared = self.tables.get((table.db or USER, table.name), {})
        return [
            declared.get(column.name) if isinstance(column, exp.Column) else None
            for column in tree.expressions
        ]

    async def _new_scn(self) -> int:
        exporter = await _connect(self.dsn)
        await exporter.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = await exporter.fetchval("SELECT pg_export_snapshot()")
        scn = 7_000_000 + len(self._snapshots) + 1
        self._snapshots[scn] = (exporter, snapshot)
        return scn

    async def _server_side(self, sql: str, args: list[Any], scn: int | None) -> list[Any]:
        async with self._busy:
            if scn is None:
                return await self.conn.fetch(sql, *args)
            if scn not in self._snapshots:
                raise database_error(
                    "ORA-08181: specified number is not a valid system change number", 8181
                )
            async with self.conn.transaction(isolation="repeatable_read", readonly=True):
                await self.conn.execute(f"SET TRANSACTION SNAPSHOT '{self._snapshots[scn][1]}'")
                return await self.conn.fetch(sql, *args)


async def _connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec(
        "interval", schema="pg_catalog", encoder=None, decoder=tuple, format="tuple"
    )
    return conn


def _as_bound(value: Any, size: Any) -> Any:
    """A bind value as Oracle sees it, given the type it was bound as."""
    if isinstance(value, datetime):
        if size is None or size is oracledb.DB_TYPE_DATE:
            return value.replace(microsecond=0)
        if size is oracledb.DB_TYPE_TIMESTAMP_TZ:
            # A naive value is sent with offset zero; an aware one with its own.
            return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        if size is oracledb.DB_TYPE_TIMESTAMP_LTZ:
            # Thin mode sends the naive fields, which Oracle reads in DBTIMEZONE.
            return value.replace(tzinfo=DB_TIME_ZONE)
    return value


def _as_fetched(
    value: Any,
    declared: Declared | None,
    fetch_lobs: bool | None,
    fetch_decimals: bool | None,
    session_zone: Any,
) -> Any:
    """A PostgreSQL value as python-oracledb would return the Oracle column's value."""
    if value is None or declared is None:
        return value
    kind = declared.data_type
    if kind in ("CLOB", "NCLOB", "BLOB") and fetch_lobs is not False:
        return Locator()
    if kind in ("CLOB", "NCLOB"):
        return bytes(value).decode()
    if kind in ("NUMBER", "FLOAT") and fetch_decimals is not True:
        return int(value) if value == value.to_integral_value() else float(value)
    if kind.endswith("WITH TIME ZONE"):
        zone = session_zone if "LOCAL" in kind else WRITERS_ZONE
        return value.astimezone(zone).replace(tzinfo=None)
    if kind.startswith("INTERVAL YEAR"):
        years, months = divmod(abs(value[0]), 12)
        sign = -1 if value[0] < 0 else 1
        return oracledb.IntervalYM(sign * years, sign * months)
    if kind.startswith("INTERVAL DAY"):
        return timedelta(days=value[1], microseconds=value[2])
    if kind == "JSON":
        return json.loads(value, parse_float=Decimal, parse_int=Decimal)
    return value


@asynccontextmanager
async def fake_oracle(dsn: str, monkeypatch: Any) -> AsyncIterator[FakeOracle]:
    """A FakeOracle on ``dsn``, installed as the driver for as long as the context lasts."""
    fake = FakeOracle(dsn)
    await fake.start()
    fake.install(monkeypatch)
    try:
        yield fake
    finally:
        await fake.close()

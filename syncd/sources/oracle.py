"""An Oracle source: python-oracledb's asyncio thin driver, reading keyset batches.

Each batch is one keyset query (``oracle_sql``) on a described table (``oracle_describe``),
through a session whose every call is bounded (``oracle_session``). A time cursor is read
only up to the database's own clock less the sync's ``lag``, which gives a transaction
that has stamped a row but not yet committed that long before the keyset moves
past it. A full pass may instead read at one system change number, kept in the
checkpoint so that a resumed pass sees the same data.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import oracledb
import structlog

from syncd import clock
from syncd.config import DATABASE_TIME_ZONE, OracleSourceConfig, SyncConfig
from syncd.errors import SourceError
from syncd.identifiers import TableName
from syncd.sources import Batch, Limits, LoadPlan, Position, RecordBatch, Shape, Window
from syncd.sources.oracle_describe import Described, Keyset, describe_table, int_or_none
from syncd.sources.oracle_plan import split_keys
from syncd.sources.oracle_session import (
    OracleSession,
    ScnNotGranted,
    oracle_connection,
    oracle_errors,
)
from syncd.sources.oracle_sql import (
    CLOCK_SQL,
    NUM_ROWS_SQL,
    SCN_SQL,
    WALL_CLOCK_SQL,
    Binds,
    Bounds,
    batch_sql,
    catalogue_binds,
    newest_sql,
    null_cursors_sql,
)
from syncd.sources.oracle_types import RowReader, bind_value, json_text_unparsed, position_text
from syncd.verify.oracle_side import OracleSide, OracleTable
from syncd.verify.sides import Side

log = structlog.get_logger("syncd.sources.oracle")

FETCH_ROWS = 1000
"""Rows fetched per round trip: what the driver holds at once, whatever the batch size."""


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


class OracleSource:
    def __init__(
        self, session: OracleSession, sync: SyncConfig, config: OracleSourceConfig
    ) -> None:
        self._session = session
        self._sync = sync
        self._source = config
        self._table = TableName.parse(sync.table or "")
        self._described: Described | None = None

    async def null_cursors(self) -> int:
        described = await self._ensure_described()
        relation = described.keysets[False].relation
        if relation.cursor is None:
            return 0
        rows = await self._session.query(null_cursors_sql(relation), reading=str(self._table))
        return int_or_none(rows[0][0]) or 0

    async def newest_cursor(self) -> str | None:
        described = await self._ensure_described()
        relation = described.keysets[False].relation
        if relation.cursor is None:
            return None
        rows = await self._session.query(newest_sql(relation), reading=str(self._table))
        newest = rows[0][0] if rows else None
        return None if newest is None else position_text(newest)

    async def comparison(self) -> Side:
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
        return OracleSide(self._session.query, table, str(self._table))

    @asynccontextmanager
    async def load_plan(self, rows_per_chunk: int) -> AsyncIterator[LoadPlan]:
        """Plan a parallel load AS OF the current SCN: the newest cursor value then, and key
        ranges of about ``rows_per_chunk`` rows. Nothing is held open for it: chunks read AS
        OF the SCN for as long as undo retention keeps it, and at a fresh one after that.

        A user who may not read at an SCN (no FLASHBACK, or no V$DATABASE) still gets a
        parallel load, each chunk read when it is claimed, as a pass without ``snapshot: scn``
        reads each batch: what changes meanwhile is read again from the cursor value.
        """
        described = await self._ensure_described()
        try:
            plan = await self._plan(described, await self._current_scn(), rows_per_chunk)
        except ScnNotGranted as exc:
            if self._sync.snapshot == "scn":
                raise  # asked to read at an SCN, it must not quietly read without one
            log.warning("load_without_snapshot", reason=str(exc))
            plan = await self._plan(described, None, rows_per_chunk)
        yield plan

    async def _plan(self, described: Described, scn: str | None, rows_per_chunk: int) -> LoadPlan:
        at_scn: Binds = {} if scn is None else {"scn": (int(scn), oracledb.DB_TYPE_NUMBER)}
        # The cursor value first: without an SCN, rows that change while the keys are
        # split are then read again after the load.
        since = await self._newest_at(described, at_scn, scn)
        bounds = await split_keys(
            partial(self._query, binds=at_scn, scn=scn),
            described,
            scn is not None,
            rows_per_chunk,
            await self.estimate_rows(Window()),
        )
        return LoadPlan(bounds=bounds, since=since, snapshot=scn)

    async def _newest_at(self, described: Described, at_scn: Binds, scn: str | None) -> str | None:
        """The newest cursor value AS OF ``scn``, below the clock less ``lag`` as every
        read is: a row stamped later, or in the future, is read after the load."""
        relation = described.keysets[False].relation
        if relation.cursor is None or described.cursor_bind is None:
            return None
        binds = dict(at_scn)
        if described.cursor_is_time:
            binds["before"] = (await self._before(described), described.cursor_bind)
        sql = newest_sql(relation, scn=scn is not None, before="before" in binds)
        rows = await self._query(sql, binds, scn)
        newest = rows[0][0] if rows else None
        return None if newest is None else position_text(newest)

    async def _query(self, sql: str, binds: Binds, scn: str | None) -> list[Any]:
        """One query of the table and all its rows, each bind as its own type; AS OF
        ``scn`` when the SQL says so."""
        return await self._session.query(
            sql,
            {name: value for name, (value, _) in binds.items()},
            types={name: bind for name, (_, bind) in binds.items()},
            reading=str(self._table),
            scn=scn,
        )

    def abort(self) -> None:
        # Its calls unwind within RESET_S on their own; the session must not be reused.
        self._session.abandoned = True

    async def describe(self) -> Shape:
        return (await self._ensure_described()).shape

    async def _ensure_described(self) -> Described:
        if self._described is None:
            self._described = await describe_table(
                self._session, self._table, self._sync, self._source
            )
        return self._described

    async def estimate_rows(self, window: Window) -> int | None:
        """The optimizer's row count for a whole pass; other windows are not guessed at."""
        if window != Window():
            return None
        rows = await self._session.query(
            NUM_ROWS_SQL, catalogue_binds(self._table), reading="ALL_TABLES"
        )
        return int_or_none(rows[0][0]) if rows else None

    async def read(self, window: Window, limits: Limits) -> AsyncGenerator[Batch, None]:
        described = await self._ensure_described()
        keyset = described.keysets[window.by_key]
        cursor_bind = described.cursor_bind or keyset.binds[0]
        fixed: Binds = {}
        if window.until is not None:
            fixed |= self._position_binds("until", window.until, keyset)
        if described.cursor_is_time and not window.by_key:
            fixed["before"] = (await self._before(described), cursor_bind)
        # A chunk of a parallel load reads at the load's SCN, whatever the sync's setting.
        scn = window.snapshot
        if scn is None and self._sync.snapshot == "scn":
            scn = await self._current_scn()
        if scn is not None:
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
            with oracle_errors(self._session.user, reading, scn):
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
                        with oracle_errors(self._session.user, reading, scn):
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

    async def _before(self, described: Described) -> datetime:
        """How far a time cursor is read: the database's clock less the sync's ``lag``."""
        return await self._now(described.zone_less) - (self._sync.lag or timedelta())

    async def _now(self, zone_less: bool) -> datetime:
        """The database's 'now' as the cursor counts time: an instant in UTC for a zoned
        cursor; for a zone-less one, the wall clock of the zone it is written in."""
        zone = self._source.cursor_time_zone
        if zone_less and zone == DATABASE_TIME_ZONE:
            ((wall,),) = await self._session.query(WALL_CLOCK_SQL, reading="DUAL")
            return wall  # type: ignore[no-any-return]
        ((utc,),) = await self._session.query(CLOCK_SQL, reading="DUAL")
        now = utc.replace(tzinfo=UTC)
        if not zone_less:
            return now  # type: ignore[no-any-return]
        # Without a zone, the cursor is taken to be UTC (and lag was refused).
        return clock.wall_now(ZoneInfo(zone or "UTC"), now)

    async def _current_scn(self) -> str:
        (scn,) = (await self._session.query(SCN_SQL, reading="V$DATABASE"))[0]
        return str(int(scn))

    def _position_binds(self, name: str, position: Position, keyset: Keyset) -> Binds:
        if len(position) != len(keyset.binds):
            raise SourceError(
                f"the saved position has {len(position)} values but the sync orders by"
                f" {len(keyset.binds)} columns; the key or cursor changed: reset the sync"
            )
        return {
            f"{name}{i}": (None if text is None else bind_value(text, bind), bind)
            for i, (text, bind) in enumerate(zip(position, keyset.binds, strict=True), 1)
        }


def _row_bytes(row: Sequence[Any]) -> int:
    """About what a fetched row takes: its text and binary values, and a word for others."""
    return sum(len(value) if isinstance(value, str | bytes) else 8 for value in row)

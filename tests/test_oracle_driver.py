"""How the Oracle source uses python-oracledb, checked against the driver's real signatures.

The pool, connections and cursors are ``create_autospec(..., spec_set=True)`` fakes
of the real classes (tests/oracle/harness.py), so a misspelt argument or attribute
fails here. Errors are real ``oracledb`` exceptions, built as the driver builds them.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from unittest.mock import ANY, create_autospec

import asyncpg
import oracledb
import pytest
import sqlglot

from syncd import retry
from syncd.config import Config, OracleSourceConfig
from syncd.errors import SourceError
from syncd.retry import Retryable
from syncd.sources import Limits, SnapshotExpired, Window, check_source, open_source, oracle_session
from syncd.sources.oracle_session import KEEPALIVE_MINUTES, classify
from syncd.sources.oracle_sql import CLOCK_SQL
from syncd.sources.oracle_types import (
    RowReader,
    bind_value,
    json_text_unparsed,
    oracle_type,
    position_text,
)
from tests.oracle.harness import FakeOracle, database_error, fake_oracle

SOURCES = {
    "crm": {"kind": "oracle", "dsn": "crm-db:1521/FREEPDB1", "user": "SYNCD", "password": "pw"}
}
OPPORTUNITIES = {
    "OPPORTUNITY_ID": "NUMBER(12)",
    "LAST_UPDATE_DATE": "DATE",
    "UPDATED_AT": "TIMESTAMP(6)",
    "CLOSED_AT": "TIMESTAMP(6) WITH TIME ZONE",
    "AMOUNT": "NUMBER(14,2)",
    "NOTES": "CLOB",
}


@pytest.fixture
async def oracle(db: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOracle]:
    async with fake_oracle(db, monkeypatch) as fake:
        await fake.create_table("OPPORTUNITIES", OPPORTUNITIES, primary_key=["OPPORTUNITY_ID"])
        await fake.conn.execute(
            """INSERT INTO "CRM"."OPPORTUNITIES"
               SELECT n, timestamp '2025-01-01' + n * interval '1 second',
                      timestamp '2025-01-01 00:00:00.25' + n * interval '1 second',
                      timestamptz '2025-01-01 00:00:00.75+00' + n * interval '1 second',
                      n * 1.25, convert_to('note ' || n, 'UTF8')
                 FROM generate_series(1, 5) AS n"""
        )
        yield fake


def configure(make_config: Any, **spec: Any) -> Config:
    sync = {"source": "crm", "table": "CRM.OPPORTUNITIES", "target_table": "public.opps"}
    config, _ = make_config({"opps": sync | spec}, sources=SOURCES)
    return config


async def read_all(config: Config, window: Window, batch_size: int) -> list[Any]:
    async with open_source(config.sources["crm"], config.syncs["opps"]) as source:
        return [batch async for batch in source.read(window, Limits(batch_size, 10**9))]


# -- the pool and the session ------------------------------------------------------------


async def test_the_pool_lends_prepared_sessions_named_syncd(
    oracle: FakeOracle, make_config: Any
) -> None:
    config = configure(make_config, cursor="UPDATED_AT")

    await read_all(config, Window(), 10)

    assert oracle.pool_arguments == [
        {
            "dsn": "10.0.0.15:1521/FREEPDB1",  # crm-db, looked up beforehand
            "user": "SYNCD",
            "password": "pw",
            "min": 0,
            "max": 4,  # the source's max_connections; a run of its own takes one
            "increment": 1,
            "getmode": oracledb.POOL_GETMODE_TIMEDWAIT,
            "wait_timeout": 10_000,  # the source's connect_timeout
            "session_callback": ANY,
            "program": "syncd",
            "tcp_connect_timeout": 10.0,
            "expire_time": KEEPALIVE_MINUTES,
        }
    ]
    assert len(oracle.session) == 1, "the session is prepared once"
    (conn,) = oracle.connections
    assert conn.call_timeout == 600_000  # the source's statement_timeout, 10 minutes
    pool = oracle.pools[0]
    pool.release.assert_awaited_once_with(conn)
    pool.drop.assert_not_awaited()
    pool.close.assert_awaited_once_with(force=True)


@pytest.mark.parametrize("healthy", [True, False])
async def test_after_an_error_the_connection_is_dropped_unless_healthy(
    oracle: FakeOracle, make_config: Any, healthy: bool
) -> None:
    config = configure(make_config, cursor="UPDATED_AT")

    def time_out(sql: str) -> None:
        if "FETCH FIRST" in sql:
            oracle.healthy = healthy
            raise database_error("DPY-4024: call timeout of 300000 ms exceeded")

    oracle.before_execute = time_out
    with pytest.raises(Retryable, match="DPY-4024"):
        await read_all(config, Window(), 10)

    (pool,), (conn,) = oracle.pools, oracle.connections
    (pool.release if healthy else pool.drop).assert_awaited_once_with(conn)
    (pool.drop if healthy else pool.release).assert_not_awaited()
    pool.close.assert_awaited_once_with(force=True)


# -- binds, fetch settings, the SQL sent -------------------------------------------------


@pytest.mark.parametrize(
    ("cursor", "bind", "position"),
    [
        ("LAST_UPDATE_DATE", oracledb.DB_TYPE_DATE, datetime(2025, 1, 1, 0, 0, 2)),
        ("UPDATED_AT", oracledb.DB_TYPE_TIMESTAMP, datetime(2025, 1, 1, 0, 0, 2, 250000)),
        ("CLOSED_AT", oracledb.DB_TYPE_TIMESTAMP_TZ, datetime(2025, 1, 1, 0, 0, 2, 750000, UTC)),
    ],
)
async def test_each_position_is_bound_with_its_columns_own_type(
    oracle: FakeOracle, make_config: Any, cursor: str, bind: Any, position: datetime
) -> None:
    config, _ = make_config(
        {"opps": {"source": "crm", "table": "CRM.OPPORTUNITIES", "target_table": "public.opps"}
         | {"cursor": cursor, "lag": "30s"}},
        sources={"crm": SOURCES["crm"] | {"cursor_time_zone": "UTC"}},
    )  # fmt: skip

    batches = await read_all(config, Window(), 2)

    assert [b.rows for b in batches] == [2, 2, 1]
    first, second = [s for s in oracle.statements if "OPPORTUNITIES" in s.sql][:2]
    assert first.sizes == {"before": bind}
    assert second.sizes == {"after1": bind, "after2": oracledb.DB_TYPE_NUMBER, "before": bind}
    assert second.binds["after1"] == position
    assert second.binds["after2"] == Decimal(2)
    clocks = [s for s in oracle.statements if s.sql == CLOCK_SQL]
    assert len(clocks) == 1, "the clock is read once a pass, not once a batch"
    now = datetime.now(UTC)
    if position.tzinfo is None:  # a zone-less cursor's 'now' is the wall clock of its zone
        now = now.replace(tzinfo=None)
    assert now - timedelta(seconds=40) < second.binds["before"] < now - timedelta(seconds=20)
    for statement in (first, second):
        assert (statement.fetch_lobs, statement.fetch_decimals) == (False, True)
        assert (statement.arraysize, statement.prefetchrows) == (2, 3)
        assert statement.outputtypehandler is json_text_unparsed


async def test_a_time_zone_column_is_selected_in_utc_and_arrives_aware(
    oracle: FakeOracle, make_config: Any
) -> None:
    config = configure(make_config, cursor="CLOSED_AT")

    (batch,) = await read_all(config, Window(), 10)

    query = next(s.sql for s in oracle.statements if "OPPORTUNITIES" in s.sql)
    assert 'SYS_EXTRACT_UTC("CLOSED_AT")' in query
    closed_at = batch.records[0][3]
    assert closed_at == datetime(2025, 1, 1, 0, 0, 1, 750000, tzinfo=UTC)
    assert batch.end == ("2025-01-01 00:00:05.750000", "5")


async def test_a_saved_position_is_bound_typed_never_as_its_text(
    oracle: FakeOracle, make_config: Any
) -> None:
    config = configure(make_config, cursor="UPDATED_AT")

    (batch,) = await read_all(config, Window(after=("2025-01-01 00:00:03.250000", "3")), 10)

    assert batch.rows == 2
    (query,) = (s for s in oracle.statements if "OPPORTUNITIES" in s.sql)
    assert query.binds["after1"] == datetime(2025, 1, 1, 0, 0, 3, 250000)
    assert query.binds["after2"] == Decimal(3)


async def test_a_lookback_window_is_bound_as_the_cursor_less_the_lookback(
    oracle: FakeOracle, make_config: Any
) -> None:
    config = configure(make_config, cursor="LAST_UPDATE_DATE", lookback="2s")
    position = ("2025-01-01 00:00:04.000000", "4")

    window = Window(cursor_from=position[0], lookback=timedelta(seconds=2), until=position)
    (batch,) = await read_all(config, window, 10)

    assert [record[0] for record in batch.records] == [2, 3, 4]
    (query,) = (s for s in oracle.statements if "OPPORTUNITIES" in s.sql)
    assert query.binds["since"] == datetime(2025, 1, 1, 0, 0, 2)
    assert query.sizes["since"] is oracledb.DB_TYPE_DATE
    assert (query.sizes["until1"], query.sizes["until2"]) == (
        oracledb.DB_TYPE_DATE,
        oracledb.DB_TYPE_NUMBER,
    )


async def test_estimate_comes_from_the_optimizer_statistics(
    oracle: FakeOracle, conn: asyncpg.Connection, make_config: Any
) -> None:
    await conn.execute("UPDATE all_tables SET num_rows = 4200 WHERE table_name = 'OPPORTUNITIES'")
    config = configure(make_config)

    async with open_source(config.sources["crm"], config.syncs["opps"]) as source:
        assert await source.estimate_rows(Window()) == 4200
        assert await source.estimate_rows(Window(after=("1",))) is None


# -- describing the table ----------------------------------------------------------------


async def test_names_become_lower_case_in_the_target_unless_oracle_kept_their_case(
    oracle: FakeOracle, make_config: Any
) -> None:
    await oracle.create_table(
        "Quoted", {"ID": "NUMBER(9)", "Mixed Case": "VARCHAR2(9)", "DOLLAR$": "DATE"}, ["ID"]
    )
    config = configure(make_config, table='CRM."Quoted"')

    async with open_source(config.sources["crm"], config.syncs["opps"]) as source:
        shape = await source.describe()

    assert [(c.name, c.target_name, c.pg_type) for c in shape.columns] == [
        ("ID", "id", "integer"),
        ("Mixed Case", "Mixed Case", "text"),
        ("DOLLAR$", "dollar$", "timestamp(0) without time zone"),
    ]
    assert shape.key == ("ID",)


async def test_an_unqualified_table_is_found_in_the_users_schema(
    oracle: FakeOracle, make_config: Any
) -> None:
    await oracle.create_table("MINE", {"ID": "NUMBER(9)"}, ["ID"], owner="SYNCD")
    config = configure(make_config, table="MINE")

    async with open_source(config.sources["crm"], config.syncs["opps"]) as source:
        assert (await source.describe()).key == ("ID",)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"table": "CRM.OPPORTUNITIE"}, r"CRM.OPPORTUNITIE does not exist or SYNCD cannot see it"),
        ({"cursor": "UPDATED"}, r"has no column 'UPDATED' \(it has OPPORTUNITY_ID, "),
        ({"columns": ["AMOUNT", "amount"]}, r"has no column 'amount'"),
        ({"cursor": "AMOUNT", "lag": "1m"}, r"lag need a DATE or TIMESTAMP cursor; 'AMOUNT'"),
        ({"cursor": "NOTES"}, r"NOTES \(CLOB\) cannot order a keyset"),
        ({"table": "CRM.NO_KEY"}, r"has no primary key; name one with 'key'"),
        ({"table": "CRM.ODD"}, r"column DOC of CRM.ODD is of type XMLTYPE, which syncd cannot"),
        (
            {"table": "CRM.ODD", "cursor": "AT", "columns": ["ID"]},
            r"AT \(TIMESTAMP\(9\)\) cannot order a keyset",
        ),
        ({"table": "CRM.TWINS"}, r"same name in the target: id, id"),
        (
            {"table": "CRM.OLD", "columns": ["ID", "BODY"]},
            r"column BODY of CRM.OLD is LONG, which Oracle does not allow in the inline view"
            r".* TO_LOB\(BODY\)",
        ),
        (
            {"table": "CRM.OLD", "columns": ["ID", "IMAGE"]},
            r"column IMAGE of CRM.OLD is LONG RAW, .* TO_LOB\(IMAGE\)",
        ),
        (
            {"table": "CRM.OLD", "columns": ["ID", "TOOK"]},
            r"TOOK of CRM.OLD is INTERVAL DAY\(2\) TO SECOND\(9\): PostgreSQL keeps intervals"
            r" to the microsecond",
        ),
    ],
)
async def test_a_table_syncd_cannot_read_as_configured_is_refused_by_name(
    oracle: FakeOracle, make_config: Any, spec: dict[str, Any], message: str
) -> None:
    await oracle.create_table("NO_KEY", {"ID": "NUMBER(9)"})
    await oracle.create_table(
        "ODD", {"ID": "NUMBER(9)", "AT": "TIMESTAMP(9)", "DOC": "XMLTYPE"}, ["ID"]
    )
    await oracle.create_table("TWINS", {"ID": "NUMBER(9)", "id": "NUMBER(9)"}, ["ID"])
    await oracle.create_table(
        "OLD",
        {
            "ID": "NUMBER(9)",
            "BODY": "LONG",
            "IMAGE": "LONG RAW",
            "TOOK": "INTERVAL DAY(2) TO SECOND(9)",
        },
        ["ID"],
    )
    config = configure(make_config, **spec)

    with pytest.raises(SourceError, match=message):
        async with open_source(config.sources["crm"], config.syncs["opps"]) as source:
            await source.describe()


async def test_a_query_sync_is_pointed_at_a_view(oracle: FakeOracle, make_config: Any) -> None:
    config = configure(make_config, table=None, query="SELECT 1 FROM DUAL", key=["X"])

    with pytest.raises(SourceError, match="put the query in a view"):
        async with open_source(config.sources["crm"], config.syncs["opps"]):
            pass


# -- errors --------------------------------------------------------------------------------


async def test_reading_at_an_scn_without_flashback_names_the_grant(
    oracle: FakeOracle, make_config: Any
) -> None:
    config = configure(make_config, snapshot="scn")

    def refuse(sql: str) -> None:
        if "AS OF SCN" in sql:
            raise database_error("ORA-01031: insufficient privileges", 1031)

    oracle.before_execute = refuse
    with pytest.raises(SourceError, match=r"GRANT FLASHBACK ON CRM\.OPPORTUNITIES TO SYNCD"):
        await read_all(config, Window(), 10)


async def test_no_access_to_v_database_names_the_grant(
    oracle: FakeOracle, make_config: Any
) -> None:
    config = configure(make_config, snapshot="scn")

    def refuse(sql: str) -> None:
        if "V$DATABASE" in sql:
            raise database_error("ORA-00942: table or view does not exist", 942)

    oracle.before_execute = refuse
    with pytest.raises(SourceError, match="GRANT SELECT ON V_\\$DATABASE TO SYNCD"):
        await read_all(config, Window(), 10)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (database_error("ORA-01017: invalid credential or not authorized; logon denied", 1017),
         "login of SYNCD: invalid username or password"),
        (database_error("DPY-6005: cannot connect to database (CONNECTION_ID=x)."),
         "DPY-6005: cannot connect to database"),
    ],
    ids=["bad login", "refused"],
)  # fmt: skip
async def test_check_config_says_why_oracle_cannot_be_reached(
    oracle: FakeOracle, make_config: Any, error: oracledb.Error, message: str
) -> None:
    oracle.acquire_error = error
    config = configure(make_config)

    with pytest.raises(SourceError, match=message):
        await check_source(config.sources["crm"])
    oracle.pools[0].close.assert_awaited_once_with(force=True)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        (None, "no password for the Oracle user SYNCD: set password or password_file"),
        ("pw", r"DPY-6005: cannot connect to database .*Connect call failed"),
    ],
    ids=["no password", "nothing listening"],
)
async def test_the_real_driver_refusing_is_a_clear_error(
    password: str | None, message: str
) -> None:
    """No fake here: python-oracledb itself, against a port where nothing listens."""
    config = OracleSourceConfig(
        kind="oracle", dsn="127.0.0.1:1/FREEPDB1", user="SYNCD", password=password
    )

    with pytest.raises(SourceError, match=message):
        await check_source(config)


ERRORS = {
    "connection closed": ("DPY-4011: the database or network closed the connection", 0, None),
    "end-of-file on channel": ("ORA-03113: end-of-file on communication channel", 3113, None),
    "call timeout": ("DPY-4024: call timeout of 300000 ms exceeded", 0, None),
    "cannot connect": ("DPY-6005: cannot connect to database (CONNECTION_ID=x).", 0, None),
    "listener refused": ("DPY-6000: Listener refused connection. (Similar to ORA-12514)", 0, None),
    "database starting": ("ORA-01033: ORACLE initialization or shutdown in progress", 1033, None),
    "undo, no snapshot": ("ORA-01555: snapshot too old: rollback segment too small", 1555, None),
    "undo, through a parallel query server": (
        "ORA-12801: error signaled in parallel query server P001\n"
        "ORA-01555: snapshot too old: rollback segment too small",
        12801,
        None,
    ),
}
SNAPSHOT_ERRORS = {
    "snapshot too old": ("ORA-01555: snapshot too old: rollback segment too small", 1555),
    "no snapshot at time": ("ORA-08180: no snapshot found based on specified time", 8180),
    "invalid SCN": ("ORA-08181: specified number is not a valid system change number", 8181),
    "table changed": ("ORA-01466: unable to read data - table definition has changed", 1466),
    "LOB snapshot too old": ("ORA-22924: snapshot too old", 22924),
    "from a parallel query server": (
        "ORA-12801: error signaled in parallel query server P001\n"
        'ORA-01555: snapshot too old: rollback segment number 9 with name "_SYSSMU9$"'
        " too small",
        12801,
    ),
}
FATAL = {
    "table missing": (
        "ORA-00942: table or view does not exist",
        942,
        "CRM.OPPORTUNITIES does not exist or SYNCD may not read it:"
        " GRANT SELECT ON CRM.OPPORTUNITIES TO SYNCD",
    ),
    "bad login": (
        "ORA-01017: invalid credential or not authorized; logon denied",
        1017,
        "Oracle refused the login of SYNCD: invalid username or password",
    ),
    "bad column": (
        'ORA-00904: "AMOUNTT": invalid identifier',
        904,
        'CRM.OPPORTUNITIES has no such column: ORA-00904: "AMOUNTT": invalid identifier',
    ),
    "locked": ("ORA-28000: The account is locked.", 28000, "the Oracle account SYNCD is locked"),
    "no password": (
        "DPY-4001: no credentials specified",
        0,
        "no password for the Oracle user SYNCD: set password or password_file",
    ),
    "anything else": (
        "ORA-01476: divisor is equal to zero",
        1476,
        "Oracle refused the request: ORA-01476: divisor is equal to zero",
    ),
}


@pytest.mark.parametrize(("message", "code", "scn"), ERRORS.values(), ids=ERRORS.keys())
def test_transient_errors_are_retried(message: str, code: int, scn: str | None) -> None:
    classified = classify(
        database_error(message, code), user="SYNCD", reading="CRM.OPPORTUNITIES", scn=scn
    )

    assert isinstance(classified, Retryable)
    assert retry.is_retryable(classified)


@pytest.mark.parametrize(("message", "code"), SNAPSHOT_ERRORS.values(), ids=SNAPSHOT_ERRORS.keys())
def test_a_lost_snapshot_restarts_the_pass(message: str, code: int) -> None:
    classified = classify(
        database_error(message, code), user="SYNCD", reading="CRM.OPPORTUNITIES", scn="7001"
    )

    assert isinstance(classified, SnapshotExpired)
    assert str(classified).startswith(
        f"Oracle can no longer read CRM.OPPORTUNITIES as of SCN 7001 ({message.split(':')[0]}"
    )


@pytest.mark.parametrize(("message", "code", "expected"), FATAL.values(), ids=FATAL.keys())
def test_fatal_errors_say_what_is_wrong(message: str, code: int, expected: str) -> None:
    classified = classify(database_error(message, code), user="SYNCD", reading="CRM.OPPORTUNITIES")

    assert type(classified) is SourceError
    assert str(classified) == expected


# -- values -----------------------------------------------------------------------------

TYPES = [
    ("NUMBER", 4, 0, "smallint"),
    ("NUMBER", 9, 0, "integer"),
    ("NUMBER", 18, 0, "bigint"),
    ("NUMBER", 19, 0, "numeric(19,0)"),
    ("NUMBER", 5, -2, "integer"),
    ("NUMBER", 12, 2, "numeric(12,2)"),
    ("NUMBER", 3, 5, "numeric(5,5)"),
    ("NUMBER", None, None, "numeric"),
    ("NUMBER", None, 0, "numeric"),
    ("FLOAT", 126, None, "numeric"),
    ("BINARY_FLOAT", None, None, "real"),
    ("BINARY_DOUBLE", None, None, "double precision"),
    ("DATE", None, None, "timestamp(0) without time zone"),
    ("TIMESTAMP(3)", None, 3, "timestamp(3) without time zone"),
    ("TIMESTAMP(9)", None, 9, "timestamp(6) without time zone"),
    ("TIMESTAMP(6) WITH TIME ZONE", None, 6, "timestamp(6) with time zone"),
    ("TIMESTAMP(0) WITH LOCAL TIME ZONE", None, 0, "timestamp(0) with time zone"),
    ("VARCHAR2", None, None, "text"),
    ("NVARCHAR2", None, None, "text"),
    ("CHAR", None, None, "text"),
    ("NCHAR", None, None, "text"),
    ("CLOB", None, None, "text"),
    ("NCLOB", None, None, "text"),
    ("ROWID", None, None, "text"),
    ("UROWID", None, None, "text"),
    ("BLOB", None, None, "bytea"),
    ("RAW", None, None, "bytea"),
    ("INTERVAL DAY(2) TO SECOND(6)", None, 6, "interval"),
    ("INTERVAL YEAR(2) TO MONTH", None, 0, "interval"),
    ("BOOLEAN", None, None, "boolean"),
    ("JSON", None, None, "jsonb"),
]


@pytest.mark.parametrize(("data_type", "precision", "scale", "pg_type"), TYPES)
def test_each_oracle_type_maps_to_a_postgresql_type_that_holds_it(
    data_type: str, precision: int | None, scale: int | None, pg_type: str
) -> None:
    mapped = oracle_type(data_type, precision, scale)

    assert mapped is not None and mapped.pg_type == pg_type


@pytest.mark.parametrize("data_type", ["XMLTYPE", "BFILE", "SDO_GEOMETRY", "VECTOR"])
def test_types_without_a_lossless_home_are_refused(data_type: str) -> None:
    assert oracle_type(data_type, None, None) is None


@pytest.mark.parametrize(
    ("value", "bind", "text"),
    [
        (Decimal("1E+4"), oracledb.DB_TYPE_NUMBER, "10000"),
        (Decimal("-0.000001"), oracledb.DB_TYPE_NUMBER, "-0.000001"),
        (datetime(2025, 1, 1, 12), oracledb.DB_TYPE_DATE, "2025-01-01 12:00:00.000000"),
        (
            datetime(2025, 1, 1, 0, 0, 0, 5),
            oracledb.DB_TYPE_TIMESTAMP,
            "2025-01-01 00:00:00.000005",
        ),
        (b"\x00\xff", oracledb.DB_TYPE_RAW, "00ff"),
        ("Zürich ", oracledb.DB_TYPE_CHAR, "Zürich "),
    ],
)
def test_positions_are_text_that_binds_back_exactly(value: Any, bind: Any, text: str) -> None:
    assert position_text(value) == text
    assert bind_value(text, bind) == value


def test_json_is_written_digit_for_digit_with_nuls_cleaned() -> None:
    number, json_type = oracle_type("NUMBER", 9, 0), oracle_type("JSON", None, None)
    assert number is not None and json_type is not None
    reader = RowReader(["ID", "DOC"], [number, json_type], [0], [0], "strip")
    # Oracle's own text (JSON_SERIALIZE): a timestamp with its offset, a NUL escaped.
    document = (
        '{"n":12345678901234567890.123456789,"at":"2024-01-02T03:04:05+02:00",'
        '"s":"a\\u0000b","list":[true,null,1.50,1e400]}'
    )

    records, cleaned = reader.records([(Decimal(1), document)])

    assert records == [
        (
            1,
            '{"n":12345678901234567890.123456789,"at":"2024-01-02T03:04:05+02:00",'
            '"s":"ab","list":[true,null,1.50,1E+400]}',
        )
    ]
    assert cleaned == 1


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_json_number_jsonb_cannot_hold_is_refused_by_row(constant: str) -> None:
    number, json_type = oracle_type("NUMBER", 9, 0), oracle_type("JSON", None, None)
    assert number is not None and json_type is not None
    reader = RowReader(["ID", "DOC"], [number, json_type], [0], [0], "strip")

    with pytest.raises(SourceError, match=rf"DOC of the row at \['7'\] holds {constant} inside"):
        reader.records([(Decimal(7), f'{{"ratio": {constant}}}')])


def test_text_that_oracle_knows_is_json_is_fetched_unparsed() -> None:
    cursor = create_autospec(oracledb.AsyncCursor, spec_set=True, instance=True)
    cursor.arraysize = 50

    def column(type_code: Any, is_json: bool, display_size: int | None = None) -> Any:
        metadata = create_autospec(oracledb.FetchInfo, spec_set=True, instance=True)
        metadata.type_code, metadata.is_json, metadata.is_oson = type_code, is_json, False
        metadata.display_size = display_size
        return metadata

    json_text_unparsed(cursor, column(oracledb.DB_TYPE_CLOB, True))
    cursor.var.assert_called_with(oracledb.DB_TYPE_LONG, 0, arraysize=50)
    json_text_unparsed(cursor, column(oracledb.DB_TYPE_VARCHAR, True, 4000))
    cursor.var.assert_called_with(oracledb.DB_TYPE_VARCHAR, 4000, arraysize=50)
    cursor.var.reset_mock()
    assert json_text_unparsed(cursor, column(oracledb.DB_TYPE_JSON, True)) is None
    assert json_text_unparsed(cursor, column(oracledb.DB_TYPE_CLOB, False)) is None
    cursor.var.assert_not_called()


@pytest.mark.parametrize("nul", ["strip", "replace", "fail"])
def test_a_nul_in_a_key_stops_the_run_whatever_the_policy(nul: Any) -> None:
    """Cleaned, 'A\\0' would become 'A' (or 'A\ufffd'), and two rows could become one."""
    text, number = oracle_type("VARCHAR2", None, None), oracle_type("NUMBER", 9, 0)
    assert text is not None and number is not None
    reader = RowReader(["CODE", "N"], [text, number], [0], [0], nul)

    with pytest.raises(SourceError, match=r"the key column CODE of the row at \['A\\x00'\]"):
        reader.records([("A\x00", Decimal(1))])
    assert reader.records([("A", Decimal(1))]) == ([("A", 1)], 0)


async def test_the_first_call_of_a_session_is_already_bounded(
    oracle: FakeOracle, make_config: Any
) -> None:
    config, _ = make_config(
        {"opps": {"source": "crm", "table": "CRM.OPPORTUNITIES", "target_table": "public.opps"}},
        sources={"crm": SOURCES["crm"] | {"statement_timeout": "45s"}},
    )
    timeouts_seen: list[int] = []

    def note_the_timeout(sql: str) -> None:
        timeouts_seen.append(oracle.connections[-1].call_timeout)

    oracle.before_execute = note_the_timeout
    await read_all(config, Window(), 10)

    assert oracle.statements[0].sql.startswith("ALTER SESSION")
    assert timeouts_seen and set(timeouts_seen) == {45_000}


async def test_a_listener_that_never_hands_out_a_session_is_given_up_on(
    oracle: FakeOracle, make_config: Any
) -> None:
    config, _ = make_config(
        {"opps": {"source": "crm", "table": "CRM.OPPORTUNITIES", "target_table": "public.opps"}},
        sources={"crm": SOURCES["crm"] | {"connect_timeout": "200ms"}},
    )
    oracle.acquire_gate = asyncio.Event()

    with pytest.raises(Retryable, match=r"did not accept a session within 0.2 s"):
        await asyncio.wait_for(read_all(config, Window(), 10), timeout=10)
    oracle.pools[0].close.assert_awaited_once_with(force=True)


@pytest.mark.parametrize(("charset", "refused"), [("AL16UTF16", False), ("UTF8", True)])
async def test_national_text_is_refused_where_thin_mode_cannot_read_it(
    oracle: FakeOracle, make_config: Any, charset: str, refused: bool
) -> None:
    await oracle.conn.execute("UPDATE nls_database_parameters SET value = $1", charset)
    await oracle.create_table("NATIONAL", {"ID": "NUMBER(9)", "NAME": "NVARCHAR2(40)"}, ["ID"])
    config = configure(make_config, table="CRM.NATIONAL")

    async with open_source(config.sources["crm"], config.syncs["opps"]) as source:
        if refused:
            with pytest.raises(SourceError, match=r"NAME of CRM.NATIONAL: .* set is UTF8; "):
                await source.describe()
        else:
            assert [c.pg_type for c in (await source.describe()).columns] == ["integer", "text"]


# -- what each statement means, checked with sqlglot ----------------------------------------

BIND_FOR = {
    "DATE": oracledb.DB_TYPE_DATE,
    "TIMESTAMP(6)": oracledb.DB_TYPE_TIMESTAMP,
    "TIMESTAMP(6) WITH TIME ZONE": oracledb.DB_TYPE_TIMESTAMP_TZ,
    "NUMBER(12)": oracledb.DB_TYPE_NUMBER,
}
LOBS = ("CLOB", "NCLOB", "BLOB")


def semantic_problems(sql: str, sizes: dict[str, Any], columns: dict[str, str]) -> list[str]:
    """What Oracle would refuse or misread in ``sql``: a LONG under the inline view that
    FETCH FIRST makes, a comparison on a LOB, a bind not of its column's type."""
    tree = sqlglot.parse_one(sql, read="oracle")
    problems = []
    if tree.args.get("limit") or "FETCH FIRST" in sql:
        problems += [
            f"LONG {c.name} under FETCH FIRST"
            for c in tree.expressions
            if isinstance(c, sqlglot.exp.Column) and columns.get(c.name, "").startswith("LONG")
        ]
    comparisons = (sqlglot.exp.GT, sqlglot.exp.GTE, sqlglot.exp.LT, sqlglot.exp.LTE)
    for node in tree.find_all(*comparisons, sqlglot.exp.Ordered):
        column = node.this
        if not isinstance(column, sqlglot.exp.Column):
            continue
        declared = columns.get(column.name, "")
        if declared in LOBS:
            problems.append(f"{declared} {column.name} compared or ordered")
        bind = (
            next(node.expression.find_all(sqlglot.exp.Placeholder), None)
            if not isinstance(node, sqlglot.exp.Ordered)
            else None
        )
        if bind is not None and sizes.get(bind.name) is not BIND_FOR.get(declared):
            problems.append(f":{bind.name} bound as {sizes.get(bind.name)} for {declared}")
    return problems


@pytest.mark.parametrize("cursor", ["LAST_UPDATE_DATE", "UPDATED_AT", "CLOSED_AT"])
async def test_every_statement_binds_each_value_as_its_columns_type_and_compares_no_lob(
    oracle: FakeOracle, make_config: Any, cursor: str
) -> None:
    config, _ = make_config(
        {"opps": {"source": "crm", "table": "CRM.OPPORTUNITIES", "target_table": "public.opps"}
         | {"cursor": cursor, "lag": "30s", "lookback": "1m"}},
        sources={"crm": SOURCES["crm"] | {"cursor_time_zone": "UTC"}},
    )  # fmt: skip
    window = Window(cursor_from="2025-01-01 00:00:02", lookback=timedelta(minutes=1))

    await read_all(config, Window(), 2)
    await read_all(config, window, 2)

    reads = [s for s in oracle.statements if "OPPORTUNITIES" in s.sql and "ORDER BY" in s.sql]
    assert len(reads) >= 4
    for statement in reads:
        assert semantic_problems(statement.sql, statement.sizes, OPPORTUNITIES) == []


def test_the_semantic_check_sees_a_long_a_lob_and_a_wrong_bind() -> None:
    sql = (
        'SELECT "ID", "BODY" FROM "CRM"."T" WHERE "NOTES" > :after1 AND "AT" < :before'
        ' ORDER BY "NOTES" FETCH FIRST 5 ROWS ONLY'
    )
    columns = {"ID": "NUMBER(12)", "BODY": "LONG", "NOTES": "CLOB", "AT": "TIMESTAMP(6)"}

    problems = semantic_problems(sql, {"before": oracledb.DB_TYPE_DATE}, columns)

    assert sorted(problems) == [
        ":before bound as <DbType DB_TYPE_DATE> for TIMESTAMP(6)",
        "CLOB NOTES compared or ordered",
        "CLOB NOTES compared or ordered",
        "LONG BODY under FETCH FIRST",
    ]


async def test_the_host_is_looked_up_without_stalling_the_event_loop(
    oracle: FakeOracle, make_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow_resolver(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        time.sleep(1.0)  # a resolver that takes its time, in the thread that asks it
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", 1521))]

    monkeypatch.setattr(socket, "getaddrinfo", slow_resolver)
    config = configure(make_config)
    ticks = [time.perf_counter()]

    async def measure_the_loop() -> None:
        while True:
            await asyncio.sleep(0.01)
            ticks.append(time.perf_counter())

    ticking = asyncio.create_task(measure_the_loop())
    looked_up = await oracle_session.resolved(SOURCES["crm"]["dsn"], within=5)
    ticks.append(time.perf_counter())
    ticking.cancel()
    stalls = [later - earlier - 0.01 for earlier, later in itertools.pairwise(ticks)]
    await read_all(config, Window(), 10)

    assert looked_up == "10.1.2.3:1521/FREEPDB1"
    assert max(stalls) < 0.1, f"the event loop stood still for {max(stalls):.2f} s"
    assert oracle.pool_arguments[0]["dsn"] == looked_up, "the driver got a name to look up"


async def test_a_host_that_cannot_be_looked_up_is_a_clear_retryable_error(
    oracle: FakeOracle, make_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_such_host(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)

    with pytest.raises(Retryable, match="cannot look up the Oracle host crm-db: Name or service"):
        await read_all(configure(make_config), Window(), 10)
    assert oracle.pools == [], "the driver was not left to look it up again"

"""The Oracle source's side of a verify, driven through the autospecced python-oracledb
of tests/oracle/harness.py.

The statements that hash rows (STANDARD_HASH, TO_CHAR's TM9, DBMS_CRYPTO) cannot run
on the PostgreSQL behind the fake: for them the fake answers with the rows a test
scripts, as Oracle would return them, and the tests check the exact statement and
binds sent and what the side makes of the rows. Whether Oracle computes the same
hashes as the reference is for tests/oracle/ against a real server. The statements
without those functions (bounds, whole rows, NULL keys) run on the fake's database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import oracledb
import pytest

from syncd.config import Config
from syncd.errors import SourceError
from syncd.sources import Limits, Window, open_source, oracle_session
from syncd.sources.oracle_sql import Relation
from syncd.verify.canonical import Kind
from syncd.verify.oracle import (
    OracleColumn,
    bounds_sql,
    checksums_sql,
    hashes_sql,
    pending_sql,
    reread_sql,
)
from syncd.verify.sides import Checksum, Reread, Segment, Side
from tests.oracle.harness import FakeOracle, fake_oracle

SOURCES = {
    "crm": {"kind": "oracle", "dsn": "crm-db:1521/FREEPDB1", "user": "SYNCD", "password": "pw"}
}
LINES = {
    "AMOUNT": "NUMBER(12,2)",
    "REGION": "VARCHAR2(10)",
    "LINE_NO": "NUMBER(9)",
    "UPDATED_AT": "TIMESTAMP(6)",
    "TOKEN": "RAW(4)",
    "NOTES": "CLOB",
}
KEYS = Relation(table='"CRM"."LINES"', select=(), order=('"REGION"', '"LINE_NO"'), cursor=None)
HASHED = [
    # The key columns first, then the others in the table's order.
    OracleColumn('"REGION"', Kind.TEXT),
    OracleColumn('"LINE_NO"', Kind.NUMBER),
    OracleColumn('"AMOUNT"', Kind.NUMBER),
    OracleColumn('"UPDATED_AT"', Kind.TIMESTAMP),
    OracleColumn('"TOKEN"', Kind.BYTES),
    OracleColumn('"NOTES"', Kind.TEXT, lob=True),
]
TEXT, NUMBER = oracledb.DB_TYPE_VARCHAR, oracledb.DB_TYPE_NUMBER


@pytest.fixture
async def oracle(db: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeOracle]:
    async with fake_oracle(db, monkeypatch) as fake:
        await fake.create_table("LINES", LINES, primary_key=["REGION", "LINE_NO"])
        await fake.conn.execute(
            """INSERT INTO "CRM"."LINES" VALUES
               (1.5, 'b', 1, '2025-01-01 00:00:01', '\\xdeadbeef', convert_to('one', 'UTF8')),
               (2, 'B', 2, '2025-01-01 00:00:02', NULL, NULL),
               (3, 'a', 3, '2025-01-01 00:00:03', '\\x00', convert_to('three', 'UTF8')),
               (4, 'A', 4, NULL, NULL, NULL)"""
        )
        yield fake


def configure(make_config: Any, **sources: Any) -> Config:
    sync = {"source": "crm", "table": "CRM.LINES", "target_table": "public.lines"}
    config, _ = make_config(
        {"lines": sync | {"cursor": "UPDATED_AT"}}, sources={"crm": SOURCES["crm"] | sources}
    )
    return config


async def ask(config: Config, question: Any) -> Any:
    """``question`` asked of the source's side, on a session of its own."""
    async with open_source(config.sources["crm"], config.syncs["lines"]) as source:
        side: Side = await source.comparison()
        return await question(side)


def scripted(oracle: FakeOracle, rows: list[tuple[Any, ...]]) -> None:
    """The fake answers the statements the verify side sends with ``rows``."""

    async def answer(sql: str) -> list[tuple[Any, ...]] | None:
        return rows if "STANDARD_HASH" in sql else None

    oracle.answer = answer


def sent(oracle: FakeOracle) -> Any:
    (statement,) = [s for s in oracle.statements if "STANDARD_HASH" in s.sql]
    assert (statement.fetch_lobs, statement.fetch_decimals) == (False, True)
    return statement


async def test_checksums_bind_the_segment_and_the_cuts_typed_and_read_each_parts_sums(
    oracle: FakeOracle, make_config: Any
) -> None:
    scripted(oracle, [(Decimal(0), Decimal(3), Decimal(123)), (Decimal(2), Decimal(1), Decimal(7))])

    sums = await ask(
        configure(make_config),
        lambda side: side.checksums(Segment(("a", "1"), ("z", "9")), [("b", "2"), ("c", "3")]),
    )

    assert sums == [Checksum(3, 123), Checksum(0, 0), Checksum(1, 7)]
    statement = sent(oracle)
    assert statement.sql == checksums_sql(KEYS, HASHED, 2, low=True, high=True)
    assert statement.binds == {
        "low1": "a", "low2": Decimal(1), "high1": "z", "high2": Decimal(9),
        "b0_1": "b", "b0_2": Decimal(2), "b1_1": "c", "b1_2": Decimal(3),
    }  # fmt: skip
    assert statement.sizes == {
        name: TEXT if name.endswith("1") else NUMBER for name in statement.binds
    }


async def test_hashes_are_read_by_key_in_the_targets_text(
    oracle: FakeOracle, make_config: Any
) -> None:
    scripted(oracle, [("A", Decimal(4), Decimal(40)), ("a", Decimal(3), Decimal(30))])

    hashes = await ask(configure(make_config), lambda side: side.hashes(Segment(high=("b", "1"))))

    assert hashes == {("A", "4"): 40, ("a", "3"): 30}
    statement = sent(oracle)
    assert statement.sql == hashes_sql(KEYS, HASHED, low=False, high=True)
    assert statement.binds == {"high1": "b", "high2": Decimal(1)}


@pytest.mark.parametrize("committed", [True, False])
async def test_reread_binds_the_keys_and_the_committed_cursor_and_reads_pending(
    oracle: FakeOracle, make_config: Any, committed: bool
) -> None:
    scripted(
        oracle,
        [("a", Decimal(3), Decimal(30), Decimal(1)), ("b", Decimal(1), Decimal(10), Decimal(0))],
    )
    position = "2025-01-01 00:00:02.000000" if committed else None

    found = await ask(
        configure(make_config),
        lambda side: side.reread([("a", "3"), ("b", "1"), ("x", "9")], position),
    )

    assert found == {("a", "3"): Reread(30, True), ("b", "1"): Reread(10, False)}
    statement = sent(oracle)
    read = Relation('"CRM"."LINES"', (), ('"UPDATED_AT"', '"REGION"', '"LINE_NO"'), '"UPDATED_AT"')
    assert statement.sql == reread_sql(KEYS, HASHED, 3, pending_sql(read, committed))
    keys = {"w0_1": "a", "w0_2": Decimal(3), "w1_1": "b", "w1_2": Decimal(1)}
    keys |= {"w2_1": "x", "w2_2": Decimal(9)}
    if committed:
        assert statement.binds == keys | {"position": datetime(2025, 1, 1, 0, 0, 2)}
        assert statement.sizes["position"] is oracledb.DB_TYPE_TIMESTAMP
        assert "> :position THEN 1" in statement.sql
    else:
        assert statement.binds == keys
        wanted = "((:w0_1, :w0_2), (:w1_1, :w1_2), (:w2_1, :w2_2))"
        assert statement.sql.endswith(
            f', 1 FROM "CRM"."LINES" WHERE ("REGION", "LINE_NO") IN {wanted}'
        )


async def test_bounds_cut_the_keys_in_binary_order_on_the_database(
    oracle: FakeOracle, make_config: Any
) -> None:
    """The session's sort is BINARY: 'A' < 'B' < 'a' < 'b', as PostgreSQL's "C" orders
    them; the fake's session starts as GERMAN, which would give 'a' < 'A' < 'b' < 'B'."""
    bounds = await ask(configure(make_config), lambda side: side.bounds(Segment(), 4))

    assert bounds == [("A", "4"), ("B", "2"), ("a", "3")]
    (statement,) = [s for s in oracle.statements if "NTILE" in s.sql]
    assert statement.sql == bounds_sql(KEYS, 4, low=False, high=False)


async def test_whole_rows_by_key_are_the_records_a_run_reads(
    oracle: FakeOracle, make_config: Any
) -> None:
    config = configure(make_config)
    async with open_source(config.sources["crm"], config.syncs["lines"]) as source:
        (batch,) = [b async for b in source.read(Window(by_key=True), Limits(10, 10**9))]
        side = await source.comparison()
        rows = await side.rows([("b", "1"), ("a", "3"), ("q", "7")])
        assert await side.null_keys() == 0

    # By their repr: Decimal(1) == 1, but the target is written ints for NUMBER(9).
    read = [repr(r) for r in batch.records if r[1] in ("a", "b")]
    assert len(rows) == 2 and sorted(map(repr, rows)) == sorted(read)


@pytest.mark.parametrize(
    ("declared", "fetched", "target_text"),
    [
        ("NUMBER(12,2)", Decimal("1.5"), "1.50"),
        ("NUMBER(9)", Decimal("12"), "12"),
        ("NUMBER", Decimal("0.25"), "0.25"),
        ("DATE", datetime(2025, 1, 1), "2025-01-01 00:00:00"),
        ("TIMESTAMP(6)", datetime(2025, 1, 1, 0, 0, 0, 500000), "2025-01-01 00:00:00.5"),
        ("TIMESTAMP(6)", datetime(2025, 1, 1, 10, 0, 0), "2025-01-01 10:00:00"),
        ("RAW(4)", b"\xde\xad\x00", "\\xdead00"),
        ("CHAR(3)", "ab ", "ab "),
    ],
)
async def test_a_key_is_written_as_the_target_writes_it_and_bound_back_typed(
    oracle: FakeOracle,
    make_config: Any,
    declared: str,
    fetched: Any,
    target_text: str,
) -> None:
    """The target's side reads its keys as text; the same key must read alike here, and
    the target's text of a key must bind as the Oracle value it stands for."""
    await oracle.create_table("KEYED", {"ID": declared, "V": "VARCHAR2(5)"}, primary_key=["ID"])
    config, _ = make_config(
        {"lines": {"source": "crm", "table": "CRM.KEYED", "target_table": "public.keyed"}},
        sources=SOURCES,
    )
    scripted(oracle, [(fetched, Decimal(5))])

    hashes = await ask(config, lambda side: side.hashes(Segment(low=(target_text,))))

    assert hashes == {(target_text,): 5}
    statement = sent(oracle)
    assert statement.binds == {"low1": fetched}
    binds = {"DATE": oracledb.DB_TYPE_DATE, "TIMESTAMP(6)": oracledb.DB_TYPE_TIMESTAMP,
             "RAW(4)": oracledb.DB_TYPE_RAW, "CHAR(3)": oracledb.DB_TYPE_CHAR}  # fmt: skip
    assert statement.sizes == {"low1": binds.get(declared, NUMBER)}


async def test_every_call_of_the_side_is_bounded(
    oracle: FakeOracle, make_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oracle_session, "RESET_S", 0.2)
    never = asyncio.Event()

    async def hang(sql: str) -> None:
        if "STANDARD_HASH" in sql:
            await never.wait()

    oracle.answer = hang
    config = configure(make_config, statement_timeout="300ms")

    async with asyncio.timeout(10) as guard:
        with pytest.raises(TimeoutError):
            await ask(config, lambda side: side.hashes(Segment()))
    assert not guard.expired(), "the session's own bound ended the call"
    assert oracle.connections[0].call_timeout == 300


@pytest.mark.parametrize(
    ("declared", "why"),
    [("BLOB", "BLOB"), ("JSON", "jsonb"), ("INTERVAL YEAR(2) TO MONTH", "canonical text")],
)
async def test_a_column_verify_cannot_compare_is_refused_by_name(
    oracle: FakeOracle, make_config: Any, declared: str, why: str
) -> None:
    await oracle.create_table("ODD", {"ID": "NUMBER(9)", "BODY": declared}, primary_key=["ID"])
    config, _ = make_config(
        {"lines": {"source": "crm", "table": "CRM.ODD", "target_table": "public.odd"}},
        sources=SOURCES,
    )

    with pytest.raises(SourceError, match=rf"cannot compare CRM\.ODD: BODY \(.*{why}"):
        await ask(config, lambda side: side.null_keys())


async def test_the_source_side_never_deletes(oracle: FakeOracle, make_config: Any) -> None:
    with pytest.raises(SourceError, match="never from an Oracle source"):
        await ask(configure(make_config), lambda side: side.remove([("a", "3")], None))
    assert not [s for s in oracle.statements if "DELETE" in s.sql]

"""Every query the Oracle keyset builder makes, as golden text that must also be Oracle.

Each golden query is parsed by sqlglot as Oracle and printed back unchanged, which
catches syntax Oracle lacks (LIMIT, OFFSET, row-value comparisons, a bind for the
row limit), and is qualified against the table's columns, which catches a name
the builder misspelt.
"""

from __future__ import annotations

import re

import pytest
import sqlglot
from sqlglot.errors import OptimizeError
from sqlglot.optimizer.qualify import qualify

from syncd.sources.oracle_sql import (
    CLOCK_SQL,
    COLUMNS_SQL,
    LEADING_INDEX_SQL,
    NUM_ROWS_SQL,
    PRIMARY_KEY_SQL,
    SCN_SQL,
    Bounds,
    Relation,
    batch_sql,
    newest_sql,
    null_keys_sql,
)

SCHEMA = {
    "CRM": {
        "OPPORTUNITIES": {
            "OPPORTUNITY_ID": "NUMBER",
            "LAST_UPDATE_DATE": "DATE",
            "CLOSED_AT": "TIMESTAMP WITH TIME ZONE",
            "AMOUNT": "NUMBER",
            "REGION": "VARCHAR2",
            "LINE_NO": "NUMBER",
            "CHANGE_SEQ": "NUMBER",
        }
    }
}

BY_TIME = Relation(
    table='"CRM"."OPPORTUNITIES"',
    select=(
        '"OPPORTUNITY_ID"',
        '"LAST_UPDATE_DATE"',
        'SYS_EXTRACT_UTC("CLOSED_AT")',
        '"AMOUNT"',
    ),
    order=('"LAST_UPDATE_DATE"', '"OPPORTUNITY_ID"'),
    cursor='"LAST_UPDATE_DATE"',
)
BY_KEY = Relation(
    table='"CRM"."OPPORTUNITIES"',
    select=('"OPPORTUNITY_ID"', '"AMOUNT"'),
    order=('"OPPORTUNITY_ID"',),
    cursor=None,
)
BY_COMPOUND_KEY = Relation(
    table='"CRM"."OPPORTUNITIES"',
    select=('"REGION"', '"OPPORTUNITY_ID"', '"LINE_NO"', '"AMOUNT"'),
    order=('"REGION"', '"OPPORTUNITY_ID"', '"LINE_NO"'),
    cursor=None,
)
BY_NUMBER = Relation(
    table='"CRM"."OPPORTUNITIES"',
    select=('"OPPORTUNITY_ID"', '"CHANGE_SEQ"'),
    order=('"CHANGE_SEQ"', '"OPPORTUNITY_ID"'),
    cursor='"CHANGE_SEQ"',
)

SELECT_BY_TIME = (
    'SELECT "OPPORTUNITY_ID", "LAST_UPDATE_DATE", SYS_EXTRACT_UTC("CLOSED_AT"),'
    ' "AMOUNT" FROM "CRM"."OPPORTUNITIES"'
)
ORDER_BY_TIME = (
    ' ORDER BY "LAST_UPDATE_DATE" ASC NULLS LAST, "OPPORTUNITY_ID" ASC NULLS LAST'
    " FETCH FIRST 1000 ROWS ONLY"
)
SELECT_BY_KEY = 'SELECT "OPPORTUNITY_ID", "AMOUNT" FROM "CRM"."OPPORTUNITIES"'
ORDER_BY_KEY = ' ORDER BY "OPPORTUNITY_ID" ASC NULLS LAST FETCH FIRST 1000 ROWS ONLY'

GOLDEN = {
    "key, first batch": (
        BY_KEY,
        Bounds(),
        SELECT_BY_KEY + ORDER_BY_KEY,
    ),
    "key, after a position": (
        BY_KEY,
        Bounds(after=True),
        SELECT_BY_KEY + ' WHERE "OPPORTUNITY_ID" > :after1' + ORDER_BY_KEY,
    ),
    "key at an SCN, first batch": (
        BY_KEY,
        Bounds(scn=True),
        SELECT_BY_KEY + " AS OF SCN :scn" + ORDER_BY_KEY,
    ),
    "key at an SCN, after a position": (
        BY_KEY,
        Bounds(after=True, scn=True),
        SELECT_BY_KEY + ' AS OF SCN :scn WHERE "OPPORTUNITY_ID" > :after1' + ORDER_BY_KEY,
    ),
    "compound key, after a position": (
        BY_COMPOUND_KEY,
        Bounds(after=True),
        'SELECT "REGION", "OPPORTUNITY_ID", "LINE_NO", "AMOUNT" FROM "CRM"."OPPORTUNITIES"'
        ' WHERE "REGION" >= :after1 AND ("REGION" > :after1 OR ("OPPORTUNITY_ID" >= :after2'
        ' AND ("OPPORTUNITY_ID" > :after2 OR "LINE_NO" > :after3)))'
        ' ORDER BY "REGION" ASC NULLS LAST, "OPPORTUNITY_ID" ASC NULLS LAST,'
        ' "LINE_NO" ASC NULLS LAST FETCH FIRST 1000 ROWS ONLY',
    ),
    "time cursor, first batch below the clock": (
        BY_TIME,
        Bounds(before=True),
        SELECT_BY_TIME + ' WHERE "LAST_UPDATE_DATE" < :before' + ORDER_BY_TIME,
    ),
    "time cursor, after a position, below the clock": (
        BY_TIME,
        Bounds(after=True, before=True),
        SELECT_BY_TIME + ' WHERE "LAST_UPDATE_DATE" >= :after1 AND ("LAST_UPDATE_DATE" >'
        ' :after1 OR "OPPORTUNITY_ID" > :after2) AND "LAST_UPDATE_DATE" < :before' + ORDER_BY_TIME,
    ),
    "time cursor, lookback re-read up to the saved position": (
        BY_TIME,
        Bounds(since=True, until=True, before=True),
        SELECT_BY_TIME + ' WHERE "LAST_UPDATE_DATE" >= :since AND "LAST_UPDATE_DATE" <= :until1'
        ' AND ("LAST_UPDATE_DATE" < :until1 OR "OPPORTUNITY_ID" <= :until2)'
        ' AND "LAST_UPDATE_DATE" < :before' + ORDER_BY_TIME,
    ),
    "time cursor, re-read continuing after a position": (
        BY_TIME,
        Bounds(after=True, until=True, before=True),
        SELECT_BY_TIME + ' WHERE "LAST_UPDATE_DATE" >= :after1 AND ("LAST_UPDATE_DATE" >'
        ' :after1 OR "OPPORTUNITY_ID" > :after2) AND "LAST_UPDATE_DATE" <= :until1'
        ' AND ("LAST_UPDATE_DATE" < :until1 OR "OPPORTUNITY_ID" <= :until2)'
        ' AND "LAST_UPDATE_DATE" < :before' + ORDER_BY_TIME,
    ),
    "number cursor, first batch": (
        BY_NUMBER,
        Bounds(),
        'SELECT "OPPORTUNITY_ID", "CHANGE_SEQ" FROM "CRM"."OPPORTUNITIES"'
        ' WHERE NOT "CHANGE_SEQ" IS NULL'
        ' ORDER BY "CHANGE_SEQ" ASC NULLS LAST, "OPPORTUNITY_ID" ASC NULLS LAST'
        " FETCH FIRST 1000 ROWS ONLY",
    ),
}


@pytest.mark.parametrize(("relation", "bounds", "expected"), GOLDEN.values(), ids=GOLDEN.keys())
def test_each_query_is_exactly_its_golden_text(
    relation: Relation, bounds: Bounds, expected: str
) -> None:
    assert batch_sql(relation, bounds, 1000) == expected


@pytest.mark.parametrize("sql", [g[2] for g in GOLDEN.values()], ids=GOLDEN.keys())
def test_each_query_is_oracle_that_sqlglot_prints_back_unchanged(sql: str) -> None:
    # sqlglot leaves out the null ordering that Oracle gives ASC by default; the
    # query states it, so that no reader has to know the default.
    printed = sqlglot.parse_one(sql, read="oracle").sql(dialect="oracle")
    assert printed == sql.replace(" ASC NULLS LAST", " ASC")


@pytest.mark.parametrize("sql", [g[2] for g in GOLDEN.values()], ids=GOLDEN.keys())
def test_every_order_term_puts_nulls_last(sql: str) -> None:
    terms = list(sqlglot.parse_one(sql, read="oracle").find_all(sqlglot.exp.Ordered))
    assert terms and all(not term.args.get("desc") for term in terms)
    assert all(term.args.get("nulls_first") is False for term in terms)
    assert sql.count(" ASC NULLS LAST") == len(terms)


def qualify_columns(sql: str) -> None:
    """Raise OptimizeError unless every column ``sql`` names is one of SCHEMA's tables'."""
    qualify(
        sqlglot.parse_one(sql, read="oracle"),
        schema=SCHEMA,
        dialect="oracle",
        validate_qualify_columns=True,
    )


@pytest.mark.parametrize("sql", [g[2] for g in GOLDEN.values()], ids=GOLDEN.keys())
def test_each_query_names_only_columns_the_table_has(sql: str) -> None:
    qualify_columns(sql)


def test_a_misspelt_column_fails_to_qualify() -> None:
    misspelt = Relation(
        table='"CRM"."OPPORTUNITIES"',
        select=('"OPPORTUNITY_ID"', '"AMMOUNT"'),
        order=('"OPPORTUNITY_ID"',),
        cursor=None,
    )
    sql = batch_sql(misspelt, Bounds(after=True), 1000)

    with pytest.raises(OptimizeError, match="AMMOUNT"):
        qualify_columns(sql)


def test_non_oracle_syntax_would_not_survive_the_round_trip() -> None:
    """The check has teeth: PostgreSQL's LIMIT comes back as Oracle's FETCH FIRST."""
    limit = 'SELECT "OPPORTUNITY_ID" FROM "CRM"."OPPORTUNITIES" ORDER BY "OPPORTUNITY_ID" LIMIT 5'
    assert sqlglot.parse_one(limit, read="oracle").sql(dialect="oracle") != limit


def test_the_row_limit_is_a_literal_and_every_bind_is_named() -> None:
    sql = batch_sql(BY_TIME, Bounds(after=True, before=True), 250)

    assert sql.endswith("FETCH FIRST 250 ROWS ONLY")
    assert sorted(set(re.findall(r":(\w+)", sql))) == ["after1", "after2", "before"]
    assert "?" not in sql and ":1" not in sql


@pytest.mark.parametrize(
    "sql",
    [
        COLUMNS_SQL,
        PRIMARY_KEY_SQL,
        NUM_ROWS_SQL,
        LEADING_INDEX_SQL,
        CLOCK_SQL,
        SCN_SQL,
        null_keys_sql('"CRM"."OPPORTUNITIES"', ['"REGION"', '"LINE_NO"']),
        newest_sql(BY_TIME),
        newest_sql(BY_NUMBER),
    ],
)
def test_the_dictionary_and_clock_queries_are_oracle_too(sql: str) -> None:
    assert sqlglot.parse_one(sql, read="oracle").sql(dialect="oracle") == sql


def test_without_an_index_the_whole_window_is_one_sorted_query() -> None:
    sql = batch_sql(BY_TIME, Bounds(after=True, before=True), None)

    assert "FETCH FIRST" not in sql
    assert sql.endswith(
        ' ORDER BY "LAST_UPDATE_DATE" ASC NULLS LAST, "OPPORTUNITY_ID" ASC NULLS LAST'
    )
    assert sqlglot.parse_one(sql, read="oracle").sql(dialect="oracle") == sql.replace(
        " ASC NULLS LAST", " ASC"
    )


BOUNDED = {
    name: golden
    for name, golden in GOLDEN.items()
    if golden[1].after or golden[1].since or golden[1].until or golden[1].before
}


@pytest.mark.parametrize(("relation", "bounds", "expected"), BOUNDED.values(), ids=BOUNDED.keys())
def test_every_bound_leads_with_a_plain_range_on_the_first_order_column(
    relation: Relation, bounds: Bounds, expected: str
) -> None:
    """Oracle can start an index range scan only from a plain comparison on the index's
    leading column; a comparison inside an OR cannot start one."""
    where = sqlglot.parse_one(expected, read="oracle").args["where"].this
    conjuncts = list(where.flatten()) if isinstance(where, sqlglot.exp.And) else [where]
    leading = relation.order[0].strip('"')
    plain = [
        c
        for c in conjuncts
        if isinstance(c, sqlglot.exp.GTE | sqlglot.exp.LTE | sqlglot.exp.GT | sqlglot.exp.LT)
        and isinstance(c.this, sqlglot.exp.Column)
        and c.this.name == leading
    ]
    if bounds.after or bounds.since:
        assert any(isinstance(c, sqlglot.exp.GTE | sqlglot.exp.GT) for c in plain), expected
    if bounds.until or bounds.before:
        assert any(isinstance(c, sqlglot.exp.LTE | sqlglot.exp.LT) for c in plain), expected

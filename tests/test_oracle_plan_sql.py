"""The planning statements of an Oracle parallel load: golden text in tests/golden/, Oracle
that sqlglot parses and prints back, NULL ordering stated in every ORDER BY, and only
columns the table has."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlglot
from sqlglot.optimizer.qualify import qualify

from syncd.sources.oracle_sql import (
    Relation,
    as_read,
    extent_sql,
    loaded_rows,
    newest_sql,
    tiles_sql,
)
from tests.oracle_checks import (
    assert_every_order_term_states_its_nulls,
    assert_sqlglot_prints_it_back,
)

GOLDEN = Path(__file__).parent / "golden"
SCHEMA: dict[str, object] = {
    "CRM": {
        "LINES": {
            "REGION": "VARCHAR2",
            "LINE_NO": "NUMBER",
            "CLOSED_AT": "TIMESTAMP WITH TIME ZONE",
            "UPDATED_AT": "DATE",
            "AMOUNT": "NUMBER",
        }
    }
}
BY_CURSOR = Relation(
    table='"CRM"."LINES"',
    select=('"REGION"', '"LINE_NO"', '"UPDATED_AT"', '"AMOUNT"'),
    order=('"UPDATED_AT"', '"REGION"', '"LINE_NO"'),
    cursor='"UPDATED_AT"',
)
"""As a run reads the table: by its cursor, then its key."""
BY_KEY = Relation(
    table='"CRM"."LINES"',
    select=('"REGION"', '"CLOSED_AT"', 'SYS_EXTRACT_UTC("CLOSED_AT")', '"LINE_NO"'),
    order=('"REGION"', '"CLOSED_AT"', '"LINE_NO"'),
    cursor='"UPDATED_AT"',
)
"""A composite key, one column of it zoned, read by key alone; rows with a cursor only."""
BY_NUMBER = Relation(
    table='"CRM"."LINES"', select=('"LINE_NO"',), order=('"LINE_NO"',), cursor=None
)
STATEMENTS = {
    "extent_span": extent_sql(BY_NUMBER, scn=True, span=True, count=False),
    "extent_span_count": extent_sql(BY_NUMBER, scn=True, span=True, count=True),
    "extent_count": extent_sql(BY_KEY, scn=True, span=False, count=True),
    "tiles": tiles_sql(
        BY_KEY, 8, loaded_rows(BY_KEY, scn=True), [as_read(BY_KEY, k) for k in BY_KEY.order]
    ),
    "newest": newest_sql(BY_CURSOR, scn=True, before=True),
}


@pytest.mark.parametrize("name", STATEMENTS)
def test_each_statement_is_its_golden_text(name: str) -> None:
    assert STATEMENTS[name] == (GOLDEN / f"oracle_plan_{name}.sql").read_text().strip()


@pytest.mark.parametrize("name", STATEMENTS)
def test_each_statement_is_oracle_that_sqlglot_prints_back(name: str) -> None:
    assert_sqlglot_prints_it_back(STATEMENTS[name])


@pytest.mark.parametrize("name", STATEMENTS)
def test_every_order_term_states_its_nulls(name: str) -> None:
    assert_every_order_term_states_its_nulls(STATEMENTS[name])


@pytest.mark.parametrize("name", STATEMENTS)
def test_each_statement_reads_at_the_scn_and_names_only_columns_the_table_has(name: str) -> None:
    tree = sqlglot.parse_one(STATEMENTS[name], read="oracle")
    (table,) = tree.find_all(sqlglot.exp.Table)
    assert table.args["version"].sql(dialect="oracle") == "AS OF SCN :scn"
    qualify(tree, schema=SCHEMA, dialect="oracle", validate_qualify_columns=True)


def test_a_zoned_key_is_tiled_by_its_instant_and_read_back_in_utc() -> None:
    sql = STATEMENTS["tiles"]
    assert sql.startswith('SELECT "REGION", SYS_EXTRACT_UTC("CLOSED_AT"), "LINE_NO" FROM (')
    assert 'ORDER BY "REGION" ASC NULLS LAST, "CLOSED_AT" ASC NULLS LAST' in sql
    assert 'WHERE NOT "UPDATED_AT" IS NULL' in sql


def test_without_an_scn_nothing_reads_as_of_one() -> None:
    for sql in (
        extent_sql(BY_NUMBER, scn=False, span=True, count=True),
        loaded_rows(BY_KEY, scn=False),
        newest_sql(BY_CURSOR),
    ):
        assert "AS OF" not in sql and ":scn" not in sql

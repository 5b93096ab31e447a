"""What every generated Oracle statement is held to, whichever part of syncd writes it."""

from __future__ import annotations

import sqlglot


def assert_sqlglot_prints_it_back(sql: str) -> None:
    """The statement is Oracle as sqlglot reads it: parsed and printed, it comes back."""
    printed = sqlglot.parse_one(sql, read="oracle").sql(dialect="oracle")
    # sqlglot leaves out the NULL ordering that is Oracle's default; the statement states it.
    stated = sql.replace(" ASC NULLS LAST", " ASC").replace(" DESC NULLS FIRST", " DESC")
    assert printed == stated


def assert_every_order_term_states_its_nulls(sql: str) -> None:
    terms = list(sqlglot.parse_one(sql, read="oracle").find_all(sqlglot.exp.Ordered))
    assert sql.count(" ASC NULLS LAST") + sql.count(" DESC NULLS FIRST") == len(terms)

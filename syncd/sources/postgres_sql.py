"""The statements a PostgreSQL source sends besides its keyset conditions: where a batch
ends, and what the catalogs say about the sync's columns, indexes and key."""

from __future__ import annotations

from syncd.identifiers import quote_ident


def batch_last_row_sql(relation: str, order: tuple[str, ...], where: str, rows: int) -> str:
    """Where the next batch ends by its rows alone, and whether it is full: the
    ``rows``-th row if there is one, else the last row there is.

    Both walk the order's index (from it alone where the visibility map allows and the
    conditions name only indexed columns); the second runs only when the first finds
    nothing.
    """
    texts = ", ".join(f"{quote_ident(c)}::text" for c in order)
    # Qualified: the select list's text casts carry the same names, and ORDER BY would
    # take those, sorting '900' after '1000'.
    ascending = ", ".join(f"src.{quote_ident(c)} ASC NULLS LAST" for c in order)
    descending = ", ".join(f"src.{quote_ident(c)} DESC NULLS FIRST" for c in order)
    return (
        f"(SELECT {texts}, true AS full FROM {relation} WHERE {where}"
        f" ORDER BY {ascending} OFFSET {int(rows) - 1} LIMIT 1)"
        f" UNION ALL (SELECT {texts}, false FROM {relation} WHERE {where}"
        f" ORDER BY {descending} LIMIT 1) LIMIT 1"
    )


def batch_bytes_sql(relation: str, where: str) -> str:
    """The size of the rows that satisfy ``where``, each as PostgreSQL builds it."""
    return f"SELECT coalesce(sum(pg_column_size(src.*)), 0) FROM {relation} WHERE {where}"


def batch_end_sql(
    relation: str, order: tuple[str, ...], where: str, byte_limit: str, rows: int
) -> str:
    """Where the next batch ends: after ``rows`` rows, or once the rows before one take
    ``byte_limit``, each row's size as PostgreSQL builds it. Its window over every row
    costs twice what finding the last row and summing the sizes up to it does: it is
    for the batches whose rows take more than ``byte_limit``.

    The limit is taken first, on the plain keyset query, which the planner serves from
    the index however large the table; the sizes are summed over those rows alone. Put
    the other way round, a window over the whole WHERE can make the planner sort all
    the rows left for every batch.
    """
    columns = ", ".join(map(quote_ident, order))
    ascending = ", ".join(f"{quote_ident(c)} ASC NULLS LAST" for c in order)
    return (
        f"WITH batch AS MATERIALIZED (SELECT {columns}, pg_column_size(src.*) AS size"
        f" FROM {relation} WHERE {where} ORDER BY {ascending} LIMIT {int(rows)}),"
        f" sized AS (SELECT {columns}, row_number() OVER w AS n,"
        f" sum(size) OVER w - size AS bytes_before FROM batch"
        f" WINDOW w AS (ORDER BY {ascending} ROWS UNBOUNDED PRECEDING))"
        f" SELECT {', '.join(f'{quote_ident(c)}::text' for c in order)}, n,"
        f" (SELECT count(*) FROM batch) AS available"
        f" FROM sized WHERE bytes_before < {byte_limit} ORDER BY n DESC LIMIT 1"
    )


def whole_window_end_sql(relation: str, order: tuple[str, ...], where: str) -> str:
    """The last position of the whole window: one scan, where batches would need one each."""
    # Qualified: the select list's text casts carry the same names, and ORDER BY would
    # take those, sorting '900' after '1000'.
    descending = ", ".join(f"src.{quote_ident(c)} DESC NULLS FIRST" for c in order)
    return (
        f"SELECT {', '.join(f'{quote_ident(c)}::text' for c in order)}"
        f" FROM {relation} WHERE {where} ORDER BY {descending} LIMIT 1"
    )


# Types the target database may not have (enums, composites, domains over them, types
# of extensions, arrays of any of these) travel as text; a domain over a built-in type
# travels as that type. The target's own column types are applied when rows are written.
DESCRIBE_SQL = """
SELECT a.attname,
       format_type(a.atttypid, a.atttypmod) AS source_type,
       CASE
           WHEN t.typnamespace = 'pg_catalog'::regnamespace
               THEN format_type(a.atttypid, a.atttypmod)
           WHEN t.typtype = 'd' AND base.typnamespace = 'pg_catalog'::regnamespace
               THEN format_type(t.typbasetype, t.typtypmod)
           WHEN t.typcategory = 'A' THEN 'text[]'
           ELSE 'text'
       END AS wire_type,
       coalesce(source_column.attnotnull, false) AS attnotnull
  FROM pg_attribute a
  JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_type base ON base.oid = t.typbasetype
  LEFT JOIN pg_attribute source_column
         ON $1::text IS NOT NULL
        AND source_column.attrelid = to_regclass($1::text)
        AND source_column.attname = a.attname AND NOT source_column.attisdropped
 WHERE a.attrelid = 'pg_temp.syncd_describe'::regclass
   AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""

LEADING_INDEX_SQL = """
SELECT EXISTS (
    SELECT 1
      FROM pg_index i
      JOIN pg_class c ON c.oid = i.indexrelid
      JOIN pg_am am ON am.oid = c.relam
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
     WHERE i.indrelid = $1::regclass AND am.amname = 'btree' AND i.indisvalid
       AND i.indpred IS NULL AND a.attname = $2)
"""

PRIMARY_KEY_SQL = """
SELECT a.attname
  FROM pg_index i
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
 WHERE i.indrelid = $1::regclass AND i.indisprimary
 ORDER BY array_position(i.indkey::smallint[], a.attnum)
"""

"""Verify's records in the state schema: each verify's outcome, and each row a repair
deleted. Written in the transaction that deleted the rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from syncd.identifiers import quote_ident
from syncd.pg import Conn
from syncd.verify.sides import Key


async def record(
    conn: Conn,
    schema: str,
    *,
    verify_id: str,
    sync_name: str,
    started_at: datetime,
    repair: bool,
    result: dict[str, Any],
) -> None:
    await conn.execute(
        f"INSERT INTO {quote_ident(schema)}.verifications"
        " (verify_id, sync_name, started_at, repair, equal, result)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
        verify_id,
        sync_name,
        started_at,
        repair,
        result["equal"],
        json.dumps(result),
    )


async def last(conn: Conn, schema: str, sync_name: str) -> dict[str, Any] | None:
    """The sync's last verify, as ``syncd verify --json`` printed it, with its times."""
    row = await conn.fetchrow(
        f"SELECT result, started_at, finished_at FROM {quote_ident(schema)}.verifications"
        " WHERE sync_name = $1 ORDER BY finished_at DESC LIMIT 1",
        sync_name,
    )
    if row is None:
        return None
    result: dict[str, Any] = json.loads(row["result"])
    return result | {"started_at": row["started_at"], "finished_at": row["finished_at"]}


async def log_deletes(
    conn: Conn, schema: str, *, verify_id: str, sync_name: str, keys: Sequence[Key], mode: str
) -> None:
    await conn.executemany(
        f"INSERT INTO {quote_ident(schema)}.deletes (verify_id, sync_name, key, mode)"
        " VALUES ($1, $2, $3::jsonb, $4)",
        [(verify_id, sync_name, json.dumps(list(key)), mode) for key in keys],
    )

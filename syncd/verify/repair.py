"""Repair: copy what is missing or different, and delete what the source no longer has,
under guards.

Rows are copied through the same staging table and upsert as a run's batches. Extra
rows are deleted, or marked deleted, only when every guard agrees: absence is never
inferred from a read that failed, from a source that is suddenly empty, or from a key
that is back by the time of the delete; and a delete larger than the sync allows needs
``--confirm-deletes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from syncd.config import VerifyConfig
from syncd.sources import RecordBatch
from syncd.target import TargetTable
from syncd.verify.sides import Key, Side

CHUNK_KEYS = 1000
"""Keys copied per transaction, and read again per statement before a delete."""


@dataclass(frozen=True)
class DeletePolicy:
    mode: str
    """off, soft or hard."""
    max_ratio: float
    max_rows: int
    confirmed: bool
    """--confirm-deletes: the limits on how much may be deleted do not apply."""

    @classmethod
    def of(cls, config: VerifyConfig, confirmed: bool) -> DeletePolicy:
        return cls(config.deletes, config.max_delete_ratio, config.max_delete_rows, confirmed)


def _chunks(keys: Sequence[Key]) -> list[Sequence[Key]]:
    return [keys[start : start + CHUNK_KEYS] for start in range(0, len(keys), CHUNK_KEYS)]


async def copy(
    conn: asyncpg.Connection, table: TargetTable, source: Side, keys: Sequence[Key]
) -> int:
    """Copy the source's rows with these keys into the target, a chunk a transaction, so
    a repair cut short keeps what it copied; how many rows were written."""
    written = 0
    for chunk in _chunks(keys):
        records = await source.rows(chunk)
        if not records:
            continue
        batch = RecordBatch(records=records, end=chunk[-1], exhausted=True)
        async with conn.transaction():
            _, changed = await table.write(conn, batch, direct=False)
        written += changed
    return written


def refusal(
    policy: DeletePolicy, extra: int, source_rows: int, target_rows: int, null_keys: int
) -> str | None:
    """Why deleting ``extra`` rows must not happen, if it must not."""
    if source_rows == 0:
        return (
            f"the source has no rows and the target has {target_rows}: an empty source is"
            " more often a broken one than a table emptied on purpose"
        )
    if null_keys:
        return f"the target holds {null_keys} rows whose key is NULL, which no verify can place"
    if policy.confirmed:
        return None
    if extra > policy.max_rows:
        return (
            f"{extra} rows would be deleted, more than max_delete_rows ({policy.max_rows});"
            " give --confirm-deletes to delete them all the same"
        )
    if target_rows and extra / target_rows > policy.max_ratio:
        return (
            f"{extra} of the target's {target_rows} rows would be deleted, more than"
            f" max_delete_ratio ({policy.max_ratio:g}); give --confirm-deletes to delete them"
            " all the same"
        )
    return None


async def back_in_source(source: Side, keys: Sequence[Key]) -> int:
    """How many of ``keys`` the source holds now."""
    present = 0
    for chunk in _chunks(keys):
        present += len(await source.reread(chunk, None))
    return present

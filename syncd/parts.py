"""A part of a sync: a range of its keys that one run reads on its own.

The engine reads a part as it reads any pass, batch by batch, but takes no lock
for it and keeps no position of the sync's: whoever hands the part out decides
who reads it, and records each batch through its ledger, inside the batch's own
transaction. A ledger that refuses a batch rolls its rows back with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from syncd.pg import Conn
from syncd.sources import Position, Window


class Ledger(Protocol):
    async def record(self, conn: Conn, end: Position, rows_read: int, rows_written: int) -> None:
        """Record a batch that ends at ``end``, inside its transaction; raise to refuse it."""
        ...


@dataclass(frozen=True)
class Part:
    window: Window
    """The keys to read, in key order, from where the part was left off."""
    ledger: Ledger
    direct: bool = False
    """None of its rows can be in the target yet: they may be copied straight in."""

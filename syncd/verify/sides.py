"""What verify asks of each database: the same few questions about key segments.

A key is a tuple of the key columns' values in their text form, as a position's are,
so it passes from one database to the other and into JSON unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Key = tuple[str, ...]


@dataclass(frozen=True)
class Segment:
    """The keys after ``low`` up to and including ``high``; None is open on that end."""

    low: Key | None = None
    high: Key | None = None


@dataclass(frozen=True)
class Checksum:
    rows: int
    total: int
    """The sum of the rows' 60-bit hashes: a sum, not a xor, so that two equal rows
    count twice instead of cancelling out."""


EMPTY = Checksum(0, 0)


@dataclass(frozen=True)
class Reread:
    """A row as the source holds it now."""

    hash: int
    pending: bool
    """It changed after the sync's committed position: the next run copies it."""


class Side(Protocol):
    """One database's view of the compared rows."""

    async def checksums(self, segment: Segment, bounds: Sequence[Key]) -> list[Checksum]:
        """The checksum of each part of ``segment`` cut at ``bounds`` (each the last key
        of its part): one more part than bounds."""
        ...

    async def bounds(self, segment: Segment, parts: int) -> list[Key]:
        """Keys that cut the rows of ``segment`` into ``parts`` parts of equal size (fewer
        when it has fewer rows), each the last key of its part, the last part's left out."""
        ...

    async def hashes(self, segment: Segment) -> dict[Key, int]:
        """Every row of ``segment``: its key and its hash."""
        ...

    async def reread(self, keys: Sequence[Key], position: str | None) -> dict[Key, Reread]:
        """The rows with these keys now, each pending if its cursor is past ``position``
        (a committed position's cursor value; None: the sync never committed one)."""
        ...

    async def rows(self, keys: Sequence[Key]) -> list[tuple[Any, ...]]:
        """The whole rows with these keys, their columns in the sync's order."""
        ...

    async def remove(self, keys: Sequence[Key], marker: str | None) -> int:
        """The target's: delete these rows (or set ``marker`` to now in them) within the
        caller's transaction; how many there were."""
        ...

    async def null_keys(self) -> int:
        """How many rows have a NULL in a key column, which no segment holds."""
        ...

"""The search for differing rows: segment checksums, split where they differ.

The key range is cut into ``FANOUT`` segments of equal size, their bounds taken from
the target (``NTILE`` over its keys, so sparse keys still give even segments). Both
databases sum the row hashes of each segment side by side. A segment whose count or
sum differs is cut again, until it is small enough that fetching its keys and row
hashes costs less than another round of checksums: a leaf. Segments that are equal
cost one scan in each database and no rows on the wire.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from syncd.handoff import task_group
from syncd.verify.sides import Checksum, Key, Segment, Side

A = TypeVar("A")
B = TypeVar("B")

FANOUT = 32
"""Parts per cut: the rows of a 1M-row table are a leaf apart after three cuts."""
LEAF_ROWS = 256
"""A differing segment with no more rows than this on either side is read key by key.
Each further cut costs a scan of the segment inside each database and returns 32 sums,
where reading it returns every row's key and hash: cutting down to a few hundred rows
keeps the rows fetched for scattered differences to a small share of the table."""


@dataclass
class Search:
    """What the search found and what it cost."""

    differing: list[Key] = field(default_factory=list)
    """Keys whose row is on one side only, or whose hashes differ."""
    source_rows: int = 0
    target_rows: int = 0
    segments_checked: int = 0
    rows_fetched: int = 0


async def side_by_side(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both answers, asked at once; if either fails, the other is cancelled and the
    failure raised as itself."""
    async with task_group() as group:
        one = group.create_task(_awaited(first))
        two = group.create_task(_awaited(second))
    return one.result(), two.result()


async def _awaited(awaitable: Awaitable[A]) -> A:
    return await awaitable


async def search(source: Side, target: Side) -> Search:
    """Every key whose row differs between ``source`` and ``target``."""
    found = Search()
    whole = Segment()
    bounds = await _bounds(source, target, whole, None, None)
    sums = await _checksums(source, target, whole, bounds, found)
    found.source_rows = sum(s.rows for s, _ in sums)
    found.target_rows = sum(t.rows for _, t in sums)
    # A stack of the segments still to look into, the one of lowest keys on top.
    differing = _differing(whole, bounds, sums)[::-1]
    while differing:
        segment, source_sum, target_sum = differing.pop()
        if max(source_sum.rows, target_sum.rows) <= LEAF_ROWS:
            await _compare_leaf(source, target, segment, found)
            continue
        bounds = await _bounds(source, target, segment, source_sum, target_sum)
        if not bounds:
            await _compare_leaf(source, target, segment, found)
            continue
        sums = await _checksums(source, target, segment, bounds, found)
        differing += _differing(segment, bounds, sums)[::-1]
    return found


async def _bounds(
    source: Side,
    target: Side,
    segment: Segment,
    source_sum: Checksum | None,
    target_sum: Checksum | None,
) -> list[Key]:
    """Where to cut ``segment``: at the target's keys, or at the source's where the target
    holds less than half as many rows (a target still being filled, say)."""
    if source_sum is not None and target_sum is not None:
        if source_sum.rows > 2 * target_sum.rows:
            return await source.bounds(segment, FANOUT)
        return await target.bounds(segment, FANOUT)
    bounds = await target.bounds(segment, FANOUT)
    if len(bounds) < FANOUT - 1:
        from_source = await source.bounds(segment, FANOUT)
        if len(from_source) > len(bounds):
            return from_source
    return bounds


async def _checksums(
    source: Side, target: Side, segment: Segment, bounds: list[Key], found: Search
) -> list[tuple[Checksum, Checksum]]:
    source_sums, target_sums = await side_by_side(
        source.checksums(segment, bounds), target.checksums(segment, bounds)
    )
    found.segments_checked += len(source_sums)
    return list(zip(source_sums, target_sums, strict=True))


def _differing(
    segment: Segment, bounds: list[Key], sums: list[tuple[Checksum, Checksum]]
) -> list[tuple[Segment, Checksum, Checksum]]:
    lows = [segment.low, *bounds]
    highs = [*bounds, segment.high]
    return [
        (Segment(low, high), source_sum, target_sum)
        for low, high, (source_sum, target_sum) in zip(lows, highs, sums, strict=True)
        if source_sum != target_sum
    ]


async def _compare_leaf(source: Side, target: Side, segment: Segment, found: Search) -> None:
    source_rows, target_rows = await side_by_side(source.hashes(segment), target.hashes(segment))
    found.rows_fetched += len(source_rows) + len(target_rows)
    # In the source's key order, then the target's rows the source lacks.
    keys = [*source_rows, *(k for k in target_rows if k not in source_rows)]
    found.differing += [k for k in keys if source_rows.get(k) != target_rows.get(k)]

"""What each differing key is: missing, extra, different, or pending.

The checksums of the two databases are read moments apart, and a writer or a run
may change rows in between. So each differing key is read again: from the source,
then from the target, then from the source once more. A row that changed in the
source after the sync's committed position, or while it was being read, is pending:
the next run copies it, and it is no difference. The committed position is read
first, so a run that commits meanwhile can only make rows look pending, never
different.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from syncd.verify.sides import Key, Reread, Side

KINDS = ("missing", "extra", "different", "pending")
REREAD_KEYS = 1000
"""Keys read again per statement."""


@dataclass
class Classified:
    keys: dict[str, list[Key]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    rows_fetched: int = 0

    @property
    def differences(self) -> int:
        return sum(len(self.keys[kind]) for kind in KINDS if kind != "pending")


async def classify(
    source: Side, target: Side, keys: Sequence[Key], position: str | None
) -> Classified:
    """Sort ``keys`` by what their rows are now; ``position`` is the cursor value of the
    sync's committed position (None: it has none)."""
    classified = Classified()
    for start in range(0, len(keys), REREAD_KEYS):
        chunk = keys[start : start + REREAD_KEYS]
        before = await source.reread(chunk, position)
        in_target = await target.reread(chunk, None)
        after = await source.reread(chunk, position)
        classified.rows_fetched += len(before) + len(in_target) + len(after)
        for key in chunk:
            kind = _kind(before.get(key), in_target.get(key), after.get(key))
            if kind is not None:
                classified.keys[kind].append(key)
    return classified


def _kind(before: Reread | None, in_target: Reread | None, after: Reread | None) -> str | None:
    if after is None:
        return "extra" if in_target is not None else None
    if before != after or after.pending:
        return "pending"
    if in_target is None:
        return "missing"
    return "different" if in_target.hash != after.hash else None

"""Schema drift: the source's columns changed since the last run, and the sync's policy
says what follows.

A run compares the columns it reads with those the previous run saw. A new column
is added to the target and backfilled, or ignored, or stops the run; a dropped one
is kept in the target (NULL in rows written from then on) or stops the run; a type
that grew is widened in the target where no value can change, and any other change
stops the run. A rename is a drop and an add. The key, the cursor and the columns a
sync names are never dropped silently: their absence stops the run when the source
is described.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from syncd.config import SchemaChangePolicy
from syncd.errors import SchemaChanged
from syncd.sources import Column, Shape

SourceColumns = list[tuple[str, str, str]]
"""(source column name, PostgreSQL type, target column name), in the source's order."""


@dataclass(frozen=True)
class Change:
    column: str
    change: str
    """added, dropped or type_changed."""
    old_type: str | None
    new_type: str | None
    action: str
    """What the policy made of it: added, ignored, kept, widened, or refused."""

    def describe(self) -> str:
        if self.change == "added":
            return f"{self.column} ({self.new_type}) was added"
        if self.change == "dropped":
            return f"{self.column} ({self.old_type}) was dropped"
        return f"{self.column} changed from {self.old_type} to {self.new_type}"


@dataclass
class Followed:
    """What a run does about the source's columns."""

    changes: list[Change] = field(default_factory=list)
    add: list[Column] = field(default_factory=list)
    """Columns to add to the target, then backfill."""
    widen: list[Column] = field(default_factory=list)
    """Target columns to alter to the column's type."""
    refused: list[Change] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    """Target columns kept after the source dropped them: NULL in rows written from now."""

    @property
    def backfill(self) -> list[str]:
        return [column.name for column in self.add]


def columns_of(shape: Shape) -> SourceColumns:
    return [(c.name, c.pg_type, c.target_name) for c in shape.columns]


def follow(
    previous: SourceColumns,
    shape: Shape,
    policy: SchemaChangePolicy,
    ignored: list[str],
    dropped: list[str],
) -> Followed:
    """Compare the columns the last run saw with ``shape`` and apply ``policy``: what to
    add, widen, ignore and keep, and what the policy refuses."""
    before = {name: kind for name, kind, _ in previous}
    now = {c.name: c for c in shape.columns}
    followed = Followed(
        ignored=[name for name in ignored if name in now],
        dropped=[name for name in dropped if name not in {c.target_name for c in shape.columns}],
    )
    refused = followed.refused
    for column in shape.columns:
        if column.name in before or column.name in ignored:
            continue
        action = {"add": "added", "ignore": "ignored", "fail": "refused"}[policy.new_column]
        change = Change(column.name, "added", None, column.pg_type, action)
        followed.changes.append(change)
        if action == "added":
            followed.add.append(column)
        elif action == "ignored":
            followed.ignored.append(column.name)
        else:
            refused.append(change)
    for name, old_type, target_name in previous:
        if name in now:
            new_type = now[name].pg_type
            if new_type == old_type:
                continue
            widened = policy.type_change == "widen" and widens(old_type, new_type)
            change = Change(
                name, "type_changed", old_type, new_type, "widened" if widened else "refused"
            )
            followed.changes.append(change)
            if widened:
                followed.widen.append(now[name])
            else:
                refused.append(change)
        elif name not in ignored:
            action = "kept" if policy.dropped_column == "keep" else "refused"
            change = Change(name, "dropped", old_type, None, action)
            followed.changes.append(change)
            if action == "kept":
                followed.dropped.append(target_name)
            else:
                refused.append(change)
    return followed


def refusal(refused: list[Change], policy: SchemaChangePolicy) -> SchemaChanged:
    """The error that stops a run whose policy refuses ``refused``."""
    return SchemaChanged(
        "the source's columns changed: "
        + "; ".join(change.describe() for change in refused)
        + ". "
        + _way_out(refused, policy)
    )


def _way_out(refused: list[Change], policy: SchemaChangePolicy) -> str:
    if all(change.change == "type_changed" for change in refused) and policy.type_change == "widen":
        return (
            "Only a change that loses no value is followed: fix the target column and run"
            " with --full-refresh, or give the column a type of its own with 'types'"
        )
    return (
        "The sync's schema_changes policy refuses it: change the policy, or fix the target"
        " and run with --full-refresh"
    )


_INTEGERS = ("smallint", "integer", "bigint")
_NUMERIC = re.compile(r"numeric(?:\((\d+),(\d+)\))?")
_VARCHAR = re.compile(r"character varying(?:\((\d+)\))?")
_TIMESTAMP = re.compile(r"timestamp(?:\((\d)\))? (with|without) time zone")


def widens(old: str, new: str) -> bool:
    """Every value of type ``old`` is, unchanged, a value of type ``new``."""
    if old in _INTEGERS:
        if new in _INTEGERS:
            return _INTEGERS.index(new) >= _INTEGERS.index(old)
        digits = {"smallint": 5, "integer": 10, "bigint": 19}[old]
        match = _NUMERIC.fullmatch(new)
        return match is not None and (match[1] is None or int(match[1]) - int(match[2]) >= digits)
    if (a := _NUMERIC.fullmatch(old)) and (b := _NUMERIC.fullmatch(new)):
        if b[1] is None:
            return True
        if a[1] is None:
            return False
        return int(b[2]) >= int(a[2]) and int(b[1]) - int(b[2]) >= int(a[1]) - int(a[2])
    if _VARCHAR.fullmatch(old) and new == "text":
        return True
    if (a := _VARCHAR.fullmatch(old)) and (b := _VARCHAR.fullmatch(new)):
        return b[1] is None or (a[1] is not None and int(b[1]) >= int(a[1]))
    if (a := _TIMESTAMP.fullmatch(old)) and (b := _TIMESTAMP.fullmatch(new)):
        return a[2] == b[2] and int(b[1] or 6) >= int(a[1] or 6)
    return False

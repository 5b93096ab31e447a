"""A verify's outcome, as JSON for programs and as a table for people."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from syncd.verify.classify import KINDS, Classified
from syncd.verify.compare import Search

LISTED_KEYS = 1000
"""Keys listed per kind; the counts are always exact."""


@dataclass(frozen=True)
class Repaired:
    copied: int
    deleted: int
    refused: str | None = None
    """Why the extra rows were not deleted, when a guard refused."""


@dataclass(frozen=True)
class Report:
    sync: str
    search: Search
    classified: Classified
    duration_s: float
    repaired: Repaired | None = None
    remaining: int | None = None
    """After a repair: the differences it left (extra rows it was not to delete…)."""

    @property
    def equal(self) -> bool:
        """No row is missing, extra or different; pending rows are the next run's."""
        return self.classified.differences == 0

    @property
    def settled(self) -> bool:
        """Equal, or made equal by the repair: the command succeeds."""
        return self.equal if self.remaining is None else self.remaining == 0

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "sync": self.sync,
            "equal": self.equal,
            "source_rows": self.search.source_rows,
            "target_rows": self.search.target_rows,
        }
        for kind in KINDS:
            keys = self.classified.keys[kind]
            document[kind] = {"count": len(keys), "keys": [list(k) for k in keys[:LISTED_KEYS]]}
        document |= {
            "segments_checked": self.search.segments_checked,
            "rows_fetched": self.search.rows_fetched + self.classified.rows_fetched,
            "duration_s": round(self.duration_s, 3),
        }
        if self.repaired is not None:
            document["repaired"] = {
                "copied": self.repaired.copied,
                "deleted": self.repaired.deleted,
                "deletes_refused": self.repaired.refused,
            }
        return document

    def as_table(self) -> str:
        document = self.as_json()
        verdict = "equal" if self.equal else "differences found"
        lines = [f"{self.sync}: {verdict}", f"{'kind':<10} {'rows':>10}  keys"]
        for kind in KINDS:
            found = document[kind]
            shown = ", ".join(_key(k) for k in found["keys"][:5])
            more = found["count"] - min(found["count"], 5)
            if more:
                shown += f", … {more} more"
            lines.append(f"{kind:<10} {found['count']:>10}  {shown}".rstrip())
        lines.append(
            f"source rows {document['source_rows']}, target rows {document['target_rows']};"
            f" {document['segments_checked']} segments checked,"
            f" {document['rows_fetched']} rows fetched in {document['duration_s']:.2f} s"
        )
        if self.repaired is not None:
            lines.append(
                f"repaired: {self.repaired.copied} rows copied, {self.repaired.deleted} deleted"
                + ("" if self.settled else f"; {self.remaining} differences remain")
            )
            if self.repaired.refused is not None:
                lines.append(f"deletes refused: {self.repaired.refused}")
        return "\n".join(lines)


def _key(key: list[str]) -> str:
    return "(" + ", ".join(key) + ")"

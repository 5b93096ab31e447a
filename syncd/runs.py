"""What a run is asked to do, what it tells while it goes, and what it answers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal, Protocol

from syncd.chunks import Progress
from syncd.parts import Part
from syncd.sources import Position


def new_run_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class RunRequest:
    sync_name: str
    trigger: str = "cli"
    batch_size: int | None = None
    full_refresh: bool = False
    run_id: str = field(default_factory=new_run_id)
    backfill_batches: int | None = None
    """At most this many backfill batches in this run, so a daemon keeps its schedule
    while a big table is filled in; None goes on to the end."""
    part: Part | None = None
    """Read only this part of the sync, unlocked, recording batches in its ledger."""


@dataclass
class RunResult:
    run_id: str
    sync_name: str
    status: str = "running"
    batches: int = 0
    rows_read: int = 0
    rows_written: int = 0
    error: str | None = None
    missing_index: str | None = None
    """The CREATE INDEX the source lacks for reading by batches, when it lacks one."""
    schema_changes: list[str] = field(default_factory=list)
    """What the run did about each change of the source's columns: added, widened…"""
    source_newest: str | None = None
    """The newest cursor value in the source when the run ended."""
    cursor_kind: str | None = None
    """What the cursor's values measure, for freshness: see ``kind_of_cursor``."""
    backfill_remaining: bool = False
    """The run stopped its backfill at its budget of batches: a later run goes on with it."""

    @property
    def rows_unchanged(self) -> int:
        return self.rows_read - self.rows_written


@dataclass(frozen=True)
class BatchReport:
    sync_name: str
    run_id: str
    rows: int
    rows_written: int
    position: Position | None
    duration_s: float
    run_rows_read: int
    run_rows_per_s: float
    rows_estimate: int | None
    """About how many rows the run reads in all: never fewer than it has read."""


ChunkState = Literal["claimed", "committed", "reclaimed", "lost"]


@dataclass(frozen=True)
class ChunkReport:
    """A worker of this process claimed, committed, took over or lost a chunk of a load."""

    sync_name: str
    load_id: str
    chunk: int
    state: ChunkState
    instance: str
    rows: int | None
    """Rows the worker read of the chunk, once it committed it; None before, or if lost."""
    load: Progress
    """The whole load's progress, over every process, just after this change."""


class RunObserver(Protocol):
    def run_started(self, sync_name: str, run_id: str, rows_estimate: int | None) -> None: ...

    def batch_committed(self, report: BatchReport) -> None: ...

    def chunk_changed(self, report: ChunkReport) -> None: ...

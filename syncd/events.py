"""The events a live page follows, one typed model each: what the stream sends and what
the OpenAPI document publishes for it come from the same class.

The runner publishes plain mappings (its tests read them as such); the stream validates
each one through ``EVENT`` before it goes out, so an event that drifted from its model
fails loudly in the tests instead of reaching a client that trusts the document.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from syncd.runs import ChunkState


class RunCounts(BaseModel):
    """How busy the daemon is: the page's count of runs and queue."""

    model_config = ConfigDict(extra="forbid")

    running: int
    queued: int
    max_concurrent_runs: int


class LoadProgress(BaseModel):
    """A parallel load of the sync, in progress or the last one, over every process."""

    model_config = ConfigDict(extra="forbid")

    chunks: int
    done: int
    running: int
    rows_read: int
    instances: int = Field(description="Processes that committed batches of this load.")


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sync_name: str


class RunQueued(_Event):
    """A run waits for a slot (``max_concurrent_runs``)."""

    type: Literal["run_queued"]
    run_id: str
    position: int | None = Field(description="1 for the queued run that starts next.")
    runs: RunCounts


class RunStarted(_Event):
    type: Literal["run_started"]
    run_id: str
    runs: RunCounts


class BatchCommitted(_Event):
    type: Literal["batch_committed"]
    run_id: str
    rows: int = Field(description="Rows in this batch.")
    run_rows_read: int
    rows_per_second: float
    source_rows_estimate: int | None = Field(
        description="The engine's estimate of the rows the run reads, its bar's end."
    )


class ChunkChanged(_Event):
    """A worker of this daemon claimed a chunk of a parallel load, committed it, took it
    over from a worker whose lease ran out, or lost it to another."""

    type: Literal["chunk"]
    run_id: str
    load_id: str
    chunk: int
    state: ChunkState
    instance: str = Field(description="The worker's process: host and pid.")
    rows: int | None = Field(
        description="Rows the worker read of the chunk; null but when committed."
    )
    load: LoadProgress = Field(description="The whole load just after this change.")
    runs: RunCounts


class RunFinished(_Event):
    type: Literal["run_finished"]
    run_id: str
    status: Literal["succeeded", "failed", "cancelled", "skipped"]
    error: str | None
    runs: RunCounts


class SyncReset(_Event):
    """The sync's state was reset: it starts over at its next run."""

    type: Literal["sync_reset"]
    runs: RunCounts


class FreshnessChanged(_Event):
    """The sync turned stale (its lag passed ``max_lag``) or fresh again."""

    type: Literal["freshness"]
    stale: bool
    lag_seconds: float | None
    max_lag_seconds: float | None
    last_success_at: datetime | None
    runs: RunCounts


class VerifyFinished(_Event):
    """A verify started by the daemon ended: its counts, or why it failed."""

    type: Literal["verify"]
    verify_id: str
    repair: bool
    equal: bool | None = Field(description="None when the verify failed.")
    missing: int | None
    extra: int | None
    different: int | None
    pending: int | None
    error: str | None
    runs: RunCounts


Event = Annotated[
    RunQueued
    | RunStarted
    | BatchCommitted
    | ChunkChanged
    | RunFinished
    | SyncReset
    | FreshnessChanged
    | VerifyFinished,
    Field(discriminator="type"),
]
EVENT: TypeAdapter[Event] = TypeAdapter(Event)
EVENT_MODELS: tuple[type[_Event], ...] = (
    RunQueued,
    RunStarted,
    BatchCommitted,
    ChunkChanged,
    RunFinished,
    SyncReset,
    FreshnessChanged,
    VerifyFinished,
)


def event_name(model: type[_Event]) -> str:
    """The name an event of ``model`` goes by on the stream: its ``type``."""
    annotation: Any = model.model_fields["type"].annotation
    (name,) = annotation.__args__
    return str(name)

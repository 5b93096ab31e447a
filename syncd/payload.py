"""The HTTP API's payloads, one typed model each: what a request may carry, what every
answer (errors included) holds. The handlers validate through them and answer with them,
and the OpenAPI document is assembled from their JSON Schema, so the three cannot drift.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from syncd.events import LoadProgress, RunCounts
from syncd.state import RunRecord

MAX_NAME_LENGTH = 200
MAX_LIMIT = 1000


class Payload(BaseModel):
    """Every payload: unknown fields are refused, not ignored; an answer's fields are all
    there, defaults included, and its schema says so."""

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)


# ---- what a request carries -----------------------------------------------------------


def _whole_number(value: object, info: ValidationInfo) -> int:
    """A batch size: an integer, or a float with nothing after the point (JSON Schema counts
    10.0 as an integer, and so do we); in a query string, its digits. Within 1 and the
    daemon's ``max_batch_size``, which validation is given as context."""
    if isinstance(value, str) and _context(info).get("query") and value.isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        found = repr(value) if isinstance(value, str) else type(value).__name__
        raise PydanticCustomError(
            "whole_number", "must be a whole number, found {found}", {"found": found}
        )
    limit = _context(info).get("max_batch_size", DEFAULT_MAX_BATCH_SIZE)
    if not 1 <= value <= limit:
        raise PydanticCustomError(
            "batch_size_range",
            "must be between 1 and {limit}, found {found}",
            {"limit": limit, "found": value},
        )
    return value


def _limit(value: object) -> int:
    if not (isinstance(value, str) and value.isdigit() and 1 <= int(value) <= MAX_LIMIT):
        raise PydanticCustomError(
            "limit", "must be a whole number from 1 to {most}, found {found}",
            {"most": MAX_LIMIT, "found": repr(value)},
        )  # fmt: skip
    return int(value)


def _context(info: ValidationInfo) -> dict[str, Any]:
    return info.context if isinstance(info.context, dict) else {}


def _name(value: object) -> object:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_LENGTH:
        raise PydanticCustomError(
            "sync_name", "must be a string of 1 to {most} characters", {"most": MAX_NAME_LENGTH}
        )
    return value


DEFAULT_MAX_BATCH_SIZE = 100_000
BatchSize = Annotated[int, Field(ge=1), BeforeValidator(_whole_number)]
SyncName = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH), BeforeValidator(_name)]
_NAME_DESCRIPTION = (
    "The sync; default_sync (or the only sync) when omitted."
    " A sync_name in a JSON body takes precedence."
)


def _left_out_by_default(schema: dict[str, Any]) -> None:
    """A field a request leaves out has no value: its default is no null to offer."""
    for field in schema.get("properties", {}).values():
        if "default" in field and field["default"] is None:
            del field["default"]


class Request(Payload):
    """What a request carries: a field is given a value or left out, never null."""

    model_config = ConfigDict(json_schema_extra=_left_out_by_default)

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if value is None and key in cls.model_fields:
                    raise PydanticCustomError(
                        "null", "{key} must be left out rather than null", {"key": key}
                    )
        return data


class NameQuery(Request):
    # A query string may carry what is not ours to read (a cache buster, say).
    model_config = ConfigDict(extra="ignore")

    # SkipJsonSchema: a null is refused ("leave it out"), so the document offers none.
    sync_name: SyncName | SkipJsonSchema[None] = Field(None, description=_NAME_DESCRIPTION)


class RunQuery(NameQuery):
    batch_size: BatchSize | SkipJsonSchema[None] = Field(
        None,
        description="Rows per batch for this run; the sync's batch_size when omitted."
        " A batch_size in the JSON body takes precedence.",
    )


class RunsQuery(NameQuery):
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT), BeforeValidator(_limit)] = 20


class RunBody(Request):
    """What to run; the query string's values where the body leaves them out."""

    batch_size: BatchSize | SkipJsonSchema[None] = None
    sync_name: SyncName | SkipJsonSchema[None] = None


class NameBody(Request):
    sync_name: SyncName | SkipJsonSchema[None] = None


class VerifyBody(Request):
    sync: SyncName | SkipJsonSchema[None] = None
    repair: StrictBool = Field(
        default=False, description="Also copy what differs, and delete as verify.deletes says."
    )


# ---- what an answer holds -------------------------------------------------------------


class Error(Payload):
    status: Literal["error"] = "error"
    message: str


class BusyError(Error):
    """The sync is running: the answer names its run."""

    run_id: str | None


class RunAnswer(Payload):
    batch_size: int
    sync_name: str
    run_id: str


class Started(RunAnswer):
    status: Literal["started"] = "started"
    message: str


class Queued(RunAnswer):
    status: Literal["queued"] = "queued"
    message: str
    queue_position: int | None = Field(description="1 for the queued run that starts next.")


class Completed(RunAnswer):
    status: Literal["complete"] = "complete"
    message: str = "Batch sync completed successfully"
    total_synced: int
    rows_this_run: int


class StillRunning(RunAnswer):
    """A start-sync whose run outlasted ``api.start_sync_wait``: it goes on, and this says
    where to follow it."""

    status: Literal["running"] = "running"
    message: str
    status_url: str = Field(description="The sync's status, which names its run_id while it runs.")
    runs_url: str = Field(description="The sync's recent runs: the run's outcome once it ends.")
    events_url: str = Field(description="The event stream, which tells run_finished.")


class Failed(RunAnswer):
    status: Literal["failed"] = "failed"
    message: str = "Batch sync failed"
    error: str | None


class VerifyFound(Payload):
    count: int = Field(description="Exact, however many keys are listed.")
    keys: list[list[str | None]] = Field(
        description="At most 1,000 keys, each the key columns' values as text, in key order."
    )


class VerifyRepaired(Payload):
    copied: int
    deleted: int
    deletes_refused: str | None = Field(description="Why extra rows were not deleted.")


class LastVerify(Payload):
    """The last verify of the sync, from any process, as ``syncd verify --json`` prints it."""

    sync: str
    equal: bool = Field(description="No row missing, extra or different; pending rows aside.")
    source_rows: int
    target_rows: int
    missing: VerifyFound
    extra: VerifyFound
    different: VerifyFound
    pending: VerifyFound
    segments_checked: int
    rows_fetched: int
    duration_s: float
    repaired: VerifyRepaired | None = None
    started_at: datetime
    finished_at: datetime


class Freshness(Payload):
    """How far the target is behind the source, as the daemon's watch last saw it."""

    source_newest: str | None = Field(description="The newest cursor value in the source.")
    synced_to: str | None = Field(description="The cursor value the target has reached.")
    lag_seconds: float | None = Field(
        description="With a time cursor, the first less the second; with a number, the age of"
        " the last success while rows wait; without a cursor, the age of the last success."
        " null while nothing tells (nothing synced yet)."
    )
    last_success_at: datetime | None
    stale: bool = Field(description="The lag is above the sync's max_lag (or unknown too long).")


class SchemaChange(Payload):
    """A change of the source's columns, and what the sync's policy did about it."""

    at: datetime
    run_id: str | None
    column: str
    change: Literal["added", "dropped", "type_changed"]
    old_type: str | None
    new_type: str | None
    action: str


class Backfill(Payload):
    """Columns added to the target, being filled in for the rows it already had."""

    columns: list[str]
    position: list[str | None] | None = Field(
        description="The key the backfill has reached; null before its first batch."
    )


class SyncState(Payload):
    """Where a sync stands: its state as stored, and what this daemon knows of it live."""

    sync_name: str
    source: str
    target_table: str
    current_offset: int = Field(description="Rows read since the last reset.")
    total_synced: int = Field(description="Rows written since the last reset.")
    last_sync_at: datetime | None
    is_complete: bool
    total_in_db: int | None
    running: bool
    run_id: str | None = Field(
        description="The running run's, else the queued run's, else the one holding"
        " the sync in another process."
    )
    queued: bool = Field(description="A run of the sync waits for a slot (max_concurrent_runs).")
    queued_at: datetime | None
    queue_position: int | None = Field(description="1 for the queued run that starts next.")
    holder: str | None
    position: list[str | None] | None
    rows_per_second: float | None
    source_rows_estimate: int | None
    run_rows_read: int | None
    last_run_status: str | None
    missing_index: str | None = Field(
        description="The CREATE INDEX the source table lacks, as the last run found:"
        " without it each run reads the table in one pass."
    )
    last_error: str | None
    schedule: str | None
    next_run_at: datetime | None
    freshness: Freshness | None = Field(
        description="null until the daemon's watch has first looked at the sync."
    )
    schema_changes: list[SchemaChange] = Field(
        description="The latest changes of the source's columns, newest first."
    )
    last_verify: LastVerify | None = Field(
        default=None, description="null until the sync is first verified, by any process."
    )
    verifying: bool = Field(default=False, description="A verify of the sync is going here.")
    backfill: Backfill | None = Field(
        default=None, description="null unless new columns are being filled in."
    )
    chunks: LoadProgress | None = Field(
        default=None, description="null unless the sync has had a parallel load."
    )


class VerifyStarted(Payload):
    status: Literal["started"] = "started"
    message: str
    sync_name: str
    verify_id: str


class Status(SyncState):
    status: Literal["success"] = "success"


class ResetDone(Payload):
    status: Literal["success"] = "success"
    message: str
    sync_name: str


class Count(Payload):
    status: Literal["success"] = "success"
    count: int
    table: str
    sync_name: str


class Health(Payload):
    """degraded while a sync is stale, with the reasons; the daemon itself is fine (its
    /healthz stays 200), since restarting it would not bring the rows any sooner."""

    status: Literal["healthy", "degraded"]
    module: str = "syncd"
    endpoints: list[str]
    reasons: list[str]


class PoolUse(Payload):
    """One database's connections from the whole daemon."""

    pool: str = Field(description="target, or source:NAME")
    in_use: int
    idle: int
    max: int = Field(description="max_connections")
    waiting: int = Field(description="Runs and requests waiting for one")


class Syncs(Payload):
    status: Literal["success"] = "success"
    syncs: list[SyncState]
    runs: RunCounts
    pools: list[PoolUse]


class Runs(Payload):
    status: Literal["success"] = "success"
    sync_name: str
    runs: list[RunRecord]


class Alive(Payload):
    status: Literal["ok"] = "ok"


class Ready(Payload):
    status: Literal["ready"] = "ready"


class NotReady(Payload):
    status: Literal["unavailable"] = "unavailable"
    reasons: list[str]


class PageConfig(Payload):
    """What the status page must know before it acts; nothing here is a secret."""

    status: Literal["success"] = "success"
    token_required: bool
    max_batch_size: int

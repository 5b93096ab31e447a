"""What the configuration says: every key, its default and its check, as frozen models.

``syncd.configfile`` reads them from the file. Anything else in syncd may trust a
``Config`` without re-checking it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

from syncd.errors import ConfigError, UnknownSync
from syncd.identifiers import TableName, quote_ident
from syncd.redact import redact
from syncd.units import ByteSize, Duration, not_negative, positive_duration


def _check_identifier(value: str) -> str:
    quote_ident(value)
    return value


def _check_table_name(value: str) -> str:
    TableName.parse(value)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Secrets(_Model):
    """A password given inline or, for systemd credentials, in a file."""

    password: SecretStr | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _one_password(self) -> _Secrets:
        if self.password is not None and self.password.get_secret_value() and self.password_file:
            raise ValueError("give password or password_file, not both")
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # A DSN may carry a password of its own; repr() must not show it.
        for name, value in super().__repr_args__():
            yield name, redact(value) if name == "dsn" and isinstance(value, str) else value

    def secret(self) -> str | None:
        if self.password_file is not None:
            path = self.password_file
            credentials = os.environ.get("CREDENTIALS_DIRECTORY")
            if not path.is_absolute() and credentials:
                path = Path(credentials) / path
            try:
                return path.read_text().rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"password_file: cannot read {path}: {exc.strerror}") from None
        if self.password is None or not self.password.get_secret_value():
            return None
        return self.password.get_secret_value()


class _Database(_Secrets):
    """How long syncd waits on a database before it calls the wait a failure."""

    connect_timeout: Duration = timedelta(seconds=10)
    statement_timeout: Duration = timedelta(minutes=10)
    """The longest one statement may take (a lock held on the table, say) before the
    run fails with that reason instead of hanging."""
    pool_timeout: Duration = timedelta(seconds=30)
    """How long a run waits for one of the database's ``max_connections`` to come free
    (or for a server that had no connection slot to take new ones again) before it fails."""

    _positive = field_validator("connect_timeout", "statement_timeout", "pool_timeout")(
        positive_duration
    )


class TargetConfig(_Database):
    dsn: str
    """Required: a default database would quietly receive syncd's state and every row."""
    state_schema: str = "syncd"
    synchronous_commit: Literal["on", "off"] = "off"
    """Whether each batch's commit waits for its WAL to be flushed. Off loses nothing
    but recent whole batches on a server crash, which the next run reads again."""
    max_connections: int = Field(default=6, ge=2, le=1000)
    """The daemon's connections to the target, all told: each running sync's writer, the
    API's reads and the state store's. The daemon never opens more."""

    _state_schema = field_validator("state_schema")(_check_identifier)


DATABASE_TIME_ZONE = "database"


def _time_zone(value: str | None) -> str | None:
    if value is None or value == DATABASE_TIME_ZONE:
        return value
    try:
        ZoneInfo(value)
    except (ValueError, ZoneInfoNotFoundError):
        raise ValueError(
            f"expected a time zone name such as Europe/Berlin or America/New_York,"
            f" or {DATABASE_TIME_ZONE!r}"
        ) from None
    return value


class _Source(_Database):
    max_connections: int = Field(default=4, ge=1, le=1000)
    """The daemon's connections (Oracle: sessions) to this source, all told: one for each
    sync of it that runs. The daemon never opens more."""


class PostgresSourceConfig(_Source):
    kind: Literal["postgres"]
    dsn: str
    cursor_time_zone: str | None = None
    """The zone in which the application writes zone-less cursors (timestamp, date), so that
    'now' can be read in it: lag needs it, and a fall-back of its clock is re-read."""

    @field_validator("cursor_time_zone")
    @classmethod
    def _named_zone(cls, value: str | None) -> str | None:
        if value == DATABASE_TIME_ZONE:
            raise ValueError("name the zone for a PostgreSQL source, such as Europe/Berlin")
        return _time_zone(value)


class OracleSourceConfig(_Source):
    kind: Literal["oracle"]
    dsn: str
    user: str = Field(min_length=1)
    cursor_time_zone: str | None = None
    """As for PostgreSQL; 'database' takes 'now' from the server's clock (SYSTIMESTAMP
    without its offset, what SYSDATE gives), but cannot see its clock fall back."""

    _zone = field_validator("cursor_time_zone")(_time_zone)


SourceConfig = Annotated[PostgresSourceConfig | OracleSourceConfig, Field(discriminator="kind")]


class EverySchedule(_Model):
    every: Duration
    offset: Duration | None = None
    """Where in each interval the sync fires, counted from midnight UTC; by default a
    point of its own, drawn from its name, so that syncs with the same interval are
    spread across it instead of firing in the same second."""

    _positive = field_validator("every")(positive_duration)
    _offset = field_validator("offset")(not_negative)

    @model_validator(mode="after")
    def _offset_within(self) -> EverySchedule:
        if self.offset is not None and self.offset >= self.every:
            raise ValueError("'offset' must be shorter than 'every'")
        return self


class CronSchedule(_Model):
    cron: str = Field(min_length=1)
    offset: Duration | None = None
    """How long after each time the cron expression names the sync fires; by default a
    point within the minute, drawn from its name, for the same reason as above."""

    _offset = field_validator("offset")(not_negative)

    @field_validator("cron")
    @classmethod
    def _parsable(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        CronTrigger.from_crontab(value)
        return value


def _schedule_kind(value: object) -> str | None:
    if isinstance(value, dict):
        kinds = [k for k in ("every", "cron") if k in value]
        return kinds[0] if len(kinds) == 1 else None
    return "every" if isinstance(value, EverySchedule) else "cron"


Schedule = Annotated[
    Annotated[EverySchedule, Tag("every")] | Annotated[CronSchedule, Tag("cron")],
    Discriminator(
        _schedule_kind,
        custom_error_type="schedule",
        custom_error_message="expected {every: DURATION} or {cron: 'MIN HOUR DOM MON DOW'}",
    ),
]


class RetryConfig(_Model):
    """How long to keep trying when a database connection is lost."""

    attempts: int = Field(default=6, ge=1, le=100)
    initial_delay: Duration = timedelta(seconds=1)
    max_delay: Duration = timedelta(seconds=60)


class SchemaChangePolicy(_Model):
    """What a run does when the source's columns changed since the last run."""

    new_column: Literal["add", "ignore", "fail"] = "add"
    """add: add it to the target and backfill it for every existing row."""
    dropped_column: Literal["keep", "fail"] = "keep"
    """keep: the target keeps the column; rows written from then on get NULL there."""
    type_change: Literal["widen", "fail"] = "widen"
    """widen: alter the target where no value can change; anything else stops the run."""


def _yaml_off(value: object) -> object:
    """YAML 1.1 reads a bare ``off`` as false; here it is the word."""
    return "off" if value is False else value


class VerifyConfig(_Model):
    """When the daemon verifies the sync, and what a repair may do."""

    every: Duration | None = None
    """Verify on this schedule; None: only when asked."""
    repair: bool = False
    """A scheduled verify also repairs."""
    deletes: Annotated[Literal["off", "soft", "hard"], BeforeValidator(_yaml_off)] = "off"
    """What a repair does with rows the source no longer has: nothing, mark them in
    ``_syncd_deleted_at``, or delete them."""
    max_delete_ratio: float = Field(default=0.05, ge=0, le=1)
    """A repair that would delete more than this share of the target's rows is refused."""
    max_delete_rows: int = Field(default=10_000, ge=0)
    """... or more than this many rows."""

    _every = field_validator("every")(lambda v: v if v is None else positive_duration(v))


class SyncConfig(_Model):
    source: str
    table: str | None = None
    query: str | None = None
    key: list[str] | None = Field(default=None, min_length=1)
    cursor: str | None = None
    lookback: Duration | None = None
    columns: list[str] | None = Field(default=None, min_length=1)
    target_table: str
    batch_size: int = Field(default=10_000, ge=1, le=1_000_000)
    batch_bytes: ByteSize = Field(default=64 * 10**6, ge=64 * 1024)
    """A batch also ends once its rows take this many bytes, so that wide rows cannot
    make a batch of ``batch_size`` rows outgrow memory."""
    parallel: int = Field(default=2, ge=1, le=64)
    """Workers of this process that load chunks at once in an initial load or full refresh."""
    chunk_rows: int = Field(default=250_000, ge=1)
    """About how many rows a chunk of a parallel load holds."""
    chunk_lease: Duration = timedelta(minutes=2)
    """How long a chunk stays its worker's without a committed batch: then anyone may take
    it over, resuming after its last committed key."""
    schedule: Schedule | None = None
    retry: RetryConfig = RetryConfig()
    schema_changes: SchemaChangePolicy = SchemaChangePolicy()
    types: dict[str, str] = {}
    """PostgreSQL types for target columns, by source column name, instead of the mapped ones."""
    lag: Duration | None = None
    """Read only rows whose cursor is older than the source's clock minus this."""
    max_lag: Duration | None = None
    """The sync is stale while the target is further behind the source than this."""
    snapshot: Literal["scn"] | None = None
    """Read a whole pass at one system change number (Oracle, needs FLASHBACK)."""
    nul: Literal["strip", "replace", "fail"] = "strip"
    """What to do with U+0000 in text, which PostgreSQL cannot store (Oracle)."""
    verify: VerifyConfig = VerifyConfig()
    null_cursor: Literal["include", "skip", "fail"] = "include"
    """Rows whose cursor is NULL have no place in the cursor's order. include: each run
    also reads them by key and writes the changed ones; skip: never read them; fail:
    refuse the run while there are any."""

    _table = field_validator("table", "target_table")(
        lambda v: v if v is None else _check_table_name(v)
    )
    _max_lag = field_validator("max_lag")(lambda v: v if v is None else positive_duration(v))
    _chunk_lease = field_validator("chunk_lease")(positive_duration)

    @field_validator("key", "columns")
    @classmethod
    def _names(cls, names: list[str] | None) -> list[str] | None:
        if names is not None:
            for name in names:
                _check_identifier(name)
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                raise ValueError(f"names must not repeat: {', '.join(map(repr, repeated))}")
        return names

    @field_validator("cursor")
    @classmethod
    def _cursor_name(cls, name: str | None) -> str | None:
        return None if name is None else _check_identifier(name)

    @model_validator(mode="after")
    def _table_xor_query(self) -> SyncConfig:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        if self.query is not None and self.key is None:
            raise ValueError("a 'query' sync needs 'key': a query has no primary key to read")
        if self.lookback is not None and self.cursor is None:
            raise ValueError("'lookback' needs a 'cursor' to look back along")
        if self.cursor is not None and self.key is not None and self.cursor in self.key:
            raise ValueError("'cursor' must not also be part of 'key'")
        if self.lag is not None and self.cursor is None:
            raise ValueError("'lag' needs a 'cursor' to hold back")
        if self.max_lag is not None and self.lag is not None and self.max_lag <= self.lag:
            raise ValueError(
                "'max_lag' must be above 'lag': a sync held back by 'lag' is always that far"
                " behind, and would never be fresh"
            )
        if self.snapshot is not None and self.cursor is not None:
            raise ValueError("'snapshot' is for full passes: it cannot be combined with 'cursor'")
        return self

    @property
    def target(self) -> TableName:
        return TableName.parse(self.target_table)


class ApiConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    token: SecretStr | None = None
    max_batch_size: int = Field(default=100_000, ge=1, le=1_000_000)
    start_sync_wait: Duration = timedelta(seconds=30)
    """How long start-sync holds its request for the run to end: past it, the answer is 202
    with the run's id and where to follow it, while the run goes on. Proxies and clients
    cut requests that wait much longer."""


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    """auto: console at a terminal, JSON otherwise and always under systemd."""


class Config(_Model):
    target: TargetConfig
    sources: dict[str, SourceConfig] = {}
    syncs: dict[str, SyncConfig]
    default_sync: str | None = None
    api: ApiConfig = ApiConfig()
    logging: LoggingConfig = LoggingConfig()
    grace_period: Duration = timedelta(seconds=30)
    """How long a stopping daemon lets runs commit their batch in flight before cancelling."""
    stall_timeout: Duration = timedelta(minutes=30)
    """A run that has made no progress for this long counts as stuck: the daemon stops
    telling systemd's watchdog that it is alive, so that systemd restarts it."""
    max_concurrent_runs: int = Field(default=4, ge=1, le=1000)
    """How many runs the daemon executes at once; further triggers wait in its queue."""
    long_run: Duration = timedelta(minutes=1)
    """A run going for longer than this is long. While other runs wait, long runs hold at
    most max_concurrent_runs - 1 slots, so that one is always left to short runs."""

    freshness_interval: Duration = timedelta(seconds=30)
    """How often the daemon asks the source of an idle sync for its newest cursor value,
    to tell how far behind the sync is; a run tells it anyway as it ends."""

    _long_run = field_validator("long_run", "freshness_interval")(positive_duration)

    @field_validator("syncs")
    @classmethod
    def _some_syncs(cls, syncs: dict[str, SyncConfig]) -> dict[str, SyncConfig]:
        if not syncs:
            raise ValueError("no sync is configured: a daemon without one has nothing to do")
        return syncs

    @model_validator(mode="after")
    def _references(self) -> Config:
        for name, sync in self.syncs.items():
            if sync.source not in self.sources:
                known = ", ".join(sorted(self.sources)) or "none"
                raise ValueError(
                    f"syncs.{name}.source: unknown source {sync.source!r} (configured: {known})"
                )
            source = self.sources[sync.source]
            for option in _ORACLE_ONLY:
                if isinstance(source, PostgresSourceConfig) and option in sync.model_fields_set:
                    raise ValueError(
                        f"syncs.{name}.{option}: applies to Oracle sources only, and source"
                        f" {sync.source!r} is PostgreSQL"
                    )
        if self.default_sync is not None and self.default_sync not in self.syncs:
            raise ValueError(f"default_sync: unknown sync {self.default_sync!r}")
        if self.max_concurrent_runs >= self.target.max_connections:
            raise ValueError(
                f"max_concurrent_runs ({self.max_concurrent_runs}) must be below"
                f" target.max_connections ({self.target.max_connections}): each running sync"
                " holds one target connection, and the API needs one more"
            )
        return self

    def sync(self, name: str | None) -> tuple[str, SyncConfig]:
        """The sync called ``name``, or the default one when no name is given."""
        if name is None:
            if self.default_sync is not None:
                name = self.default_sync
            elif len(self.syncs) == 1:
                name = next(iter(self.syncs))
            else:
                raise UnknownSync("name a sync: there is no default_sync and more than one sync")
        try:
            return name, self.syncs[name]
        except KeyError:
            known = ", ".join(sorted(self.syncs)) or "none"
            raise UnknownSync(f"unknown sync {name!r} (configured: {known})") from None

    def secrets(self) -> list[str]:
        """Every secret this config holds, for scrubbing text before it is shown."""
        holders = [self.target, *self.sources.values()]
        found = [s.secret() for s in holders] + [_dsn_password(s.dsn) for s in holders]
        if self.api.token is not None:
            found.append(self.api.token.get_secret_value())
        return [s for s in found if s]


_ORACLE_ONLY = ("snapshot", "nul")
"""Options a PostgreSQL source cannot honour: it has no SCN, and its text holds no NUL."""


def _dsn_password(dsn: str) -> str | None:
    try:
        return urlsplit(dsn).password
    except ValueError:
        return None

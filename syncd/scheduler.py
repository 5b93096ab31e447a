"""APScheduler wiring: schedules only trigger; the runner does the work.

APScheduler cannot drain asyncio jobs on shutdown, so a job here does nothing
but ask the runner for a run and return at once. A schedule that fires while
its sync is still running is logged and skipped; one that fires while its run
waits in the queue is folded into that run.

Each sync fires at an offset of its own into its interval (or, for a cron
schedule, into the minute after each time it names), drawn from its name unless
the config sets one: syncs with the same schedule are spread across it instead of
all firing in the same second, and a restart does not change when a sync fires.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from syncd.config import Config, CronSchedule, SyncConfig
from syncd.errors import Busy, NotAccepting, SyncdError
from syncd.runner import Runner
from syncd.verify.service import Verifications

log = structlog.get_logger("syncd.scheduler")

MISFIRE_GRACE = timedelta(minutes=5)


VERIFY_JOB = "verify:{}"
"""The id of a sync's verify job, beside its sync job, whose id is the sync's name."""


class Schedules:
    def __init__(self, runner: Runner, verifications: Verifications | None = None) -> None:
        self._runner = runner
        self._verifications = verifications
        """Where the ``verify.every`` schedules start their verifies; None: they have none."""
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._applied: dict[str, str] = {}
        self._verifies: dict[str, str] = {}

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def apply(self, config: Config) -> dict[str, list[str]]:
        """Make the jobs match ``config``: add, change and remove; running syncs are untouched."""
        wanted = {name: sync for name, sync in config.syncs.items() if sync.schedule is not None}
        changes: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
        for name in list(self._applied):
            if name not in wanted:
                self._scheduler.remove_job(name)
                del self._applied[name]
                changes["removed"].append(name)
        for name, sync in wanted.items():
            description = repr(sync.schedule)
            if self._applied.get(name) == description:
                continue
            is_new = name not in self._applied
            changes["added" if is_new else "changed"].append(name)
            # A sync new to this process catches up at once rather than one whole interval
            # later. (next_run_time=None would add the job paused, so the key is left out.)
            start_now = {"next_run_time": datetime.now(UTC)} if is_new else {}
            self._add_job(self._fire, _trigger(name, sync), [name], name, f"sync {name}", start_now)
            self._applied[name] = description
        self._apply_verifies(config)
        return changes

    def _apply_verifies(self, config: Config) -> None:
        """Jobs for ``verify.every``: at an offset drawn from the job's id, never at start-up
        (a verify scans both tables), and each a verify with the sync's ``verify.repair``."""
        wanted = {
            VERIFY_JOB.format(name): sync
            for name, sync in config.syncs.items()
            if sync.verify.every is not None and self._verifications is not None
        }
        for job in [job for job in self._verifies if job not in wanted]:
            self._scheduler.remove_job(job)
            del self._verifies[job]
        for job, sync in wanted.items():
            description = repr(sync.verify)
            if self._verifies.get(job) == description:
                continue
            assert sync.verify.every is not None
            name = job.removeprefix(VERIFY_JOB.format(""))
            trigger = _EveryAt(sync.verify.every, default_offset(job, sync.verify.every))
            self._add_job(self._verify, trigger, [name, sync.verify.repair], job, f"verify {name}")
            self._verifies[job] = description

    def _add_job(
        self,
        fire: Callable[..., Awaitable[None]],
        trigger: BaseTrigger,
        args: list[object],
        job_id: str,
        label: str,
        start_now: dict[str, datetime] | None = None,
    ) -> None:
        """A job that only triggers: one at a time, missed firings folded into one."""
        self._scheduler.add_job(
            fire,
            trigger=trigger,
            args=args,
            id=job_id,
            name=label,
            replace_existing=True,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=int(MISFIRE_GRACE.total_seconds()),
            **(start_now or {}),
        )

    async def _verify(self, sync_name: str, repair: bool) -> None:
        assert self._verifications is not None
        try:
            self._verifications.start(sync_name, repair=repair)
        except Busy as exc:
            log.info("verify_skipped_busy", sync_name=sync_name, reason=str(exc))
        except SyncdError as exc:
            log.error("schedule_failed", sync_name=sync_name, error=str(exc))

    def next_run_at(self, sync_name: str) -> datetime | None:
        job = self._scheduler.get_job(sync_name)
        return None if job is None else job.next_run_time

    async def _fire(self, sync_name: str) -> None:
        try:
            self._runner.trigger(sync_name, trigger="schedule")
        except Busy as exc:
            log.info("run_skipped_busy", sync_name=sync_name, run_id=exc.run_id)
        except NotAccepting:
            pass
        except SyncdError as exc:
            log.error("schedule_failed", sync_name=sync_name, error=str(exc))


def _trigger(name: str, sync: SyncConfig) -> BaseTrigger:
    schedule = sync.schedule
    assert schedule is not None
    if isinstance(schedule, CronSchedule):
        offset = default_offset(name, CRON_SPREAD) if schedule.offset is None else schedule.offset
        return _CronAt(CronTrigger.from_crontab(schedule.cron, timezone=UTC), offset)
    offset = default_offset(name, schedule.every) if schedule.offset is None else schedule.offset
    return _EveryAt(schedule.every, offset)


CRON_SPREAD = timedelta(minutes=1)
"""Cron names minutes: a default offset falls within the minute named."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def default_offset(sync_name: str, period: timedelta) -> timedelta:
    """A point within ``period``, drawn from the sync's name: the same at every start, and
    for many syncs spread evenly over the period. Whole milliseconds."""
    digest = hashlib.sha256(sync_name.encode()).digest()
    milliseconds = int(period.total_seconds() * 1000)
    return timedelta(milliseconds=int.from_bytes(digest[:8], "big") % max(milliseconds, 1))


class _EveryAt(BaseTrigger):  # type: ignore[misc]
    """Every ``every``, at ``offset`` into each interval counted from the Unix epoch.

    APScheduler's IntervalTrigger counts each interval from the previous run, which for a
    job first run at start-up is the moment syncd started: every sync would then fire in
    the same second, forever. These instants are fixed, whenever syncd started.
    """

    def __init__(self, every: timedelta, offset: timedelta) -> None:
        self._every = every // _MICROSECOND
        self._offset = offset // _MICROSECOND

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        # Whole microseconds, so that an instant on the grid is never found again as the next.
        after = (previous_fire_time or now - _MICROSECOND) - _EPOCH
        periods = (after // _MICROSECOND - self._offset) // self._every + 1
        return _EPOCH + (periods * self._every + self._offset) * _MICROSECOND

    def __str__(self) -> str:
        return f"every {self._every} µs at +{self._offset} µs"


class _CronAt(BaseTrigger):  # type: ignore[misc]
    """A cron schedule, each time ``offset`` later."""

    def __init__(self, cron: CronTrigger, offset: timedelta) -> None:
        self._cron = cron
        self._offset = offset

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        previous = None if previous_fire_time is None else previous_fire_time - self._offset
        fire: datetime | None = self._cron.get_next_fire_time(previous, now - self._offset)
        return None if fire is None else fire + self._offset

    def __str__(self) -> str:
        return f"{self._cron} at +{self._offset}"

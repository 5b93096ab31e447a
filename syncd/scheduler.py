"""APScheduler wiring: schedules only trigger; the runner does the work.

APScheduler cannot drain asyncio jobs on shutdown, so a job here does nothing
but ask the runner for a run and return at once. A schedule that fires while
its sync is still running is logged and skipped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from syncd.config import Config, CronSchedule, SyncConfig
from syncd.errors import SyncdError
from syncd.runner import Busy, NotAccepting, Runner

log = structlog.get_logger("syncd.scheduler")

MISFIRE_GRACE = timedelta(minutes=5)


class Schedules:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._applied: dict[str, str] = {}

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
            self._scheduler.add_job(
                self._fire,
                trigger=_trigger(sync),
                args=[name],
                id=name,
                name=f"sync {name}",
                replace_existing=True,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=int(MISFIRE_GRACE.total_seconds()),
                **start_now,
            )
            self._applied[name] = description
        return changes

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


def _trigger(sync: SyncConfig) -> CronTrigger | IntervalTrigger:
    if isinstance(sync.schedule, CronSchedule):
        return CronTrigger.from_crontab(sync.schedule.cron, timezone=UTC)
    assert sync.schedule is not None
    return IntervalTrigger(seconds=sync.schedule.every.total_seconds(), timezone=UTC)

"""The daemon's verifies: started through the API, one per sync at a time, each a task
of its own whose outcome goes to the event stream, the metrics and the history table."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import structlog

from syncd.config import Config
from syncd.errors import Busy
from syncd.metrics import Metrics
from syncd.redact import scrub
from syncd.runner import Runner
from syncd.verify.classify import KINDS
from syncd.verify.verifier import verify

log = structlog.get_logger("syncd.verify")


class Verifications:
    def __init__(self, runner: Runner, metrics: Metrics) -> None:
        self._runner = runner
        self._metrics = metrics
        self._going: dict[str, asyncio.Task[None]] = {}

    def start(self, sync_name: str | None, *, repair: bool) -> tuple[str, str]:
        """Start a verify of the sync; its name and the verify's id. Busy while a verify of
        the sync is going, and for a repair, while the sync runs here: the repair would
        only be refused its lock. Synchronous, so two requests cannot both start one."""
        config = self._runner.config
        name, _ = config.sync(sync_name)
        if name in self._going:
            raise Busy(f"a verify of sync {name!r} is already in progress")
        live = self._runner.live(name)
        if repair and live is not None:
            raise Busy(
                f"sync {name!r} is running (run {live.run_id}); a repair waits until it ends",
                run_id=live.run_id,
            )
        verify_id = uuid.uuid4().hex
        task = asyncio.create_task(
            self._verify(config, name, verify_id, repair), name=f"syncd-verify-{name}"
        )
        self._going[name] = task
        task.add_done_callback(lambda _: self._going.pop(name, None))
        return name, verify_id

    def going(self, sync_name: str) -> bool:
        return sync_name in self._going

    async def _verify(self, config: Config, name: str, verify_id: str, repair: bool) -> None:
        event = {"type": "verify", "sync_name": name, "verify_id": verify_id, "repair": repair}
        try:
            report = await verify(config, name, repair_too=repair, verify_id=verify_id)
        except Exception as exc:  # a run that took the sync's lock first among them
            error = scrub(f"{type(exc).__name__}: {exc}", config.secrets())
            log.warning("verify_failed", sync_name=name, verify_id=verify_id, error=error)
            self._runner.publish(event | dict.fromkeys(KINDS) | {"equal": None, "error": error})
            return
        document = report.as_json()
        counts = {kind: document[kind]["count"] for kind in KINDS}
        self._metrics.verify_finished(name, counts)
        log.info("verify_finished", sync_name=name, verify_id=verify_id, equal=report.equal,
                 **counts)  # fmt: skip
        self._runner.publish(event | counts | {"equal": report.equal, "error": None})

    async def close(self) -> None:
        """Cancel the verifies still going; a repair cut short keeps what it committed."""
        tasks = list(self._going.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

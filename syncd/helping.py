"""A daemon's share of a load that another process leads.

A scheduled run that finds its sync locked by another process asks whether that
process is loading the sync in chunks. If so, it reads free chunks too, without the
sync's lock, until none is left to claim: this is how several daemons with the same
configuration, on one host or many, share a load, coordinated by the chunk table alone.
"""

from __future__ import annotations

import functools
import time

import structlog

from syncd.chunks import ChunkStore
from syncd.config import SyncConfig
from syncd.engine import Engine
from syncd.load import LoadObserver, ParallelLoad
from syncd.runs import RunRequest, RunResult

log = structlog.get_logger("syncd.helping")


async def help_load(engine: Engine, request: RunRequest) -> RunResult | None:
    """Read the free chunks of the sync's load under way; None when no load is. Never
    raises: a failure is the result's."""
    name, sync = engine.config.sync(request.sync_name)
    try:
        return await _help(engine, request, name, sync)
    except Exception as exc:
        error = engine.describe_error(exc)
        log.warning("load_not_joined", sync_name=name, error=error)
        return RunResult(request.run_id, name, "failed", error=error)


async def _help(
    engine: Engine, request: RunRequest, name: str, sync: SyncConfig
) -> RunResult | None:
    conn = await engine.connect_target()
    clean = False
    try:
        chunks = ChunkStore(engine.store.schema)
        load = await chunks.unfinished(conn, name)
        if load is None:
            clean = True
            return None
        log.info("load_joined", sync_name=name, load_id=load.load_id)
        observer = LoadObserver(engine.observer, request.run_id, time.monotonic(), lambda: None)
        run_part = functools.partial(engine.run_part, request, observer=observer)
        helper = ParallelLoad(sync_name=name, sync=sync, chunks=chunks, conn=conn,
                              run_part=run_part, stop=engine.stop, lead=False,
                              observer=engine.observer)  # fmt: skip
        await helper.work(load, direct=False)
        clean = True
    finally:
        await engine.connections.give_back_target(conn, clean=clean)
    done = helper.done
    status = "cancelled" if engine.stop.is_set() else "succeeded"
    return RunResult(request.run_id, name, status, done.batches, done.rows_read,
                     done.rows_written)  # fmt: skip

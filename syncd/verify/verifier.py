"""One verify of one sync: open both databases, search, classify, report."""

from __future__ import annotations

import time

from syncd import pg
from syncd.config import Config
from syncd.sources import open_source
from syncd.state import StateStore
from syncd.target import TargetTable
from syncd.verify.classify import classify
from syncd.verify.compare import search
from syncd.verify.report import Report

CLOSE_S = 5.0
"""How long closing the target connection may take."""


async def verify(config: Config, sync_name: str | None) -> Report:
    """Compare the sync's source with its target, moving rows only where they differ."""
    name, sync = config.sync(sync_name)
    began = time.monotonic()
    store = StateStore(config.target.state_schema)
    conn = await pg.connect_to(config.target)
    try:
        await store.migrate(conn)
        async with open_source(config.sources[sync.source], sync) as source:
            shape = await source.describe()
            source_side = await source.comparison()
            target_side = await TargetTable(sync.target, shape, sync.types).comparison(conn)
            found = await search(source_side, target_side)
            # Read before the source is read again: see classify.
            state = await store.load(conn, name)
            position = state.position[0] if state.position and shape.cursor else None
            classified = await classify(source_side, target_side, found.differing, position)
    finally:
        await conn.close(timeout=CLOSE_S)
    return Report(
        sync=name, search=found, classified=classified, duration_s=time.monotonic() - began
    )

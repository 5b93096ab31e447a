"""A progress bar for people watching a sync on a terminal."""

from __future__ import annotations

import sys

from tqdm import tqdm

from syncd.runs import BatchReport, ChunkReport


class TerminalProgress:
    """Rows, rows/s and an ETA from the source's own row estimate."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None

    def run_started(self, sync_name: str, run_id: str, rows_estimate: int | None) -> None:
        self.close()
        self._bar = tqdm(
            total=rows_estimate or None,
            desc=sync_name,
            unit=" rows",
            unit_scale=True,
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def batch_committed(self, report: BatchReport) -> None:
        if self._bar is not None:
            if report.rows_estimate is not None:
                self._bar.total = report.rows_estimate
            self._bar.update(report.rows)

    def chunk_changed(self, report: ChunkReport) -> None:
        """The bar counts the run's rows, whichever chunk they come from."""

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

"""The chaos harness's short version, inside the normal test run.

The same scenario functions as ``python -m tests.chaos``, with the short parameters
(200,000 source rows, 5 kills, ...); the long version (1,000,000 rows, 20 kills, the
30-minute soak) is run by hand. A scenario this machine cannot stage (no root for a
private PostgreSQL cluster or a tmpfs) is skipped with the reason.
"""

from __future__ import annotations

import pytest

from tests.chaos import scenarios
from tests.chaos.harness import SHORT, Result, Stage, boundary_check, connect, verify
from tests.chaos.report import explain, table

SHORT_SCENARIOS = [s.name for s in scenarios.SCENARIOS if not s.long_only]


# A scenario stages a cluster, a writer and several faults: it may take minutes on a busy machine.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", SHORT_SCENARIOS)
async def test_chaos_scenario(name: str) -> None:
    result = await scenarios.run(name, SHORT)
    print(table([result]))
    if result.skipped is not None:
        pytest.skip(result.skipped)
    assert result.verdict == "pass", explain([result])


async def test_every_check_fires_on_a_damaged_target() -> None:
    """The harness's checks are not vacuous: each one sees damage done to a synced target."""
    params = SHORT.with_(rows=3_000, batch_size=500)
    async with Stage("selfcheck", params) as stage:
        daemon = await stage.start_daemon(stage.write_config(schedule="1h"))
        await daemon.wait_for(lambda: bool(daemon.events("run_finished")))
        assert await daemon.stop() == 0

        clean = Result("clean")
        await verify(stage, clean, statuses={"succeeded"})
        assert clean.verdict == "pass", explain([clean])
        assert await boundary_check(stage, "clean") == []

        # A row lost, a row taken back to an older version, a row applied twice, a row from
        # nowhere beyond the position: the last three pass the target's log of applied rows
        # as syncd's writes do.
        await _damage(
            stage,
            "DELETE FROM public.items WHERE id = 10",
            "UPDATE public.items SET name = 'changed', version = -1 WHERE id = 20",
            "UPDATE public.items SET id = id WHERE id = 30",
            "INSERT INTO public.items VALUES (999999, now() + interval '1 day', 0, 'x', 1, '')",
        )
        _says(
            await boundary_check(stage, "rows"),
            "rows: 1 target rows lie beyond the saved position",
            "rows: 2 of the 3000 source rows at or before the saved position are missing",
            "rows: the runs wrote 3000 rows, the target took in 3003",
        )
        await _damage(stage, "UPDATE syncd.sync_state SET current_offset = current_offset + 1")
        _says(await boundary_check(stage, "counter"), "counter: runs add up to 3000 read")

        # The bookkeeping: the state row, and two runs that never were, one cut off by a
        # kill, one failed for a reason no fault gave, overlapping the real run.
        await _damage(
            stage,
            "UPDATE syncd.sync_state SET is_complete = false, holder_pid = 4242,"
            """ position = '["2025-01-01T00:00:00+00:00", "1"]'""",
            "INSERT INTO syncd.runs (run_id, sync_name, trigger, started_at, status)"
            " SELECT 'interrupted-run', sync_name, 'http', started_at, 'interrupted'"
            " FROM syncd.runs",
            "INSERT INTO syncd.runs (run_id, sync_name, trigger, started_at, finished_at,"
            " status, rows_read, rows_written, rows_unchanged, error)"
            " SELECT 'zz-failed-run', sync_name, 'http', started_at, finished_at, 'failed',"
            " 5, 1, 1, 'the disk is on fire' FROM syncd.runs WHERE run_id <> 'interrupted-run'",
        )
        damaged = Result("damaged")
        await verify(
            stage, damaged, statuses={"succeeded"}, interrupted={"a-killed-run"},
            failed_because=lambda error: "statement timeout" in error,
        )  # fmt: skip
        assert damaged.verdict == "FAIL"
        assert (damaged.rows_lost, damaged.rows_duplicated) == (2, 1)
        _says(
            damaged.problems,
            "1 target rows are not in the source",
            "1 rows went back to an older version in the target",
            "the runs wrote 3001 rows, the target took in 3003",
            "the sync is not marked complete",
            "the sync is still held by 4242",
            "is not the source's last row",
            "run statuses ['failed', 'interrupted'] not expected here",
            "the last run did not succeed",
            "runs overlap",
            "run zz-failed-run: rows_unchanged does not add up",
            "run zz-failed-run failed for another reason: the disk is on fire",
            "1 runs marked interrupted, at most 0 expected",
            "killed runs not marked interrupted: ['a-killed-run']",
            "current_offset is 3001 but the runs read 3005 rows",
            "total_synced is 3000 but the runs wrote 3001 rows",
            "current_offset 3001 != total_synced 3000: rows read twice",
        )
        await _damage(stage, "UPDATE syncd.sync_state SET total_synced = current_offset + 1")
        after_reset = Result("after reset")
        await verify(stage, after_reset, statuses={"succeeded"}, after_reset=True)
        _says(after_reset.problems, "total_synced exceeds current_offset")

        await _damage(stage, "UPDATE syncd.sync_state SET position = NULL")
        _says(await boundary_check(stage, "nowhere"), "nowhere: 3000 target rows but no saved")
        await _damage(stage, "DELETE FROM syncd.runs")
        no_runs = Result("no runs")
        await verify(stage, no_runs, statuses={"succeeded"})
        _says(no_runs.problems, "no runs recorded")
        await _damage(stage, "DELETE FROM syncd.sync_state")
        no_state = Result("no state")
        await verify(stage, no_state, statuses={"succeeded"})
        _says(no_state.problems, "no sync_state row")


async def _damage(stage: Stage, *statements: str) -> None:
    target = await connect(stage.target_dsn)
    try:
        for statement in statements:
            await target.execute(statement)
    finally:
        await target.close()


def _says(problems: list[str], *expected: str) -> None:
    """Each expected text is part of one of ``problems``."""
    missing = [e for e in expected if not any(e in problem for problem in problems)]
    assert not missing, f"not said: {missing}; said: {problems}"

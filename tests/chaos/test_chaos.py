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


async def test_the_checks_see_a_lost_a_changed_and_an_overtaken_row() -> None:
    """The harness's checks are not vacuous: damage done to a synced target is seen."""
    params = SHORT.with_(rows=3_000, batch_size=500)
    async with Stage("selfcheck", params) as stage:
        daemon = await stage.start_daemon(stage.write_config(schedule="1h"))
        await daemon.wait_for(lambda: bool(daemon.events("run_finished")))
        assert await daemon.stop() == 0

        clean = Result("clean")
        await verify(stage, clean, statuses={"succeeded"})
        assert clean.verdict == "pass", explain([clean])
        assert await boundary_check(stage, "clean") == []

        target = await connect(stage.target_dsn)
        try:
            await target.execute("DELETE FROM public.items WHERE id = 10")
            await target.execute("UPDATE public.items SET name = 'changed' WHERE id = 20")
            await target.execute(
                "INSERT INTO public.items VALUES (999999, now() + interval '1 day', 0, 'x', 1, '')"
            )
        finally:
            await target.close()
        problems = await boundary_check(stage, "damaged")
        assert any("beyond the saved position" in p for p in problems), problems
        assert any("2 of the 3000 source rows" in p for p in problems), problems

        damaged = Result("damaged")
        await verify(stage, damaged, statuses={"succeeded"})
        assert damaged.verdict == "FAIL"
        assert damaged.rows_lost == 2
        assert any("1 target rows are not in the source" in p for p in damaged.problems)

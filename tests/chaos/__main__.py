"""``python -m tests.chaos [--long] [--scenario NAME ...]``: run the chaos scenarios against a
real ``syncd run`` and print one table; exit 1 if any scenario fails.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from tests.chaos.harness import LONG, SHORT, Params, Result
from tests.chaos.report import explain, table
from tests.chaos.scenarios import BY_NAME, SCENARIOS, run


async def run_all(names: list[str], params: Params) -> list[Result]:
    return [await run(name, params) for name in names]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument(
        "--long", action="store_true",
        help="1,000,000 rows, 20 kills and the 30-minute soak (by hand only)",
    )  # fmt: skip
    parser.add_argument(
        "--scenario", action="append", choices=list(BY_NAME), metavar="NAME",
        help=f"run only these (repeatable): {', '.join(BY_NAME)}",
    )  # fmt: skip
    parser.add_argument("--rows", type=int, help="override the source table's size")
    parser.add_argument("--soak-minutes", type=float, help="override the soak's duration")
    parser.add_argument("--seed", type=int, help="override the random seed")
    args = parser.parse_args()

    params = LONG if args.long else SHORT
    if args.rows is not None:
        params = params.with_(rows=args.rows)
    if args.soak_minutes is not None:
        params = params.with_(soak_s=args.soak_minutes * 60)
    if args.seed is not None:
        params = params.with_(seed=args.seed)
    names = args.scenario or [s.name for s in SCENARIOS if not s.long_only or params.soak_s > 0]

    began = time.monotonic()
    results = asyncio.run(run_all(names, params))
    print(table(results))
    print(
        f"{params.label} version: {params.rows:,} source rows, batch size {params.batch_size},"
        f" seed {params.seed}; {time.monotonic() - began:.0f} s in all"
    )
    print(explain(results), end="")
    return 1 if any(r.verdict == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

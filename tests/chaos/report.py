"""The harness's one table, and the reasons behind each FAIL or SKIP below it."""

from __future__ import annotations

from tests.chaos.harness import Result

HEADERS = (
    "scenario", "reps", "rows checked", "rows lost", "rows duplicated", "max recovery",
    "result", "time", "notes",
)  # fmt: skip


def _row(result: Result) -> tuple[str, ...]:
    skipped = result.skipped is not None
    recovery = "-" if result.max_recovery_s is None else f"{result.max_recovery_s:.2f} s"
    return (
        result.scenario,
        str(result.repetitions),
        "-" if skipped else f"{result.rows_checked:,}",
        "-" if skipped else f"{result.rows_lost:,}",
        "-" if skipped else f"{result.rows_duplicated:,}",
        recovery,
        result.verdict,
        f"{result.duration_s:.0f} s",
        "; ".join(result.notes) if not skipped else f"skipped: {result.skipped}",
    )


def table(results: list[Result]) -> str:
    """A Markdown table, readable as it is and pasteable into the README."""
    rows = [HEADERS, *(_row(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    right = {1, 2, 3, 4, 5, 7}

    def line(cells: tuple[str, ...]) -> str:
        padded = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (w + 1) + ":" if i in right else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(rows[0]), rule, *(line(r) for r in rows[1:])])


def explain(results: list[Result]) -> str:
    lines = []
    for result in results:
        for problem in result.problems:
            lines.append(f"{result.scenario}: {problem}")
        if result.verdict == "FAIL" and not result.problems and not result.checked:
            lines.append(f"{result.scenario}: did not reach the final check")
    return "".join(f"{line}\n" for line in lines)

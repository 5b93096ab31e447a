"""The README's fresh-machine commands are the ones CI really runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def fresh_machine_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## ", 2)[1]
    assert section.startswith("On a fresh machine")
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_the_first_section_gives_the_demo_and_the_test_command() -> None:
    demo, tests = fresh_machine_commands()
    assert demo.endswith("syncd demo")
    assert "[test" in tests and tests.endswith("pytest")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, tests = fresh_machine_commands()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines

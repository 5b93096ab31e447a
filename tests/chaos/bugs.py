"""Product bugs the chaos scenarios have exposed and that are not fixed yet.

A scenario listed here is reported as FAIL whatever this run saw: some of these bugs are
races that a given run may miss, and a scenario must not pass while its bug is open.
Delete an entry in the change that fixes the bug (with its regression test in the normal
suite); the scenario's own checks then decide again.
"""

from __future__ import annotations

OPEN_BUGS: dict[str, list[str]] = {}

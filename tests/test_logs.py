"""Logs for people and for machines: the format follows where they go."""

from __future__ import annotations

import io
import json
import sys

import pytest
import structlog

from syncd import logs


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("terminal", "environ", "expected"),
    [
        (True, {}, "console"),
        (False, {}, "json"),
        (True, {"JOURNAL_STREAM": "8:1234"}, "json"),  # systemd: journald keeps JSON
    ],
)
def test_auto_is_console_at_a_terminal_and_json_elsewhere(
    monkeypatch: pytest.MonkeyPatch, terminal: bool, environ: dict[str, str], expected: str
) -> None:
    monkeypatch.setattr(sys, "stderr", Terminal() if terminal else io.StringIO())

    assert logs.resolved_format("auto", environ) == expected
    assert logs.resolved_format("json", environ) == "json"


def test_the_console_form_has_the_same_events_and_fields_as_the_json_one() -> None:
    lines = {}
    for fmt in ("json", "console"):
        stream = io.StringIO()
        logs.configure("info", fmt, stream=stream)
        structlog.get_logger("syncd.test").info("run_finished", rows_read=12)
        lines[fmt] = stream.getvalue().strip()
    logs.configure("info", "json", stream=sys.stdout)

    event = json.loads(lines["json"])
    assert (event["event"], event["rows_read"]) == ("run_finished", 12)
    assert "run_finished" in lines["console"] and "rows_read=12" in lines["console"]

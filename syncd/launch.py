"""The ``syncd`` executable's first steps, taken before anything heavy is imported.

A one-shot command is over in well under a second, so what it imports is a good part
of its time. structlog imports rich, when rich is installed, for coloured console
output and pretty tracebacks; rich alone costs about a fifth of a second. Away from a
terminal nobody sees either, so rich is kept out: structlog then renders plain lines
and plain tracebacks. (Oracle's driver is imported only when an Oracle source is used.)
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    if "JOURNAL_STREAM" in os.environ or not sys.stderr.isatty():
        # A None entry makes ``import rich`` raise ImportError, which structlog expects
        # when rich is not installed.
        sys.modules.setdefault("rich", None)  # type: ignore[arg-type]
    from syncd.cli import main as run_command

    run_command()

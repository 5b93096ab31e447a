"""One JSON object a line on stdout, for journald and log-based monitoring; aligned,
coloured lines for a person at a terminal.

structlog renders our events; records from the standard library (asyncpg,
aiohttp, apscheduler) pass through the same processors, so every line has the
same shape. Secrets are scrubbed from the final text, whatever produced it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from syncd.redact import scrub

Processor = Callable[[Any, str, MutableMapping[str, Any]], Any]


def resolved_format(fmt: str, environ: Mapping[str, str] | None = None) -> str:
    """``auto`` is console for a person at a terminal and JSON for everything else; under
    systemd (JOURNAL_STREAM set) it is always JSON, which journald keeps as it is."""
    if fmt != "auto":
        return fmt
    env = os.environ if environ is None else environ
    return "console" if "JOURNAL_STREAM" not in env and sys.stderr.isatty() else "json"


def configure(
    level: str = "info",
    fmt: str = "json",
    *,
    secrets: list[str] | None = None,
    stream: TextIO | None = None,
) -> None:
    """Route structlog and stdlib logging to ``stream`` (stdout) in one format."""
    known_secrets = list(secrets or [])
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if resolved_format(fmt) == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=(stream or sys.stdout).isatty())
    else:
        renderer = structlog.processors.JSONRenderer()

    def scrub_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> Any:
        return scrub(str(event), known_secrets) if isinstance(event, str) else event

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Locals stay out of tracebacks: they would carry DSNs and passwords.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            renderer,
            scrub_secrets,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # APScheduler narrates every job it adds and runs; our own run events say what matters.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )

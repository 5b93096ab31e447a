"""The one family of errors syncd raises on purpose.

Each class's docstring is its default message, so a bare ``raise NotFound()``
still says something useful. ``exit_code`` is what the CLI exits with.
"""

from __future__ import annotations


class SyncdError(Exception):
    """syncd failed."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(SyncdError):
    """The configuration is invalid."""

    exit_code = 78  # EX_CONFIG


class UnknownSync(SyncdError):
    """No sync has that name."""

    exit_code = 2  # a usage error: the config is fine, the request is not


class AlreadyRunning(SyncdError):
    """The sync is already running elsewhere."""

    exit_code = 75  # EX_TEMPFAIL


class SchemaMismatch(SyncdError):
    """The target table does not fit the source's columns."""


class SourceError(SyncdError):
    """The source database refused the request."""


class TargetError(SyncdError):
    """The target database refused the request."""


class RetriesExhausted(SyncdError):
    """The database stayed unreachable after every retry."""


class Unavailable(SyncdError):
    """A service that syncd needs or offers is not available right now."""

    exit_code = 69  # EX_UNAVAILABLE


class SchemaChanged(SyncdError):
    """The source's columns changed in a way the sync's schema_changes policy refuses."""

    exit_code = 65  # EX_DATAERR


class Busy(SyncdError):
    """The sync is already running."""

    exit_code = 75

    def __init__(self, message: str | None = None, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


class NotAccepting(SyncdError):
    """syncd is shutting down and starts no new runs."""

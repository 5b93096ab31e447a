"""Which failures are worth another try, and how long to wait before it."""

from __future__ import annotations

import random

import asyncpg

from syncd.config import RetryConfig

_RETRYABLE_POSTGRES = (
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,  # pg_terminate_backend, server shutdown
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,  # server starting up or in recovery
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    # A connection cut off mid-operation can leave asyncpg's protocol in a state it
    # reports ("cannot switch to state…", "another operation is in progress") before
    # it notices that the socket has closed.
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

UNUSABLE_CONNECTION = (asyncpg.InterfaceError, asyncpg.InternalClientError)
"""Errors after which a connection cannot be trusted with another statement."""


class Retryable(Exception):
    """Raised by a source for a transient driver error that the classifier cannot know."""


def is_retryable(exc: BaseException) -> bool:
    """A lost connection or a transient server state: the work can simply be redone."""
    return isinstance(exc, (Retryable, OSError, TimeoutError, *_RETRYABLE_POSTGRES))


def delay(policy: RetryConfig, attempt: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter in its upper half, so peers do not retry in step."""
    ceiling = min(
        policy.max_delay.total_seconds(),
        policy.initial_delay.total_seconds() * (1 << (attempt - 1)),
    )
    jitter: float = (rng or random).uniform(0.5, 1.0)
    return ceiling * jitter

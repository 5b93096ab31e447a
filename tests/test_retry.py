"""Which failures are retried, and how long the waits between tries grow."""

from __future__ import annotations

import random
from datetime import timedelta

import asyncpg
import pytest

from syncd.config import RetryConfig
from syncd.retry import Retryable, delay, is_retryable


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError(),
        TimeoutError(),
        asyncpg.ConnectionDoesNotExistError("closed"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        # Found by the chaos suite: a source session killed between batches.
        asyncpg.InternalClientError("cannot switch to state 15; another operation (2)"),
        Retryable("DPY-4011"),
    ],
)
def test_lost_connections_are_retried(error: Exception) -> None:
    assert is_retryable(error)


@pytest.mark.parametrize(
    "error",
    [asyncpg.UndefinedTableError("no table"), asyncpg.DataError("bad value"), ValueError("x")],
)
def test_mistakes_are_not(error: Exception) -> None:
    assert not is_retryable(error)


def test_delays_double_up_to_the_ceiling_with_jitter_in_the_upper_half() -> None:
    policy = RetryConfig(initial_delay=timedelta(seconds=1), max_delay=timedelta(seconds=10))
    rng = random.Random(1)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (9, 10)]:
        waits = [delay(policy, attempt, rng) for _ in range(200)]
        assert ceiling / 2 <= min(waits) and max(waits) <= ceiling

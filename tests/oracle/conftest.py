"""The real-Oracle suite runs with ``pytest -m oracle`` when SYNCD_TEST_ORACLE_DSN is set."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "oracle: needs a real Oracle Database at $SYNCD_TEST_ORACLE_DSN"
    )

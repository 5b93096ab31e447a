"""Durations and sizes as people write them in a config file: ``90s``, ``1h30m``, ``64MB``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator

_DURATION = re.compile(r"(\d+)\s*(ms|[smhd])")
_DURATION_UNITS = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(value: object) -> object:
    """Read ``500ms``, ``30s``, ``15m``, ``1h``, ``2d`` or a combination such as ``1h30m``."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text or _DURATION.sub("", text).strip():
        raise ValueError("expected a duration such as 30s, 15m, 1h or 2d")
    total = timedelta()
    for amount, unit in _DURATION.findall(text):
        total += timedelta(**{_DURATION_UNITS[unit]: int(amount)})
    return total


def format_duration(value: timedelta) -> str:
    """The shortest way to write ``value`` as parse_duration reads it: 90 minutes is 1h30m."""
    remaining = round(value.total_seconds() * 1000)
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        amount, remaining = divmod(remaining, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

_SIZE = re.compile(r"(\d+)\s*(B|kB|KiB|MB|MiB|GB|GiB)?")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "kB": 10**3,
    "KiB": 2**10,
    "MB": 10**6,
    "MiB": 2**20,
    "GB": 10**9,
    "GiB": 2**30,
}


def parse_size(value: object) -> object:
    """Read a byte count: ``65536``, ``512kB``, ``64MB``, ``64MiB`` or ``1GiB``."""
    if not isinstance(value, str):
        return value
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError("expected a size such as 64MB, 512kB or 1GiB")
    return int(match[1]) * _SIZE_UNITS[match[2]]


ByteSize = Annotated[int, BeforeValidator(parse_size)]


def positive_duration(value: timedelta) -> timedelta:
    if value <= timedelta():
        raise ValueError("expected a duration above zero")
    return value


def not_negative(value: timedelta | None) -> timedelta | None:
    if value is not None and value < timedelta():
        raise ValueError("expected a duration of zero or more")
    return value

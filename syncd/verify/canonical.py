"""The canonical row: the one string both databases make of a row, and its hash.

Verify never moves rows to compare them. Each database turns each row into the same
string and hashes it, so two rows hash alike exactly when their values are alike,
whichever database holds them. This module is the reference: the SQL of every dialect
is tested to give, byte for byte, what these functions give.

Each value is first written in a canonical form that depends on what kind of value
it is (numbers without trailing zeros, times in UTC to the microsecond, bytes as
lowercase hex…). Each form is then hashed on its own, and the row string is the
column hashes, key columns first, joined by a control character; a NULL is a marker
that no hash can be. So no value can pass for a separator or for NULL, however it
reads, and the row string keeps a fixed width per column, however wide the values:
Oracle's 4,000-byte limit on a string is never reached.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import Enum

SEPARATOR = "\x1f"
"""Between column hashes: the ASCII unit separator."""
NULL_MARKER = "-"
"""In place of a NULL column's hash: not a hexadecimal digit, so never a hash."""
HASH_HEX_DIGITS = 15
"""The row hash is the first 15 hex digits (60 bits) of the row string's md5: summed
over millions of rows it stays far inside a 128-bit numeric, and it fits a bigint."""
FLOAT_DIGITS = 15
"""Floats are rounded to this many significant digits: as many as a double holds
exactly in decimal, so the two databases' binary-to-decimal conversions agree."""


class Kind(Enum):
    """How a column's values are written in canonical form."""

    NUMBER = "number"
    """Exact numbers: no trailing zeros, a zero before the point, -0 is 0."""
    FLOAT = "float"
    """Binary floats: rounded to 15 significant digits, then as a number."""
    TIMESTAMPTZ = "timestamptz"
    """An instant: its UTC time, YYYY-MM-DDTHH:MI:SS.ffffff."""
    TIMESTAMP = "timestamp"
    """A wall-clock time, as it is, YYYY-MM-DDTHH:MI:SS.ffffff."""
    DATE = "date"
    TIME = "time"
    BYTES = "bytes"
    """Lowercase hex."""
    BOOLEAN = "boolean"
    CHAR = "char"
    """Blank-padded text: trailing blanks are padding, and are trimmed."""
    INTERVAL = "interval"
    """Months, days and microseconds, each kept apart, as both databases keep them."""
    TEXT = "text"
    """Text, and any other value in its PostgreSQL text form."""


_KINDS_BY_TYPE_PREFIX = (
    ("smallint", Kind.NUMBER),
    ("integer", Kind.NUMBER),
    ("bigint", Kind.NUMBER),
    ("numeric", Kind.NUMBER),
    ("real", Kind.FLOAT),
    ("double precision", Kind.FLOAT),
    ("timestamp", None),  # with or without a time zone: below
    ("date", Kind.DATE),
    ("time without time zone", Kind.TIME),
    ("time(", Kind.TIME),
    ("bytea", Kind.BYTES),
    ("boolean", Kind.BOOLEAN),
    ("character(", Kind.CHAR),
    ("interval", Kind.INTERVAL),
)


def kind_of(pg_type: str) -> Kind:
    """The kind of a column of ``pg_type``, as format_type() writes it. Arrays and every
    other type are compared by their text form."""
    if pg_type.endswith("]"):
        return Kind.TEXT
    if pg_type == "character":
        return Kind.CHAR
    for prefix, kind in _KINDS_BY_TYPE_PREFIX:
        if pg_type.startswith(prefix):
            if kind is None:
                return Kind.TIMESTAMPTZ if pg_type.endswith("with time zone") else Kind.TIMESTAMP
            if kind is Kind.TIME and "with time zone" in pg_type:
                return Kind.TEXT
            return kind
    return Kind.TEXT


def canonical_value(value: object, kind: Kind) -> str | None:
    """``value`` as its canonical string; None for NULL."""
    if value is None:
        return None
    return _WRITERS[kind](value)


def _number(value: object) -> str:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    number = Decimal(value) if isinstance(value, int) else value
    if not isinstance(number, Decimal):
        raise TypeError(f"expected a Decimal or an int, found {type(value).__name__}")
    if number.is_nan():
        return "NaN"
    if number.is_infinite():
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    # Written out in full: normalize() would round to the context's 28 digits.
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _float(value: object) -> str:
    if not isinstance(value, float | int):
        raise TypeError(f"expected a float, found {type(value).__name__}")
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    return _number(Decimal(f"{number:.{FLOAT_DIGITS}g}"))


def _moment(value: datetime) -> str:
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
    )


def _timestamptz(value: object) -> str:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise TypeError("expected a datetime with a time zone")
    return _moment(value.astimezone(UTC))


def _timestamp(value: object) -> str:
    if not isinstance(value, datetime):
        raise TypeError("expected a datetime")
    return _moment(value.replace(tzinfo=None))


def _date(value: object) -> str:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise TypeError("expected a date")
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"


def _time(value: object) -> str:
    if not isinstance(value, time):
        raise TypeError("expected a time")
    return f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"


def _bytes(value: object) -> str:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError("expected bytes")
    return bytes(value).hex()


def _boolean(value: object) -> str:
    if not isinstance(value, bool):
        raise TypeError("expected a boolean")
    return "true" if value else "false"


def _char(value: object) -> str:
    return str(value).rstrip(" ")


def _interval(value: object) -> str:
    """An interval as (months, days, microseconds), the parts syncd reads it as."""
    if not isinstance(value, tuple) or len(value) != 3:
        raise TypeError("expected an interval as (months, days, microseconds)")
    months, days, microseconds = value
    return f"{months} {days} {microseconds}"


_WRITERS: dict[Kind, Callable[[object], str]] = {
    Kind.NUMBER: _number,
    Kind.FLOAT: _float,
    Kind.TIMESTAMPTZ: _timestamptz,
    Kind.TIMESTAMP: _timestamp,
    Kind.DATE: _date,
    Kind.TIME: _time,
    Kind.BYTES: _bytes,
    Kind.BOOLEAN: _boolean,
    Kind.CHAR: _char,
    Kind.INTERVAL: _interval,
    Kind.TEXT: str,
}


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def row_string(values: Sequence[object], kinds: Sequence[Kind]) -> str:
    """The canonical row string of ``values`` (key columns first), of the given kinds."""
    parts = []
    for value, kind in zip(values, kinds, strict=True):
        text = canonical_value(value, kind)
        parts.append(NULL_MARKER if text is None else _md5(text))
    return SEPARATOR.join(parts)


def row_hash(values: Sequence[object], kinds: Sequence[Kind]) -> int:
    """The row's 60-bit hash, which segment checksums sum."""
    return int(_md5(row_string(values, kinds))[:HASH_HEX_DIGITS], 16)

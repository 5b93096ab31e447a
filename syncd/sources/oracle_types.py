"""Oracle column types: what each becomes in PostgreSQL, and how its values get there.

ALL_TAB_COLUMNS describes a column; from that description follow the PostgreSQL
type that holds it without loss, whether it must be selected through
SYS_EXTRACT_UTC, the type its values are bound as when it orders a keyset, and
the change each fetched value needs before asyncpg can encode it.

Positions are kept as text: timestamps in ISO form to the microsecond, numbers
in plain decimal digits, RAW as hex. Each is bound back with its column's own
type, never as a bare Python value (a bare datetime is sent as DATE).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

import oracledb

from syncd.errors import SourceError
from syncd.sources import Position

NulPolicy = Literal["strip", "replace", "fail"]
Convert = Callable[[Any, "_Cleaner"], Any]


@dataclass(frozen=True)
class OracleType:
    """How one Oracle column is selected, bound and written to PostgreSQL."""

    pg_type: str
    """The PostgreSQL type, spelt as format_type() spells it."""
    bind: oracledb.DbType | None = None
    """The type a position value is bound as; None when the column cannot order a keyset."""
    at_utc: bool = False
    """Selected through SYS_EXTRACT_UTC: the driver would otherwise drop the offset."""
    convert: Convert | None = None
    """What a fetched value needs before asyncpg can encode it as ``pg_type``."""
    local_time: bool = False
    """A TIMESTAMP WITH LOCAL TIME ZONE."""
    serialized: bool = False
    """Selected as JSON_SERIALIZE(… RETURNING CLOB): a native JSON value as Oracle's text."""

    @property
    def is_time(self) -> bool:
        return self.bind in _TIME_BINDS


def oracle_type(data_type: str, precision: int | None, scale: int | None) -> OracleType | None:
    """The mapping for one ALL_TAB_COLUMNS row; None for a type syncd cannot read."""
    if data_type == "NUMBER":
        return _number(precision, scale)
    if match := _TIMESTAMP.fullmatch(data_type):
        # Oracle keeps up to nanoseconds; the driver and PostgreSQL keep microseconds,
        # and a cursor truncated that way could meet the same position twice.
        digits, kept = int(match["digits"]), min(int(match["digits"]), 6)
        if match["zone"] is None:
            bind = oracledb.DB_TYPE_TIMESTAMP if digits <= 6 else None
            return OracleType(f"timestamp({kept}) without time zone", bind)
        # A TIMESTAMP WITH TIME ZONE bind carries offset zero: the UTC value selected
        # through SYS_EXTRACT_UTC comes back exact. A LOCAL one is bound the same way and
        # cast in the query (Relation.bind).
        bind = None if digits > 6 else oracledb.DB_TYPE_TIMESTAMP_TZ
        return OracleType(
            f"timestamp({kept}) with time zone",
            bind,
            True,
            _as_utc,
            local_time=bool(match["local"]),
        )
    if data_type.startswith("INTERVAL YEAR"):
        return OracleType("interval", convert=_as_months)
    if match := _DAY_TO_SECOND.fullmatch(data_type):
        return OracleType("interval") if int(match["digits"]) <= 6 else None
    return _FIXED.get(data_type)


def refusal(data_type: str, column: str, table: str) -> str:
    """Why a column of ``data_type`` cannot be copied, and what to do instead."""
    named = f"column {column} of {table} is"
    if data_type in ("LONG", "LONG RAW"):
        return (
            f"{named} {data_type}, which Oracle does not allow in the inline view that each"
            f" batch's FETCH FIRST makes: read it through a view that selects"
            f" TO_LOB({column}), or leave it out with 'columns'"
        )
    if _DAY_TO_SECOND.fullmatch(data_type):
        return (
            f"{named} {data_type}: PostgreSQL keeps intervals to the microsecond, and its"
            f" nanoseconds would be cut off; read it through a view that selects"
            f" CAST({column} AS INTERVAL DAY(9) TO SECOND(6)), or leave it out with 'columns'"
        )
    return f"{named} of type {data_type}, which syncd cannot copy; leave it out with 'columns'"


def _number(precision: int | None, scale: int | None) -> OracleType:
    if precision is None:
        # NUMBER, and NUMBER(*, s): up to 38 significant digits at any magnitude.
        return OracleType("numeric", oracledb.DB_TYPE_NUMBER)
    if scale is None or scale <= 0:
        digits = precision - (scale or 0)
        for limit, pg_type in ((4, "smallint"), (9, "integer"), (18, "bigint")):
            if digits <= limit:
                return OracleType(pg_type, oracledb.DB_TYPE_NUMBER, convert=_as_int)
        return OracleType(f"numeric({digits},0)", oracledb.DB_TYPE_NUMBER)
    return OracleType(f"numeric({max(precision, scale)},{scale})", oracledb.DB_TYPE_NUMBER)


def _as_int(value: Decimal, clean: _Cleaner) -> int:
    return int(value)


def _as_utc(value: datetime, clean: _Cleaner) -> datetime:
    return value.replace(tzinfo=UTC)


def _as_months(value: oracledb.IntervalYM, clean: _Cleaner) -> tuple[int, int, int]:
    """(months, days, microseconds), which syncd.pg encodes as an interval: a timedelta has
    no months, and a year is not 365 days."""
    return value.years * 12 + value.months, 0, 0


def _as_text(value: str, clean: _Cleaner) -> str:
    return clean(value)


class NonFiniteNumber(Exception):
    """A JSON document holds NaN or Infinity, which JSON and jsonb have no number for."""


def _refuse_constant(name: str) -> Any:
    raise NonFiniteNumber(name)


def _as_json_text(value: str, clean: _Cleaner) -> str:
    """Oracle's JSON text, checked and written digit for digit, with NULs cleaned."""
    document = json.loads(
        value, parse_float=Decimal, parse_int=Decimal, parse_constant=_refuse_constant
    )
    return _as_json(document, clean)


def _as_json(value: Any, clean: _Cleaner) -> str:
    """JSON text for a value the driver decoded from Oracle's binary JSON.

    Numbers arrive as Decimal and are written digit for digit; json.dumps cannot do
    that. Oracle's extended types (dates, binary) become strings, as JSON_SERIALIZE
    would write them.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal | int):
        return str(value)
    if isinstance(value, float):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(clean(value), ensure_ascii=False)
    if isinstance(value, dict):
        members = (f"{_as_json(str(k), clean)}:{_as_json(v, clean)}" for k, v in value.items())
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_as_json(item, clean) for item in value) + "]"
    if isinstance(value, date):
        return json.dumps(value.isoformat())
    if isinstance(value, bytes):
        return json.dumps(value.hex())
    return json.dumps(str(value))


_TIMESTAMP = re.compile(r"TIMESTAMP\((?P<digits>\d)\)(?P<zone> WITH (?P<local>LOCAL )?TIME ZONE)?")
_DAY_TO_SECOND = re.compile(r"INTERVAL DAY(\(\d\))? TO SECOND\((?P<digits>\d)\)")
_TIME_BINDS = (
    oracledb.DB_TYPE_DATE,
    oracledb.DB_TYPE_TIMESTAMP,
    oracledb.DB_TYPE_TIMESTAMP_TZ,
    oracledb.DB_TYPE_TIMESTAMP_LTZ,
)
_FIXED = {
    # FLOAT is a decimal NUMBER with a binary precision, not an IEEE float: numeric keeps it.
    "FLOAT": OracleType("numeric", oracledb.DB_TYPE_NUMBER),
    "BINARY_FLOAT": OracleType("real"),
    "BINARY_DOUBLE": OracleType("double precision"),
    "DATE": OracleType("timestamp(0) without time zone", oracledb.DB_TYPE_DATE),
    "VARCHAR2": OracleType("text", oracledb.DB_TYPE_VARCHAR, convert=_as_text),
    "NVARCHAR2": OracleType("text", oracledb.DB_TYPE_NVARCHAR, convert=_as_text),
    "CHAR": OracleType("text", oracledb.DB_TYPE_CHAR, convert=_as_text),
    "NCHAR": OracleType("text", oracledb.DB_TYPE_NCHAR, convert=_as_text),
    "CLOB": OracleType("text", convert=_as_text),
    "NCLOB": OracleType("text", convert=_as_text),
    "ROWID": OracleType("text"),
    "UROWID": OracleType("text"),
    "RAW": OracleType("bytea", oracledb.DB_TYPE_RAW),
    "BLOB": OracleType("bytea"),
    "BOOLEAN": OracleType("boolean"),
    # Oracle's own text: the driver's decoding drops the offset of a TIMESTAMP WITH TIME
    # ZONE inside the document, and keeps a BINARY_DOUBLE NaN that jsonb cannot hold.
    "JSON": OracleType("jsonb", convert=_as_json_text, serialized=True),
}


class NulCharacter(Exception):
    """A text value holds U+0000 and the sync's policy is to fail."""


class _Cleaner:
    """Applies the NUL policy to text, remembering whether it changed anything."""

    def __init__(self, policy: NulPolicy) -> None:
        self._replacement = {"strip": "", "replace": "\ufffd"}.get(policy)
        self.changed = False

    def __call__(self, text: str) -> str:
        if "\x00" not in text:
            return text
        if self._replacement is None:
            raise NulCharacter
        self.changed = True
        return text.replace("\x00", self._replacement)


class RowReader:
    """Turns fetched rows into records PostgreSQL accepts, and into keyset positions."""

    def __init__(
        self,
        names: Sequence[str],
        types: Sequence[OracleType],
        order: Sequence[int],
        key: Sequence[int],
        nul: NulPolicy,
    ) -> None:
        self._names = names
        self._conversions = [(i, t.convert) for i, t in enumerate(types) if t.convert]
        self._order = order
        self._key = key
        self._nul = nul

    def records(self, rows: Sequence[Sequence[Any]]) -> tuple[list[tuple[Any, ...]], int]:
        """The rows as records, and how many values the NUL policy changed."""
        clean = _Cleaner(self._nul)
        cleaned = 0
        records = []
        for row in rows:
            self._refuse_nul_in_key(row)
            record = list(row)
            for i, convert in self._conversions:
                if record[i] is None:
                    continue
                try:
                    record[i] = convert(record[i], clean)
                except NulCharacter:
                    raise SourceError(
                        f"column {self._names[i]} of the row at {list(self.position(row))}"
                        " holds a NUL character, which PostgreSQL text cannot store"
                        " (the sync has nul: fail; strip or replace would clean it)"
                    ) from None
                except NonFiniteNumber as exc:
                    raise SourceError(
                        f"column {self._names[i]} of the row at {list(self.position(row))}"
                        f" holds {exc} inside its JSON, which jsonb has no number for"
                    ) from None
                cleaned += clean.changed
                clean.changed = False
            records.append(tuple(record))
        return records, cleaned

    def _refuse_nul_in_key(self, row: Sequence[Any]) -> None:
        """Cleaning a key would make it another key: 'A\\0' stripped is 'A', and two rows
        would become one. Such a key stops the run, whatever the NUL policy."""
        for i in self._key:
            if isinstance(row[i], str) and "\x00" in row[i]:
                raise SourceError(
                    f"the key column {self._names[i]} of the row at {list(self.position(row))}"
                    " holds a NUL character, which PostgreSQL text cannot store; syncd does"
                    " not clean keys, which could merge two rows into one"
                )

    def position(self, row: Sequence[Any]) -> Position:
        return tuple(position_text(row[i]) for i in self._order)


def position_text(value: Any) -> str:
    """A keyset value as text that ``bind_value`` reads back exactly."""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Decimal):
        return format(value, "f")  # 10000, never 1E+4
    return str(value)


def bind_value(text: str, bind: oracledb.DbType) -> Any:
    """The Python value to bind, as ``bind``, for a position's text."""
    if bind is oracledb.DB_TYPE_TIMESTAMP_TZ:
        # Positions of zoned cursors are kept in UTC, and bound at offset zero.
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    if bind in _TIME_BINDS:
        return datetime.fromisoformat(text)
    if bind is oracledb.DB_TYPE_NUMBER:
        return Decimal(text)
    if bind is oracledb.DB_TYPE_RAW:
        return bytes.fromhex(text)
    return text


# Text that Oracle knows to hold JSON (IS JSON) is parsed into Python objects by the
# driver; syncd copies it as the text it is, so it is fetched as plain long text.
_UNPARSED = {
    oracledb.DB_TYPE_CLOB: oracledb.DB_TYPE_LONG,
    oracledb.DB_TYPE_NCLOB: oracledb.DB_TYPE_LONG_NVARCHAR,
    oracledb.DB_TYPE_BLOB: oracledb.DB_TYPE_LONG_RAW,
}


def json_text_unparsed(cursor: oracledb.AsyncCursor, metadata: oracledb.FetchInfo) -> Any:
    """An output type handler: IS JSON columns arrive as text or bytes, not parsed."""
    if (metadata.is_json or metadata.is_oson) and metadata.type_code is not oracledb.DB_TYPE_JSON:
        fetched = _UNPARSED.get(metadata.type_code, metadata.type_code)
        return cursor.var(fetched, metadata.display_size or 0, arraysize=cursor.arraysize)
    return None

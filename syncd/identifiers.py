"""Names that come from config, made safe for SQL.

Every identifier is always quoted, so a table called ``x; drop table y`` is
only an odd name, never a statement. Quoting also keeps case exactly as
written, which is what a mirror of another database needs.
"""

from __future__ import annotations

from dataclasses import dataclass


def quote_ident(name: str) -> str:
    """Quote one identifier for PostgreSQL (and Oracle: both double quotes)."""
    if not name:
        raise ValueError("an identifier cannot be empty")
    if "\x00" in name:
        raise ValueError("an identifier cannot contain a NUL character")
    return '"' + name.replace('"', '""') + '"'


def split_qualified(text: str) -> tuple[str, ...]:
    """Split ``schema.table`` into its parts; double-quoted parts may hold dots."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    was_quoted = False
    i = 0
    while i < len(text):
        char = text[i]
        if quoted:
            if char == '"' and text[i + 1 : i + 2] == '"':
                current.append('"')
                i += 1
            elif char == '"':
                quoted = False
            else:
                current.append(char)
        elif char == '"':
            quoted = was_quoted = True
        elif char == ".":
            parts.append(_finish_part(current, was_quoted, text))
            current, was_quoted = [], False
        else:
            current.append(char)
        i += 1
    if quoted:
        raise ValueError(f"unbalanced double quote in {text!r}")
    parts.append(_finish_part(current, was_quoted, text))
    return tuple(parts)


def _finish_part(chars: list[str], was_quoted: bool, text: str) -> str:
    part = "".join(chars)
    if not was_quoted:
        part = part.strip()
    if not part:
        raise ValueError(f"empty name part in {text!r}")
    return part


@dataclass(frozen=True)
class TableName:
    """A table name with an optional schema, as written in config."""

    schema: str | None
    name: str

    @classmethod
    def parse(cls, text: str) -> TableName:
        parts = split_qualified(text)
        if len(parts) == 1:
            return cls(None, parts[0])
        if len(parts) == 2:
            return cls(parts[0], parts[1])
        raise ValueError(f"expected 'table' or 'schema.table', found {text!r}")

    @property
    def sql(self) -> str:
        if self.schema is None:
            return quote_ident(self.name)
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    def __str__(self) -> str:
        return self.name if self.schema is None else f"{self.schema}.{self.name}"

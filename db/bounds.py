"""What each column can hold, read from the column types in ``db/schema.py`` (never hard-coded), so
that no value written from event data can make the database reject a batch: a rejected batch is
redelivered and rejected again forever (a poison batch).

A value does not fit when it is text longer than its length in UTF-16 code units (as SQL Server's
NVARCHAR counts them), text holding a NUL (PostgreSQL text cannot), an integer beyond its type or a
decimal beyond its precision. A usage row is checked by the pipeline (``metering.pipeline.check_record``,
which tests/storage/test_column_bounds.py holds to these limits column by column) and quarantined
when it does not fit; ``fitted`` bounds an audit row (quarantine, LLM-log usage) instead: text clipped
and NUL removed, an out-of-range integer set to NULL, and a note of what was changed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from db.schema import ExactDecimal

_INTEGER_BITS = ((sa.BigInteger, 63), (sa.SmallInteger, 15), (sa.Integer, 31))


def _utf16_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-16-le", "surrogatepass")) // 2


def clip(text: str, limit: int) -> str:
    """At most ``limit`` UTF-16 code units (SQL Server's NVARCHAR measure) of ``text``."""
    text = text[:limit]
    while _utf16_length(text) > limit:
        text = text[:-1]
    return text


def text_length(column: sa.Column[Any]) -> int | None:
    """The column's length for text (``None``: text without a length, or not text)."""
    kind = column.type
    return getattr(kind, "length", None) if isinstance(kind, sa.String) else None


def integer_range(column: sa.Column[Any]) -> int | None:
    """The largest magnitude an integer column holds (``None`` for other types)."""
    for integer_type, bits in _INTEGER_BITS:  # (a SQLite variant of BIGINT is still 64 bits there)
        if isinstance(column.type, integer_type):
            return 2**bits - 1
    return None


def decimal_limit(column: sa.Column[Any]) -> Decimal | None:
    """The bound (exclusive) on the magnitude of a ``NUMERIC(p, s)`` column's values."""
    kind = column.type
    if isinstance(kind, ExactDecimal):
        return Decimal(10) ** (kind.precision - kind.scale)
    return None


def _problem(column: sa.Column[Any], value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        if "\x00" in value:
            return f"{column.name} contains a NUL character"
        length = text_length(column)
        if length is not None and _utf16_length(value) > length:
            return f"{column.name} is longer than {length} characters"
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        limit = integer_range(column)
        if limit is not None and not -limit - 1 <= value <= limit:
            return f"{column.name} {value} is out of range"
        return None
    if isinstance(value, Decimal):
        bound = decimal_limit(column)
        if bound is not None and not abs(value) < bound:
            return f"{column.name} {value} does not fit NUMERIC({column.type.precision}, {column.type.scale})"  # type: ignore[attr-defined]
    return None


def fitted(table: sa.Table, row: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``row`` bounded to ``table``'s columns (for audit rows, where keeping a clipped value beats
    failing the batch), and a note per value changed."""
    bounded = dict(row)
    notes = []
    for name, value in row.items():
        column = table.c.get(name)
        if column is None or _problem(column, value) is None:
            continue
        if isinstance(value, str):
            text = value.replace("\x00", "")
            length = text_length(column)
            bounded[name] = clip(text, length) if length is not None else text
            notes.append(f"{name} clipped")
        elif column.nullable:
            bounded[name] = None
            notes.append(f"{name} out of range, not kept")
        else:
            raise ValueError(f"{table.name}.{name} cannot hold the value given and cannot be empty")
    return bounded, notes

"""Time helpers: the library's UTC clock and how session timestamps are stored and read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["from_db_timestamp", "read_timestamp", "to_sqlite_timestamp", "utcnow"]


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (every timestamp the library makes)."""
    return datetime.now(UTC)


def to_sqlite_timestamp(value: datetime) -> str:
    """How a session timestamp is stored in SQLite: ISO-8601 in UTC with its offset."""
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    return value.astimezone(UTC).isoformat()


def from_db_timestamp(value: Any) -> datetime:
    """A stored session timestamp as an aware UTC datetime (naive values are taken as UTC,
    as SQLite's CURRENT_TIMESTAMP writes them). Raises ValueError for anything else."""
    if type(value) is str:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is UTC:  # how this library writes them: nothing to convert
            return parsed
        value = parsed
    if not isinstance(value, datetime):
        raise ValueError(f"not a timestamp: {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def read_timestamp(value: Any) -> datetime | None:
    """:func:`from_db_timestamp`, or None for NULL and for anything that is no timestamp
    (another tool's value, or a damaged row)."""
    if value is None:
        return None
    try:
        return from_db_timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return None

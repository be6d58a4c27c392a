"""SQLite's errors, by result code (https://sqlite.org/rescode.html), never by message."""

from __future__ import annotations

import sqlite3

from ..dialect import Failure, driver_error

__all__ = ["classify", "is_busy"]

# the primary code is the low byte of the extended one
_PRIMARY = {
    5: Failure.BUSY,  # SQLITE_BUSY
    6: Failure.BUSY,  # SQLITE_LOCKED
    8: Failure.READ_ONLY,  # SQLITE_READONLY
    9: Failure.INTERRUPTED,  # SQLITE_INTERRUPT
    10: Failure.IO,  # SQLITE_IOERR
    11: Failure.CORRUPT,  # SQLITE_CORRUPT
    13: Failure.FULL,  # SQLITE_FULL
    14: Failure.CANT_OPEN,  # SQLITE_CANTOPEN
    26: Failure.CORRUPT,  # SQLITE_NOTADB
}
#: SQLITE_CONSTRAINT_UNIQUE. The schema's one UNIQUE constraint is ``sessions.name``
#: (primary keys report SQLITE_CONSTRAINT_PRIMARYKEY), and a test keeps it so.
_CONSTRAINT_UNIQUE = 2067


def classify(exc: BaseException) -> Failure:
    """What a ``sqlite3`` error (``sqlite_errorcode``), bare or wrapped by SQLAlchemy, means."""
    err = driver_error(exc)
    if isinstance(err, UnicodeDecodeError):
        # sqlite3's, in place of an error whose message quotes the damaged file
        return Failure.CORRUPT
    if not isinstance(err, sqlite3.Error):
        return Failure.OTHER
    code = getattr(err, "sqlite_errorcode", None)
    if not isinstance(code, int):
        return Failure.OTHER
    if code == _CONSTRAINT_UNIQUE:
        return Failure.UNIQUE_NAME
    return _PRIMARY.get(code & 0xFF, Failure.OTHER)


def is_busy(exc: sqlite3.Error) -> bool:
    """SQLite's SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock."""
    return classify(exc) is Failure.BUSY

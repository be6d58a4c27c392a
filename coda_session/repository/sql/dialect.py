"""The dialect seam: what differs between the databases the SQL backend runs on.

A :class:`Dialect` classifies a driver error (by the database's own error code, never by
its message text) and says which failures are worth running the transaction again for.
:class:`SqliteDialect` is SQLite's; a server database adds its own (SQLSTATE) beside it.
"""

from __future__ import annotations

import enum
import sqlite3
from typing import Protocol

__all__ = ["SQLITE", "Dialect", "Failure", "SqliteDialect", "dialect_for", "driver_error"]


class Failure(enum.Enum):
    """What went wrong, as far as the library's behaviour is concerned."""

    BUSY = "the database is locked by another connection and the busy timeout ran out"
    UNIQUE_NAME = "a session of that name exists already"
    FULL = "the database or disk is full"
    READ_ONLY = "the database is read-only"
    CORRUPT = "the database file is corrupt or not a database"
    CANT_OPEN = (
        "cannot open the database file: it is missing or its directory is read-only "
        "or not accessible"
    )
    INTERRUPTED = "the operation was interrupted"
    IO = "a disk I/O error"
    OTHER = "the database failed"


def driver_error(exc: BaseException) -> BaseException:
    """The DBAPI error behind a SQLAlchemy wrapper (``exc.orig``), or ``exc`` itself."""
    orig = getattr(exc, "orig", None)
    return orig if isinstance(orig, BaseException) else exc


class Dialect(Protocol):
    """What the repository asks of a database beyond the shared SQLAlchemy statements."""

    name: str

    def classify(self, exc: BaseException) -> Failure:
        """What a driver (or SQLAlchemy-wrapped driver) error means."""
        ...

    def retryable(self, failure: Failure) -> bool:
        """Whether a transaction that failed so, rolled back whole, may simply run again."""
        ...


# SQLite's result codes (https://sqlite.org/rescode.html): the primary code is the low
# byte of the extended one
_SQLITE_PRIMARY = {
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
_SQLITE_CONSTRAINT_UNIQUE = 2067


class SqliteDialect:
    """SQLite: errors by ``sqlite3.Error.sqlite_errorcode``."""

    name = "sqlite"

    def classify(self, exc: BaseException) -> Failure:
        err = driver_error(exc)
        if not isinstance(err, sqlite3.Error):
            return Failure.OTHER
        code = getattr(err, "sqlite_errorcode", None)
        if not isinstance(code, int):
            return Failure.OTHER
        if code == _SQLITE_CONSTRAINT_UNIQUE:
            return Failure.UNIQUE_NAME
        return _SQLITE_PRIMARY.get(code & 0xFF, Failure.OTHER)

    def retryable(self, failure: Failure) -> bool:
        return failure is Failure.BUSY


class GenericDialect:
    """A database the library has no error table for: nothing is retried, every failure
    is a plain StorageError."""

    def __init__(self, name: str) -> None:
        self.name = name

    def classify(self, exc: BaseException) -> Failure:
        return Failure.OTHER

    def retryable(self, failure: Failure) -> bool:
        return False


SQLITE = SqliteDialect()


def dialect_for(backend_name: str) -> Dialect:
    """The dialect for a SQLAlchemy backend name (``url.get_backend_name()``)."""
    if backend_name == "sqlite":
        return SQLITE
    return GenericDialect(backend_name)

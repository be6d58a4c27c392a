"""The dialect seam: what differs between the databases the SQL backend runs on.

A :class:`Dialect` classifies a driver error (by the database's own error code, never by
its message text) and says which failures are worth running the transaction again for.
:class:`SqliteDialect` is SQLite's; a server database adds its own (SQLSTATE) beside it.
"""

from __future__ import annotations

import enum
import sqlite3
import sys
from typing import Protocol

__all__ = [
    "PG_UNIQUE_NAME_CONSTRAINT",
    "POSTGRESQL",
    "SQLITE",
    "Dialect",
    "Failure",
    "PostgresDialect",
    "ServerError",
    "SqliteDialect",
    "dialect_for",
    "driver_error",
]


class Failure(enum.Enum):
    """What went wrong, as far as the library's behaviour is concerned."""

    BUSY = "the database is locked by another connection and the busy timeout ran out"
    UNIQUE_NAME = "a session of that name exists already"
    FULL = "the database or disk is full"
    READ_ONLY = "the database is read-only"
    CORRUPT = (
        "the database file is corrupt or not a database: restore it from a backup (or an "
        "export), or check that the configuration names the right file"
    )
    CANT_OPEN = (
        "cannot open the database file: it is missing or its directory is read-only "
        "or not accessible"
    )
    INTERRUPTED = "the operation was interrupted"
    IO = "a disk I/O error"
    CONFLICT = "the transaction conflicted with another one (serialization failure or deadlock)"
    CONNECTION = "the connection to the database server failed or was lost"
    AUTH = "the database server refused the credentials"
    NO_DATABASE = "the database does not exist on the server"
    TIMEOUT = "the database server did not answer in time"
    OTHER = "the database failed"


class ServerError(Exception):
    """A database server driver's error (asyncpg's), as the library's own runner raises it:
    the original is the ``__cause__``; ``sqlstate`` and ``constraint_name`` are copied."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error) or type(error).__name__)
        self.sqlstate: str | None = getattr(error, "sqlstate", None)
        self.constraint_name: str | None = getattr(error, "constraint_name", None)


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
        if isinstance(err, UnicodeDecodeError):
            # sqlite3's, in place of an error whose message quotes the damaged file
            return Failure.CORRUPT
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


# SQLSTATE codes (https://www.postgresql.org/docs/current/errcodes-appendix.html): exact
# codes first, then the two-character class
_PG_CODES = {
    "40001": Failure.CONFLICT,  # serialization_failure
    "40P01": Failure.CONFLICT,  # deadlock_detected
    "55P03": Failure.BUSY,  # lock_not_available: lock_timeout (busy_timeout) ran out
    "57014": Failure.INTERRUPTED,  # query_canceled (a cancelled operation)
    "57P01": Failure.CONNECTION,  # admin_shutdown: the server is stopping
    "57P02": Failure.CONNECTION,  # crash_shutdown
    "57P03": Failure.CONNECTION,  # cannot_connect_now: the server is starting
    "53100": Failure.FULL,  # disk_full
    "25006": Failure.READ_ONLY,  # read_only_sql_transaction
    "28P01": Failure.AUTH,  # invalid_password
    "28000": Failure.AUTH,  # invalid_authorization_specification
    "3D000": Failure.NO_DATABASE,  # invalid_catalog_name
    "XX001": Failure.CORRUPT,  # data_corrupted
    "XX002": Failure.CORRUPT,  # index_corrupted
}
_PG_CLASSES = {"08": Failure.CONNECTION, "58": Failure.IO}
#: The unique constraint on ``sessions.name`` (the naming convention in tables.py); a
#: duplicate primary key (pk_sessions) is another failure, not "the name is taken".
PG_UNIQUE_NAME_CONSTRAINT = "uq_sessions_name"


def _sqlstate(err: BaseException) -> str | None:
    code = getattr(err, "sqlstate", None)
    if isinstance(code, str):
        return code
    # SQLAlchemy's asyncpg adapter keeps the asyncpg error as the cause
    cause = err.__cause__
    code = getattr(cause, "sqlstate", None)
    return code if isinstance(code, str) else None


def _constraint(err: BaseException) -> str | None:
    for candidate in (err, err.__cause__):
        name = getattr(candidate, "constraint_name", None)
        if isinstance(name, str):
            return name
    return None


class PostgresDialect:
    """PostgreSQL: errors by SQLSTATE (asyncpg's ``sqlstate``, also through SQLAlchemy's
    adapter); connections that fail or drop are told apart from database errors."""

    name = "postgresql"

    def classify(self, exc: BaseException) -> Failure:
        err = driver_error(exc)
        code = _sqlstate(err)
        if code is None:
            if isinstance(err, TimeoutError):
                return Failure.TIMEOUT
            if isinstance(err, OSError) or _is_connection_error(err):
                return Failure.CONNECTION
            return Failure.OTHER
        if code == "23505":  # unique_violation
            constraint = _constraint(err)
            return Failure.UNIQUE_NAME if constraint == PG_UNIQUE_NAME_CONSTRAINT else Failure.OTHER
        return _PG_CODES.get(code) or _PG_CLASSES.get(code[:2], Failure.OTHER)

    def retryable(self, failure: Failure) -> bool:
        # the transaction was rolled back whole: running it again is safe. A lost
        # connection is not retried here: a write may or may not have committed.
        return failure in (Failure.BUSY, Failure.CONFLICT)


def _is_connection_error(err: BaseException) -> bool:
    """asyncpg's errors for an operation on a closed connection (a plain InterfaceError,
    without SQLSTATE) or on one whose protocol is out of step (InternalClientError, as
    after a server restart the client had not noticed), recognised by type, never by
    message. asyncpg is looked up, not
    imported: when it was never imported, no error can be one of its own."""
    asyncpg = sys.modules.get("asyncpg")
    if asyncpg is None:
        return False
    interface = asyncpg.exceptions.InterfaceError
    internal = asyncpg.exceptions.InternalClientError  # its protocol out of step: unusable
    for candidate in (err, err.__cause__):
        if candidate is not None and (
            type(candidate) is interface or isinstance(candidate, internal)
        ):
            return True
    return False


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
POSTGRESQL = PostgresDialect()


def dialect_for(backend_name: str) -> Dialect:
    """The dialect for a SQLAlchemy backend name (``url.get_backend_name()``)."""
    if backend_name == "sqlite":
        return SQLITE
    if backend_name == "postgresql":
        return POSTGRESQL
    return GenericDialect(backend_name)

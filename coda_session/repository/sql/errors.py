"""The one edge where driver and SQLAlchemy errors become coda_session's.

Each runner call of the repository passes its failure through :func:`translate`, which
asks the :class:`~.dialect.Dialect` what the error means (by error code, never by its
message) and returns the library's error for it, to be raised chained to the original.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc

from ...errors import SessionError, SessionExistsError, StorageError
from .dialect import Dialect, Failure, ServerError, driver_error

__all__ = ["DRIVER_ERRORS", "translate", "translated"]

#: What the runners may raise that the edge translates (anything else is a bug and is
#: raised as it is). UnicodeDecodeError is sqlite3's: when SQLite's error message quotes
#: bytes of a damaged file that are not UTF-8 ("malformed database schema ... near ..."),
#: sqlite3 cannot make the message into its error and raises UnicodeDecodeError instead
#: (rows the library decodes itself raise DamagedDataError before they get here).
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    sqlite3.Error,
    sa_exc.SQLAlchemyError,
    ServerError,
    OSError,
    UnicodeDecodeError,
)


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def translate(
    exc: BaseException, action: str, dialect: Dialect, *, name: str | None = None
) -> SessionError:
    """The library's error for ``exc`` raised while doing ``action``.

    A unique violation on ``sessions.name`` becomes :class:`SessionExistsError` (naming
    ``name`` when given); every other failure a :class:`StorageError` saying what the
    database reported.
    """
    if isinstance(exc, SessionError):
        return exc
    failure = dialect.classify(exc)
    if failure is Failure.UNIQUE_NAME:
        shown = f"session {name!r}" if name is not None else "a session of that name"
        return SessionExistsError(f"{shown} already exists")
    err = driver_error(exc)
    text = _first_line(err)
    if isinstance(err, UnicodeDecodeError):
        text = f"its error message holds bytes of the file that are not text: {text}"
    if failure is Failure.OTHER:
        return StorageError(f"{action} failed: {text}")
    return StorageError(f"{action} failed: {failure.value} ({text})")


@contextmanager
def translated(action: str, dialect: Dialect) -> Iterator[None]:
    """Raise what :func:`translate` makes of a driver error inside the block (for the
    operator API's one-off connections)."""
    try:
        yield
    except SessionError:
        raise
    except DRIVER_ERRORS as exc:
        raise translate(exc, action, dialect) from exc

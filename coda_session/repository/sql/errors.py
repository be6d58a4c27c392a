"""Translation of driver and SQLAlchemy errors into coda_session's, in one place."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc

from ...errors import SessionError, StorageError

__all__ = ["translate_errors"]


def _describe(exc: BaseException) -> str:
    text = (
        str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else type(exc).__name__
    )
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        return f"the database is locked by another connection and the busy timeout ran out ({text})"
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        return f"the database file is corrupt or not a database ({text})"
    if "readonly" in lowered or "read-only" in lowered:
        return f"the database is read-only ({text})"
    if "unable to open" in lowered:
        return (
            "cannot open the database file: it is missing or its directory is read-only "
            f"or not accessible ({text})"
        )
    if "full" in lowered:
        return f"the database or disk is full ({text})"
    return text


@contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Re-raise driver/SQLAlchemy errors as :class:`StorageError`, chained."""
    try:
        yield
    except SessionError:
        raise
    except (sqlite3.Error, sa_exc.SQLAlchemyError, OSError) as exc:
        raise StorageError(f"{action} failed: {_describe(exc)}") from exc

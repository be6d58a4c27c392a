"""The schema's bootstrapping: bring a database to the newest revision, with Alembic.

Opening a store runs :func:`ensure_schema` under :func:`migration_guard`; the operator
API (:mod:`coda_session.migrate`) and the Alembic environment (``migrations/env.py``) use
the same functions.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ...errors import SchemaVersionError
from .registry import dialect_for

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

__all__ = [
    "BASELINE_REVISION",
    "HEAD_REVISION",
    "MIGRATION_LOCK_KEY",
    "adopt_unversioned",
    "alembic_config",
    "current_revision",
    "ensure_schema",
    "hold_migration_lock",
    "migration_guard",
    "migrations_dir",
]

#: The revision that creates exactly the spec's schema.
BASELINE_REVISION = "0001"
#: The newest revision this version of the library knows (a test keeps it equal to Alembic's head).
HEAD_REVISION = "0014"


# Alembic keeps the running migration's context in module globals (alembic.context,
# alembic.op): two migrations at once in one process, even of different databases, would
# run on each other's connections. One at a time, process-wide.
_MIGRATING = threading.Lock()


@asynccontextmanager
async def migration_guard() -> AsyncIterator[None]:
    """Hold the process-wide migration lock without blocking the event loop."""
    while not _MIGRATING.acquire(blocking=False):  # noqa: ASYNC110 - other threads, other loops
        # polled rather than waited on in a thread: a cancelled waiter must not leave
        # the lock taken behind it
        await asyncio.sleep(0.005)
    try:
        yield
    finally:
        _MIGRATING.release()


def migrations_dir() -> Path:
    """The Alembic script directory: inside the installed wheel, or the repository's
    top-level ``migrations/`` when running from a clone."""
    package = Path(__file__).resolve().parents[2]  # coda_session/
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise SchemaVersionError("the migration scripts are missing from this installation")


def alembic_config() -> Config:
    """An Alembic configuration that needs no alembic.ini (works from a wheel)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


#: The key of the PostgreSQL advisory lock that migrations hold (b"coda" as an integer):
#: several processes opening a new database at once migrate it exactly once. (SQLite's
#: write lock does the same for a file.)
MIGRATION_LOCK_KEY = 0x636F6461


def hold_migration_lock(conn: Connection) -> None:
    """Wait for and hold (until the transaction ends) the migration lock, where the
    database's write lock does not already serialise migrations (PostgreSQL)."""
    dialect_for(conn.dialect.name).hold_migration_lock(conn, MIGRATION_LOCK_KEY)


def current_revision(conn: Connection) -> str | None:
    """The database's Alembic revision, or None when it has no version table."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    if len(rows) > 1:
        raise SchemaVersionError(f"the database has several schema heads: {[r[0] for r in rows]}")
    return rows[0][0] if rows else None


def adopt_unversioned(conn: Connection) -> bool:
    """Stamp a database made with the spec's raw ``CREATE TABLE`` statements at the baseline.

    Such a file has the tables but no version table; running the first revision on it would
    fail with "table already exists". Returns True when it stamped.
    """
    inspector = sa.inspect(conn)
    if inspector.has_table("alembic_version"):
        return False
    if not (inspector.has_table("sessions") and inspector.has_table("messages")):
        return False
    from alembic.migration import MigrationContext

    MigrationContext.configure(conn).stamp(_script(), BASELINE_REVISION)
    return True


def _script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def ensure_schema(conn: Connection) -> None:
    """Upgrade the database on ``conn`` (inside the caller's transaction) to head.

    Refuses, with :class:`SchemaVersionError`, a database stamped with a revision this
    version does not know (a newer library wrote it); never downgrades.
    """
    current = current_revision(conn)
    if current == HEAD_REVISION:
        return
    script = _script()
    if current is not None:
        try:
            known = script.get_revision(current)
        except Exception:  # alembic raises several kinds for unknown ids
            known = None
        if known is None:
            raise SchemaVersionError(
                f"the database schema is at revision {current!r}, which this version of "
                f"coda_session does not know (it knows up to {HEAD_REVISION!r}); "
                "upgrade coda_session to open it"
            )
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")

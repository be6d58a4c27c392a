"""The operator API: bring a database to the schema this library knows, or report its revision.

Blocking and async forms of what ``alembic upgrade head`` / ``alembic current`` do, for
deploy scripts and installs without an alembic.ini (a wheel).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection

from .config import SessionConfig
from .errors import SchemaVersionError
from .repository.sql.engine import create_engine, database_url
from .repository.sql.errors import translated
from .repository.sql.registry import dialect_for
from .repository.sql.schema import (
    BASELINE_REVISION,
    HEAD_REVISION,
    alembic_config,
    current_revision,
    ensure_schema,
    migration_guard,
)
from .runtime import run_blocking

__all__ = [
    "BASELINE_REVISION",
    "HEAD_REVISION",
    "alembic_config",
    "current",
    "current_async",
    "upgrade",
    "upgrade_async",
]


async def _with_connection(config: Mapping[str, Any] | SessionConfig | None, fn: Any) -> Any:
    settings = SessionConfig.from_mapping(config)
    if settings.backend == "memory":
        raise SchemaVersionError("the memory backend has no schema to migrate")
    with translated(
        "migrating the database", dialect_for(database_url(settings).get_backend_name())
    ):
        engine = create_engine(settings, migrations=True)
        try:
            async with migration_guard(), engine.connect() as conn, conn.begin():
                return await conn.run_sync(fn)
        finally:
            await engine.dispose()


def _upgrade_and_report(conn: Connection) -> str | None:
    ensure_schema(conn)
    return current_revision(conn)


async def upgrade_async(config: Mapping[str, Any] | SessionConfig | None = None) -> str:
    """Bring the configured database to the newest schema; returns its revision.

    What opening a manager does anyway, for operators and deploy scripts (no alembic.ini
    needed, so it works from a wheel). Refuses a newer schema with SchemaVersionError.
    """
    revision: str = await _with_connection(config, _upgrade_and_report)
    return revision


async def current_async(config: Mapping[str, Any] | SessionConfig | None = None) -> str | None:
    """The configured database's schema revision (None for a database Alembic never ran on)."""
    revision: str | None = await _with_connection(config, current_revision)
    return revision


def upgrade(config: Mapping[str, Any] | SessionConfig | None = None) -> str:
    """Blocking :func:`upgrade_async`; safe to call where an event loop already runs."""
    return run_blocking(upgrade_async, config)


def current(config: Mapping[str, Any] | SessionConfig | None = None) -> str | None:
    """Blocking :func:`current_async`."""
    return run_blocking(current_async, config)

"""The engine for a configuration: its URL, and SQLAlchemy's async engine set up by the
database's dialect (a SQLite file prepared and tuned, PostgreSQL's server settings)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ...config import SessionConfig
from ...errors import StorageError
from .registry import dialect_for

__all__ = ["create_engine", "database_url", "sqlite_path"]


def database_url(config: SessionConfig) -> URL:
    """The SQLAlchemy URL a configuration points at."""
    if config.database_url is not None:
        return make_url(config.database_url)
    if config.database_file is None:
        raise StorageError("the memory backend has no database URL")
    return URL.create("sqlite+aiosqlite", database=str(config.database_file))


def sqlite_path(url: URL) -> Path | None:
    """The file behind a file database's URL (SQLite's), or None for an in-memory or
    server database."""
    return dialect_for(url.get_backend_name()).database_file(url)


def create_engine(
    config: SessionConfig, url: URL | None = None, *, migrations: bool = False
) -> AsyncEngine:
    """The async engine for a configuration, set up by its dialect.

    ``migrations=True`` gives SQLite connections with foreign keys off: Alembic's batch mode
    rebuilds a table by copy-and-drop, and with foreign keys on, dropping a parent table
    deletes or orphans its children. The migration environment checks
    ``PRAGMA foreign_key_check`` before it commits instead.
    """
    url = url or database_url(config)
    dialect = dialect_for(url.get_backend_name())
    engine = create_async_engine(url, **dialect.engine_options(config, url, migrations=migrations))
    dialect.prepare_engine(engine)
    return engine

"""Alembic environment for coda_session.

The database is the one the library would open:

* ``alembic -x url=sqlite+aiosqlite:////abs/path/sessions.db upgrade head``, or
* ``alembic -x storage_path=~/.coda/sessions upgrade head``, or the environment variables
  ``CODA_SESSION_DATABASE_URL``, ``CODA_SESSION_STORAGE_PATH`` or ``CODA_SESSION_CONFIG``
  (a TOML file with a ``[session]`` table), in that order; else the default
  ``~/.coda/sessions``.

When the library migrates it hands its own connection in ``config.attributes["connection"]``
(Alembic's connection-sharing recipe), so nothing here opens a second one.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from coda_session.config import SessionConfig
from coda_session.repository.sql.engine import create_engine
from coda_session.repository.sql.schema import adopt_unversioned
from coda_session.repository.sql.tables import Base

config = context.config
target_metadata = Base.metadata


def _session_config() -> SessionConfig:
    x: dict[str, str] = context.get_x_argument(as_dictionary=True)
    url = x.get("url") or os.environ.get("CODA_SESSION_DATABASE_URL")
    if url:
        return SessionConfig.from_mapping({"session": {"database_url": url}})
    path = x.get("storage_path") or os.environ.get("CODA_SESSION_STORAGE_PATH")
    if path:
        return SessionConfig.from_mapping({"session": {"storage_path": path}})
    toml = x.get("config") or os.environ.get("CODA_SESSION_CONFIG")
    if toml:
        return SessionConfig.from_toml(toml)
    return SessionConfig()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        adopt_unversioned(connection)
        context.run_migrations()
        if connection.dialect.name == "sqlite":
            # migrations run with foreign keys off (see create_engine): prove that no
            # table rebuild orphaned a message before this transaction commits
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise RuntimeError(f"migration broke foreign keys: {broken[:5]}")


async def _run_online() -> None:
    settings = _session_config()
    if settings.backend == "memory":
        raise SystemExit("the memory backend has no database to migrate")
    engine = create_engine(settings, migrations=True)
    try:
        async with engine.connect() as conn, conn.begin():
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def _offline() -> None:
    settings = _session_config()
    from coda_session.repository.sql.engine import database_url

    context.configure(
        url=database_url(settings).render_as_string(hide_password=False),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


shared: Any = config.attributes.get("connection")
if shared is not None:
    _run(shared)
elif context.is_offline_mode():
    _offline()
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    asyncio.run(_run_online())

"""Alembic environment for coda_session.

The database is the one the library would open:

* ``alembic -x url=sqlite+aiosqlite:////abs/path/sessions.db upgrade head``, or
* ``alembic -x storage_path=~/.coda/sessions upgrade head``, or the environment variables
  ``CODA_SESSION_DATABASE_URL``, ``CODA_SESSION_STORAGE_PATH`` or ``CODA_SESSION_CONFIG``
  (a TOML file with a ``[session]`` table), in that order; else the default
  ``~/.coda/sessions``.

Only ``upgrade`` creates a SQLite database that does not exist yet (directory 0700, file
0600, as the library does). Every other command that reaches the database (``current``,
``check``, ``downgrade``, ``stamp``, ...) refuses a missing one and creates nothing: from
the CLI with the message on stderr and exit status 1, from Python with ``CommandError``.

A caller can instead hand its own database in ``config.attributes["connection"]``
(Alembic's connection-sharing recipe; the library does, and so do tools such as
pytest-alembic), as any of:

* a sync ``Connection``: the migration runs inside the caller's transaction (one is begun
  and committed here when none is open);
* a sync ``Engine``: a connection is opened here, and the migration runs in one
  transaction on it;
* an ``AsyncEngine`` or ``AsyncConnection``: the same, driven by asyncio (on a fresh
  event loop, or in a fresh thread when a loop already runs in this one);
* another connectable whose ``connect()`` yields a ``Connection`` (pytest-alembic's).

For autogenerate and ``alembic check`` the models' ``MetaData`` is ``target_metadata`` here
and ``config.attributes["target_metadata"]`` (unless the caller put its own there). It is
``coda_session.repository.sql.metadata``: pytest-alembic's
``all_models_register_on_metadata`` finds that package by the reference and checks that
importing everything below it registers no table env.py did not see.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.util import CommandError
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from coda_session import errors
from coda_session.config import SessionConfig
from coda_session.errors import StorageError
from coda_session.repository.sql import metadata
from coda_session.repository.sql.adoption import repair_adopted
from coda_session.repository.sql.engine import create_engine, database_url, sqlite_path
from coda_session.repository.sql.schema import adopt_unversioned, hold_migration_lock

config = context.config
if config.attributes.get("target_metadata") is None:
    config.attributes["target_metadata"] = metadata
target_metadata = config.attributes["target_metadata"]

# what each command does to a database, for the message when there is none
_VERBS = {
    "current": "report",
    "display_version": "report",
    "check": "check",
    "revision": "compare",
    "retrieve_migrations": "compare",
    "downgrade": "downgrade",
    "stamp": "stamp",
    "do_stamp": "stamp",
}


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


def _run_migrations() -> None:
    """``context.run_migrations()``, raising what a revision refused as the library's error.

    A revision imports nothing of the library (what it needs is frozen beside it, so a
    later library cannot change what it does): where the library's code raised one of
    its errors, the frozen copy raises an exception naming that class in ``coda_error``,
    and this is where the name becomes the class again (same message, same cause, the
    revision's frames kept).
    """
    try:
        context.run_migrations()
    except Exception as exc:
        error = getattr(errors, str(getattr(exc, "coda_error", "")), None)
        if isinstance(error, type) and issubclass(error, errors.SessionError):
            raise error(*exc.args).with_traceback(exc.__traceback__) from exc.__cause__
        raise


def _one_database(dialect: str) -> Any:
    """``include_object`` for autogenerate and ``alembic check``: the search index is one
    database's own (migration 0012). The models declare SQLite's FTS5 tables (``info``
    ``fts5``), which PostgreSQL does not have; PostgreSQL's ``message_search`` side
    table (a ``tsvector`` and GIN, written by .postgresql.search) is not modelled, so it
    and its indexes are left out of the comparison there."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        table = obj if type_ == "table" else getattr(obj, "table", None)
        if table is None:
            return True
        if getattr(table, "info", {}).get("fts5"):
            return dialect == "sqlite"
        return not (reflected and getattr(table, "name", None) == "message_search")

    return include


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        include_object=_one_database(connection.dialect.name),
        process_revision_directives=config.attributes.get("process_revision_directives"),
    )
    with context.begin_transaction():
        # PostgreSQL: one migrating process at a time; the others then find it done
        hold_migration_lock(connection)
        adopted = adopt_unversioned(connection)
        _run_migrations()
        if adopted:
            # what the spec's schema allowed but the library cannot read (orphans included)
            repair_adopted(connection)
        if connection.dialect.name == "sqlite":
            # migrations run with foreign keys off (see create_engine): prove that no
            # table rebuild orphaned a message before this transaction commits
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise StorageError(
                    f"the migration left messages without their session: {broken[:5]}; "
                    "nothing was changed"
                )


def _run_in_transaction(connection: Connection) -> None:
    """``_run`` in the connection's open transaction, or in one begun and committed here."""
    if connection.in_transaction():
        _run(connection)
    else:
        with connection.begin():
            _run(connection)


async def _run_async(connectable: AsyncEngine | AsyncConnection) -> None:
    if isinstance(connectable, AsyncConnection):
        await connectable.run_sync(_run_in_transaction)
        return
    async with connectable.connect() as conn, conn.begin():
        await conn.run_sync(_run)


def _wait_for(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` to completion from this synchronous code.

    On a fresh event loop; when one already runs in this thread (a blocking Alembic call
    made from async code) that loop cannot be re-entered, so in a fresh thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    failed: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=target, name="coda-session-alembic")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


def _run_shared(shared: object) -> None:
    if isinstance(shared, Connection):
        _run_in_transaction(shared)
    elif isinstance(shared, Engine):
        with shared.connect() as conn, conn.begin():
            _run(conn)
    elif isinstance(shared, AsyncEngine | AsyncConnection):
        _wait_for(_run_async(shared))
    elif callable(getattr(shared, "connect", None)):
        with shared.connect() as conn:  # type: ignore[attr-defined]
            if not isinstance(conn, Connection):
                raise TypeError(
                    "config.attributes['connection']: connect() gave "
                    f"{type(conn).__name__}, not a sqlalchemy Connection"
                )
            _run_in_transaction(conn)
    else:
        raise TypeError(
            "config.attributes['connection'] must be a sqlalchemy Connection, Engine, "
            f"AsyncEngine or AsyncConnection, not {type(shared).__name__}"
        )


def _command() -> str:
    """The Alembic command running: from the CLI's options, else the name of the callback
    ``alembic.command`` handed this environment (``upgrade`` when neither tells)."""
    cmd = getattr(config.cmd_opts, "cmd", None)
    if cmd:
        return str(getattr(cmd[0], "__name__", "upgrade"))
    opts = getattr(getattr(context, "_proxy", None), "context_opts", None) or {}
    return str(getattr(opts.get("fn"), "__name__", "upgrade"))


def _refuse_a_missing_database(settings: SessionConfig) -> None:
    """Only ``upgrade`` creates the database: any other command on a SQLite file that does
    not exist would otherwise leave an empty one (and its directory) behind."""
    path = sqlite_path(database_url(settings))
    if path is None or path.exists():
        return
    name = _command()
    if name == "upgrade":
        return
    message = (
        f"no database at {path}: nothing to {_VERBS.get(name, 'do')}; "
        "`alembic upgrade head` creates it"
    )
    if config.cmd_opts is not None:
        raise SystemExit(message)  # the CLI: the message alone on stderr, exit status 1
    raise CommandError(message)


async def _run_online(settings: SessionConfig) -> None:
    engine = create_engine(settings, migrations=True)
    try:
        async with engine.connect() as conn, conn.begin():
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def _offline() -> None:
    settings = _session_config()
    context.configure(
        url=database_url(settings).render_as_string(hide_password=False),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        _run_migrations()


shared: Any = config.attributes.get("connection")
if shared is not None:
    _run_shared(shared)
elif context.is_offline_mode():
    _offline()
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    online = _session_config()
    if online.backend == "memory":
        raise SystemExit("the memory backend has no database to migrate")
    _refuse_a_missing_database(online)
    _wait_for(_run_online(online))

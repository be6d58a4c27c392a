"""Engine and connections: file permissions, PRAGMAs, and how transactions begin."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ...config import SessionConfig
from ...errors import StorageError
from .dialect import SQLITE, Failure

__all__ = [
    "WRITE_OPTION",
    "configure",
    "connect_sqlite",
    "connect_sqlite_for_loop",
    "create_engine",
    "database_url",
    "is_busy",
    "postgres_engine_options",
    "postgres_server_settings",
    "prepare_sqlite_file",
    "sqlite_path",
]

WRITE_OPTION = "coda_session_write"


def database_url(config: SessionConfig) -> URL:
    """The SQLAlchemy URL a configuration points at."""
    if config.database_url is not None:
        return make_url(config.database_url)
    if config.database_file is None:
        raise StorageError("the memory backend has no database URL")
    return URL.create("sqlite+aiosqlite", database=str(config.database_file))


def sqlite_path(url: URL) -> Path | None:
    """The file behind a SQLite URL, or None for an in-memory or non-SQLite database."""
    if url.get_backend_name() != "sqlite":
        return None
    db = url.database or ""
    if db in ("", ":memory:") or db.startswith("file:"):
        return None
    return Path(db)


def prepare_sqlite_file(path: Path) -> None:
    """Create the database's directory (0700) and file (0600) before SQLite opens it.

    Conversations are private: SQLite gives its -wal and -shm files the mode of the
    database file, so creating that file 0600 first covers all three. Every missing
    directory level is created 0700 (existing ones are left as they are). A symbolic link
    in the database file's place (or its -wal, -shm or -journal file's) is refused: SQLite
    would follow it and create the files outside the storage directory, with other modes.
    """
    directory = path.parent
    try:
        missing: list[Path] = []
        level = directory
        while not os.path.lexists(level):
            missing.append(level)
            if level.parent == level:
                break
            level = level.parent
        for new in reversed(missing):
            try:
                os.mkdir(new, 0o700)
            except FileExistsError:
                continue  # created meanwhile by someone else: theirs, as it is
            os.chmod(new, 0o700)  # the umask may have cleared bits: exactly 0700
        for name in (path.name, *(path.name + tail for tail in ("-wal", "-shm", "-journal"))):
            if os.path.islink(directory / name):
                raise StorageError(
                    f"the database file {directory / name} is a symbolic link: refused, so "
                    "the database never lands outside storage_path; remove the link, or "
                    "configure database_url for a database file elsewhere"
                )
        if not os.path.lexists(path):
            flags = os.O_CREAT | os.O_WRONLY | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(path, flags, 0o600)
            os.close(fd)
    except FileExistsError:
        if os.path.islink(path):  # a link put there meanwhile
            raise StorageError(
                f"the database file {path} is a symbolic link: refused; remove the link, "
                "or configure database_url for a database file elsewhere"
            ) from None
    except OSError as exc:
        raise StorageError(f"cannot create the database file {path}: {exc}") from exc


def _daemon(conn: aiosqlite.Connection) -> aiosqlite.Connection:
    # aiosqlite's worker threads are not daemons: a manager the caller forgot to close would
    # keep the interpreter from exiting. Committed data is safe in SQLite's WAL either way.
    # aiosqlite keeps its thread private (``_thread``): the tested range is pinned in
    # pyproject.toml and tests/test_sqlite.py fails if this stops making it a daemon.
    thread: Any = getattr(conn, "_thread", conn)  # before 0.21 the connection was the thread
    if hasattr(thread, "daemon") and not thread.is_alive():
        thread.daemon = True
    return conn


def is_busy(exc: sqlite3.Error) -> bool:
    """SQLite's SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock (the
    dialect's classification, by error code)."""
    return SQLITE.classify(exc) is Failure.BUSY


def _switch_to_wal(raw: sqlite3.Connection, busy_timeout: float) -> Any:
    # Switching a new file to WAL needs an exclusive lock and SQLite answers "database is
    # locked" at once instead of calling the busy handler: several processes or managers
    # opening a fresh file together would fail. Retry until the busy timeout instead.
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            return raw.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def configure(raw: sqlite3.Connection, busy_timeout: float, foreign_keys: bool = True) -> None:
    """The library's PRAGMAs on a new connection: explicit transactions, the busy timeout,
    foreign keys, WAL, synchronous=NORMAL."""
    raw.isolation_level = None  # transactions are begun explicitly (BEGIN IMMEDIATE for writes)
    raw.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    raw.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
    mode = _switch_to_wal(raw, busy_timeout)
    if mode is not None and str(mode[0]).lower() not in ("wal", "memory"):
        raise StorageError(f"cannot switch the database to WAL mode (got {mode[0]!r})")
    raw.execute("PRAGMA synchronous = NORMAL")


def connect_sqlite(path: str, busy_timeout: float, foreign_keys: bool = True) -> sqlite3.Connection:
    """A ``sqlite3`` connection with the library's PRAGMAs (usable from any one thread at a
    time: the runner hands it to exactly one)."""
    conn = sqlite3.connect(path, timeout=busy_timeout, check_same_thread=False)
    try:
        configure(conn, busy_timeout, foreign_keys)
    except BaseException:
        conn.close()
        raise
    return conn


def connect_sqlite_for_loop(path: str, busy_timeout: float) -> sqlite3.Connection:
    """A ``sqlite3`` connection for small operations run on an event loop's own thread.

    It never waits and never does disk-heavy work there: its busy timeout is 0 (a lock held
    by anyone else raises ``database is locked`` at once, and the caller retries on a
    worker thread) and it never checkpoints the WAL (the worker connections do). It is set
    up with the normal busy timeout, so call this on a worker thread.
    """
    conn = connect_sqlite(path, busy_timeout)
    try:
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
    except BaseException:
        conn.close()
        raise
    return conn


async def _connect_aiosqlite(
    path: str, busy_timeout: float, foreign_keys: bool
) -> aiosqlite.Connection:
    """An aiosqlite connection (for SQLAlchemy's engine) with the library's PRAGMAs, set
    through aiosqlite's public API, on a daemon worker thread."""
    conn = _daemon(aiosqlite.connect(path, timeout=busy_timeout, isolation_level=None))
    await conn
    try:
        await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        await conn.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                cursor = await conn.execute("PRAGMA journal_mode = WAL")
                mode = await cursor.fetchone()
                break
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.005)
        if mode is not None and str(mode[0]).lower() not in ("wal", "memory"):
            raise StorageError(f"cannot switch the database to WAL mode (got {mode[0]!r})")
        await conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        await conn.close()
        raise
    return conn


def postgres_server_settings(config: SessionConfig) -> dict[str, str]:
    """The session settings of every PostgreSQL connection: ``busy_timeout`` bounds lock
    waits (``lock_timeout``, milliseconds; 0 there means "wait forever", so a zero
    busy_timeout is 1 ms), and the time zone is UTC.

    Bitmap scans are off: every read of messages wants a range of an index in order, most
    of them only its newest rows; a bitmap scan reads the whole range and sorts it. Where
    the statistics are stale (a table that just grew by 100k rows, before autovacuum
    analyzed it) the planner picked one for a 50-message tail of a fresh branch, and read
    all 100k rows of its source (116 ms instead of 0.4 ms).

    Transactions default to READ COMMITTED whatever the server's or database's default: a
    write that waited for a lock then reads what the holder committed (at REPEATABLE READ
    it would fail to serialize and run again). Multi-statement transactions also ask for
    their level explicitly; this covers a one-statement write such as the append."""
    lock_ms = max(1, int(config.busy_timeout * 1000))
    return {
        "lock_timeout": str(lock_ms),
        "TimeZone": "UTC",
        "application_name": "coda_session",
        "enable_bitmapscan": "off",
        "default_transaction_isolation": "read committed",
    }


def _same_text(value: Any) -> Any:
    return value


def postgres_engine_options(config: SessionConfig) -> dict[str, Any]:
    """``create_async_engine`` options for PostgreSQL (asyncpg): the pool's size, the
    connect timeout, the session settings, a ping before a pooled connection is reused
    (the server may have restarted), and JSON passed through as the text the codec wrote
    (SQLAlchemy's asyncpg dialect otherwise decodes JSON columns itself)."""
    return {
        "pool_size": config.connection_pool_size,
        "max_overflow": 0,  # connection_pool_size is the most connections, as documented
        "pool_pre_ping": True,
        "json_serializer": _same_text,
        "json_deserializer": _same_text,
        "connect_args": {
            "timeout": config.connect_timeout,
            "server_settings": postgres_server_settings(config),
        },
    }


def create_engine(
    config: SessionConfig, url: URL | None = None, *, migrations: bool = False
) -> AsyncEngine:
    """The async engine for a configuration; SQLite files are prepared and tuned.

    ``migrations=True`` gives SQLite connections with foreign keys off: Alembic's batch mode
    rebuilds a table by copy-and-drop, and with foreign keys on, dropping a parent table
    deletes or orphans its children. The migration environment checks
    ``PRAGMA foreign_key_check`` before it commits instead.
    """
    url = url or database_url(config)
    kwargs: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            prepare_sqlite_file(path)
            target = str(path)

            async def creator() -> Any:
                return await _connect_aiosqlite(target, config.busy_timeout, not migrations)

            kwargs["async_creator"] = creator
            kwargs["pool_size"] = config.connection_pool_size
    elif url.get_backend_name() == "postgresql":
        kwargs.update(postgres_engine_options(config))
    else:
        kwargs["pool_size"] = config.connection_pool_size
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Any) -> None:
            # take the write lock up front: a deferred transaction that later writes can
            # fail with SQLITE_BUSY instead of waiting (read-to-write upgrade deadlock)
            write = conn.get_execution_options().get(WRITE_OPTION, True)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine

"""SQLite's connections: the database file made private, and the library's PRAGMAs.

The PRAGMA sequence is written once (:func:`_pragmas`) and run by both drivers: stdlib
``sqlite3`` (the runner's connections) and aiosqlite (SQLAlchemy's engine).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiosqlite

from ....errors import StorageError
from .errors import is_busy

__all__ = [
    "MMAP_BYTES",
    "configure",
    "connect_aiosqlite",
    "connect_sqlite",
    "connect_sqlite_for_loop",
    "prepare_sqlite_file",
]

#: Switching a new file to WAL needs an exclusive lock and SQLite answers "database is
#: locked" at once instead of calling the busy handler: several processes or managers
#: opening a fresh file together would fail. Both drivers retry it until the busy timeout.
_WAL = "PRAGMA journal_mode = WAL"


#: Bytes of the database file read through a memory map (address space, not memory: the
#: pages are the operating system's cache, shared by every connection). Measured on a
#: 1M-message store (950 MB): a phrase search's CPU went from 50 to 38 ms, most of it
#: reading the 1,000 candidates' index bodies, which the 2 MB page cache of each
#: connection otherwise re-reads with a system call per page.
MMAP_BYTES = 1 << 30


def _pragmas(busy_timeout: float, foreign_keys: bool) -> tuple[str, ...]:
    """The library's PRAGMAs, in order: the busy timeout, foreign keys, WAL,
    synchronous=NORMAL, and reads through a memory map of the file (:data:`MMAP_BYTES`)."""
    return (
        f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}",
        f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}",
        _WAL,
        "PRAGMA synchronous = NORMAL",
        f"PRAGMA mmap_size = {MMAP_BYTES}",
    )


def _check_wal(mode: Any) -> None:
    if mode is not None and str(mode[0]).lower() not in ("wal", "memory"):
        raise StorageError(f"cannot switch the database to WAL mode (got {mode[0]!r})")


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


def configure(raw: sqlite3.Connection, busy_timeout: float, foreign_keys: bool = True) -> None:
    """The library's PRAGMAs on a new ``sqlite3`` connection, with transactions begun
    explicitly (BEGIN IMMEDIATE for writes)."""
    raw.isolation_level = None
    for pragma in _pragmas(busy_timeout, foreign_keys):
        if pragma != _WAL:
            raw.execute(pragma)
            continue
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                mode = raw.execute(pragma).fetchone()
                break
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)
        _check_wal(mode)


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


async def connect_aiosqlite(
    path: str, busy_timeout: float, foreign_keys: bool
) -> aiosqlite.Connection:
    """An aiosqlite connection (for SQLAlchemy's engine) with the library's PRAGMAs, set
    through aiosqlite's public API, on a daemon worker thread."""
    conn = _daemon(aiosqlite.connect(path, timeout=busy_timeout, isolation_level=None))
    await conn
    try:
        for pragma in _pragmas(busy_timeout, foreign_keys):
            if pragma != _WAL:
                await conn.execute(pragma)
                continue
            deadline = time.monotonic() + busy_timeout
            while True:
                try:
                    cursor = await conn.execute(pragma)
                    mode = await cursor.fetchone()
                    break
                except sqlite3.OperationalError as exc:
                    if not is_busy(exc) or time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(0.005)
            _check_wal(mode)
    except BaseException:
        await conn.close()
        raise
    return conn

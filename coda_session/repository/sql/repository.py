"""The SQL repository: one implementation for every database SQLAlchemy reaches."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ...config import SessionConfig
from ...errors import (
    ManagerClosedError,
    SessionExistsError,
    StorageError,
)
from ...models import MessageRecord, SessionInfo, SessionRecord
from ..base import SaveRequest, SaveResult, check_import_size
from . import ops
from .engine import (
    WRITE_OPTION,
    connect_sqlite,
    connect_sqlite_for_loop,
    connect_sqlite_inline,
    create_engine,
    database_url,
    is_busy,
    on_thread,
    sqlite_path,
)
from .errors import translate_errors
from .schema import ensure_schema, migration_guard

__all__ = ["SqlRepository"]

T = TypeVar("T")

#: Attempts of one operation when SQLite still reports the database busy after the busy
#: timeout (each attempt waits up to busy_timeout for the lock).
BUSY_ATTEMPTS = 3

# Small operations run on the event loop's own thread, on a connection that never waits:
# a thread hop costs more than the whole transaction (measured 80-100 us against 40 us).
#: most new messages, and their bytes, a save may carry to run on the loop
LOOP_MAX_MESSAGES = 64
LOOP_MAX_BYTES = 256 * 1024
#: most messages a read may return to run on the loop
LOOP_MAX_ROWS = 200
#: WAL pages (estimated) the loop connection may add before the next write goes to the
#: worker thread, whose commit checkpoints the WAL once it passes SQLite's default of 1000
LOOP_WAL_PAGES = 800


class SqlRepository:
    """Sessions in a SQL database through SQLAlchemy 2 (async).

    On SQLite every operation runs as one transaction in a single trip to the connection's
    thread (few statements, no per-statement hop); on other databases, and with
    ``fast_path=False``, the same operations run through SQLAlchemy's async connection.

    ``inline=True`` runs the SQLite operations on the event loop's own thread instead of
    hopping to a connection thread. Only for a loop nobody else uses (the blocking
    :class:`~coda_session.SessionManager` owns one): there it saves two thread switches
    per call and blocks no one who would not be waiting anyway.

    Otherwise, with ``connection_pool_size >= 2``, small operations (a save of a few
    messages, a session lookup, a read of up to ``LOOP_MAX_ROWS`` messages) also run on
    the event loop's thread, on a connection that never waits for a lock and never
    checkpoints: if anyone else holds the lock it gives up at once and the operation
    runs on the worker thread like every big one (a long read, a branch, a delete, a
    truncation, a bulk save), which waits up to ``busy_timeout``.
    """

    def __init__(
        self,
        config: SessionConfig | None = None,
        *,
        url: str | URL | None = None,
        fast_path: bool | None = None,
        inline: bool = False,
    ) -> None:
        self._config = config or SessionConfig()
        if url is None:
            self._url = database_url(self._config)
        else:
            self._url = url if isinstance(url, URL) else make_url(url)
        is_sqlite = self._url.get_backend_name() == "sqlite"
        self._fast_wanted = is_sqlite if fast_path is None else (fast_path and is_sqlite)
        self._inline_wanted = inline
        self._engine: AsyncEngine | None = None
        self._closed = False
        self._raw: aiosqlite.Connection | None = None
        self._inline: sqlite3.Connection | None = None
        # small operations on the event loop's thread (see the class docstring)
        self._loop: sqlite3.Connection | None = None
        self._loop_pages = 0
        # WAL lets readers run beside the one writer: up to connection_pool_size - 1 reader
        # connections, opened on demand, each with its own thread
        self._readers: list[aiosqlite.Connection] = []
        self._idle_readers: list[aiosqlite.Connection] = []
        self._reader_slots: asyncio.Semaphore | None = None
        # an import keeps one transaction open across many trips: nothing else may use the
        # writer (or inline) connection meanwhile
        self._conn_lock: asyncio.Lock | None = None
        self._path: str | None = None

    @property
    def url(self) -> URL:
        return self._url

    @property
    def uses_fast_path(self) -> bool:
        return self._raw is not None or self._inline is not None

    @property
    def runs_small_operations_on_the_loop(self) -> bool:
        return self._loop is not None

    async def open(self) -> None:
        if self._closed:
            raise ManagerClosedError("the storage was closed")
        if self._engine is not None:
            return
        with translate_errors("opening the database"):
            migrator = create_engine(self._config, self._url, migrations=True)
            try:
                async with migration_guard(), migrator.connect() as conn, conn.begin():
                    await conn.run_sync(ensure_schema)
            finally:
                await migrator.dispose()
            engine = create_engine(self._config, self._url)
            try:
                path = sqlite_path(self._url)
                if self._fast_wanted and path is not None:
                    if self._inline_wanted:
                        self._inline = connect_sqlite_inline(str(path), self._config.busy_timeout)
                    elif hasattr(aiosqlite.Connection, "_execute"):
                        self._raw = await connect_sqlite(str(path), self._config.busy_timeout)
                        self._path = str(path)
                        if self._config.connection_pool_size >= 2:
                            self._loop = await on_thread(
                                self._raw,
                                connect_sqlite_for_loop,
                                str(path),
                                self._config.busy_timeout,
                            )
                    # the one-trip path serves everything: idle pooled connections are let go
                    await engine.dispose()
            except BaseException:
                if self._loop is not None:
                    self._loop.close()
                    self._loop = None
                if self._raw is not None:
                    await self._raw.close()
                    self._raw = None
                await engine.dispose()
                raise
            self._engine = engine

    async def aclose(self) -> None:
        self._closed = True
        raw, inline, engine, loop = self._raw, self._inline, self._engine, self._loop
        self._raw, self._inline, self._engine, self._loop = None, None, None, None
        readers, self._readers, self._idle_readers = self._readers, [], []
        with translate_errors("closing the database"):
            for reader in readers:
                await reader.close()
            if inline is not None:
                inline.close()
            if loop is not None:
                loop.close()
            if raw is not None:
                await raw.close()
            if engine is not None:
                await engine.dispose()

    async def _run(
        self,
        action: str,
        write: bool,
        fn: Callable[..., T],
        *args: Any,
        loop_pages: int | None = None,
    ) -> T:
        """Run ``fn`` in one transaction. ``loop_pages`` marks a small operation that may
        run on the event loop's thread: the WAL pages it may write (0 for a read)."""
        if self._engine is None:
            await self.open()
        if self._inline is None and self._raw is None:
            return await self._run_alchemy(action, write, fn, args)
        attempt = 0
        while True:
            try:
                return await self._run_sqlite(write, fn, args, loop_pages)
            except sqlite3.OperationalError as exc:
                # the whole transaction was rolled back, so running it again is safe; the
                # busy timeout already waited, this only rides out a burst of writers
                attempt += 1
                if attempt < BUSY_ATTEMPTS and is_busy(exc):
                    await asyncio.sleep(0.01 * attempt)
                    continue
                with translate_errors(action):
                    raise exc
            except (sqlite3.Error, OSError) as exc:
                with translate_errors(action):
                    raise exc

    async def _run_sqlite(
        self, write: bool, fn: Callable[..., T], args: tuple[Any, ...], loop_pages: int | None
    ) -> T:
        lock = self._conn_lock
        if lock is not None and lock.locked():  # an import holds the connection: wait
            async with lock:
                pass
        if self._closed:
            raise ManagerClosedError("the storage was closed")
        if self._inline is not None:
            return _in_transaction(self._inline, write, fn, args)
        loop = self._loop
        if (
            loop is not None
            and loop_pages is not None
            and (not write or self._loop_pages < LOOP_WAL_PAGES)
        ):
            try:
                done: T = _in_transaction(loop, write, fn, args)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                # someone else holds the lock: wait for it on the worker thread below (the
                # attempt was rolled back whole, so running it again is safe)
            else:
                self._loop_pages += loop_pages
                return done
        assert self._raw is not None
        if write or self._reader_limit() < 1:
            writer = self._raw
            result: T = await on_thread(writer, _in_transaction, writer._conn, write, fn, args)
            if write:
                self._loop_pages = 0  # this commit checkpointed the WAL if it had grown
            return result
        reader = await self._reader()
        try:
            found: T = await on_thread(reader, _in_transaction, reader._conn, False, fn, args)
            return found
        finally:
            self._release(reader)

    async def _run_alchemy(
        self, action: str, write: bool, fn: Callable[..., T], args: tuple[Any, ...]
    ) -> T:
        with translate_errors(action):
            assert self._engine is not None
            async with self._engine.connect() as pooled:
                conn = await pooled.execution_options(**{WRITE_OPTION: write})
                async with conn.begin():
                    done: T = await conn.run_sync(_alchemy_call, fn, args)
                    return done

    def _lock(self) -> asyncio.Lock:
        if self._conn_lock is None:
            self._conn_lock = asyncio.Lock()
        return self._conn_lock

    async def _step(self, fn: Callable[..., T], *args: Any) -> T:
        """One trip inside a transaction the caller keeps open (raw or inline path)."""
        if self._inline is not None:
            return fn(self._inline, *args)
        assert self._raw is not None
        return await on_thread(self._raw, fn, self._raw._conn, *args)

    async def run_on_connection(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Test hook: run ``fn`` with the SQLite writer connection, on that connection's
        own thread (the fast path only; StorageError otherwise). For tests that play a
        fault SQLite's own way (``PRAGMA max_page_count``) or read the connection's PRAGMAs;
        not part of the storage contract."""
        if self._engine is None:
            await self.open()
        if self._inline is not None:
            return fn(self._inline)
        if self._raw is None:
            raise StorageError("this repository runs on the SQLAlchemy engine: no raw connection")
        return await on_thread(self._raw, fn, self._raw._conn)

    async def import_session(
        self,
        record: SessionRecord,
        batches: Iterable[Sequence[MessageRecord]],
        *,
        max_bytes: int | None = None,
    ) -> SessionRecord:
        # one transaction function over the staged (re-iterable) batches: a retry after a
        # busy database reads them again from the start
        count, size, last = await self._run(
            "importing a session", True, _import_all, record, batches, max_bytes
        )
        return _imported(record, count, size, last)

    async def read_page(
        self, session_id: str, *, after_id: int, upto_id: int, limit: int
    ) -> list[MessageRecord]:
        return await self._run(
            "reading messages",
            False,
            ops.read_page,
            session_id,
            after_id,
            upto_id,
            limit,
            loop_pages=0 if limit <= LOOP_MAX_ROWS else None,
        )

    def _reader_limit(self) -> int:
        # the pool: the writer, the loop connection if any, and the readers
        return self._config.connection_pool_size - 1 - (self._loop is not None)

    async def _reader(self) -> aiosqlite.Connection:
        if self._reader_slots is None:
            self._reader_slots = asyncio.Semaphore(self._reader_limit())
        await self._reader_slots.acquire()
        if self._idle_readers:
            return self._idle_readers.pop()
        try:
            assert self._path is not None
            reader = await connect_sqlite(self._path, self._config.busy_timeout)
        except BaseException:
            self._reader_slots.release()
            raise
        self._readers.append(reader)
        return reader

    def _release(self, reader: aiosqlite.Connection) -> None:
        if reader in self._readers:  # not closed meanwhile
            self._idle_readers.append(reader)
        if self._reader_slots is not None:
            self._reader_slots.release()

    async def create_session(
        self, record: SessionRecord, *, copy_from: str | None = None
    ) -> SessionRecord:
        try:
            return await self._run(
                "creating a session",
                True,
                ops.create,
                record,
                copy_from,
                loop_pages=None if copy_from is not None else 4,
            )
        except StorageError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError | sa_exc.IntegrityError):
                # a concurrent writer on a server database took the name first
                raise SessionExistsError(f"session {record.name!r} already exists") from exc
            raise

    async def load_session(
        self, *, name: str | None = None, session_id: str | None = None, tail: int = 0
    ) -> SessionRecord | None:
        return await self._run(
            "loading a session",
            False,
            ops.load,
            name,
            session_id,
            tail,
            loop_pages=0 if tail <= LOOP_MAX_ROWS else None,
        )

    async def read_messages(
        self, session_id: str, *, upto_id: int, limit: int | None
    ) -> list[MessageRecord]:
        small = limit is not None and limit <= LOOP_MAX_ROWS
        return await self._run(
            "reading messages",
            False,
            ops.read,
            session_id,
            upto_id,
            limit,
            loop_pages=0 if small else None,
        )

    async def save(self, request: SaveRequest) -> SaveResult:
        return await self._run(
            "saving a session", True, ops.save, request, loop_pages=_save_pages(request)
        )

    async def delete_session(self, session_id: str) -> bool:
        return await self._run("deleting a session", True, ops.delete, session_id)

    async def list_sessions(self) -> list[SessionInfo]:
        return await self._run("listing sessions", False, ops.list_all)

    async def text_length(
        self, session_id: str, *, upto_id: int, limit: int | None
    ) -> tuple[int, int]:
        return await self._run(
            "counting tokens", False, ops.text_length, session_id, upto_id, limit
        )


def _save_pages(request: SaveRequest) -> int | None:
    """The WAL pages a save may write if it is small enough for the loop, else None."""
    if request.truncation is not None or len(request.messages) > LOOP_MAX_MESSAGES:
        return None  # a truncation deletes any number of rows
    size = sum(r.byte_size() for r in request.messages)
    if request.metadata_patch:
        size += len(str(request.metadata_patch))
    if size > LOOP_MAX_BYTES:
        return None
    return 4 + size // 2048


def _in_transaction(
    conn: sqlite3.Connection, write: bool, fn: Callable[..., T], args: tuple[Any, ...]
) -> T:
    # BEGIN, the whole operation, COMMIT in one go (on a worker thread: in one trip)
    if conn.in_transaction:  # an operation interrupted between its statements left it
        conn.rollback()
    try:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        result = fn(ops.RawExecutor(conn), *args)
        conn.commit()
    except BaseException:
        if conn.in_transaction:  # also after a failed COMMIT: never leave one open
            conn.rollback()
        raise
    return result


def _begin_with(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    if conn.in_transaction:  # left by an interrupted operation
        conn.rollback()
    try:
        conn.execute("BEGIN IMMEDIATE")
        return fn(ops.RawExecutor(conn), *args)
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


def _call_raw(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    return fn(ops.RawExecutor(conn), *args)


def _finish_with(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    result = fn(ops.RawExecutor(conn), *args)
    conn.commit()
    return result


def _rollback(conn: sqlite3.Connection) -> None:
    conn.rollback()


def _import_all(
    cx: ops.Executor,
    record: SessionRecord,
    batches: Iterable[Sequence[MessageRecord]],
    max_bytes: int | None,
) -> tuple[int, int, int]:
    ops.import_begin(cx, record)
    count = size = 0
    for batch in batches:
        size += ops.import_batch(cx, record.id, batch)
        count += len(batch)
        check_import_size(record.name, size, max_bytes)
    return count, size, ops.import_finish(cx, record, count, size)


def _imported(record: SessionRecord, count: int, size: int, last: int) -> SessionRecord:
    return dataclasses.replace(record, message_count=count, size_bytes=size, last_message_id=last)


def _alchemy_call(conn: Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    return fn(ops.AlchemyExecutor(conn), *args)

"""Where SQLite work runs: the connections of one store and which operation goes where.

The runner is in exactly one mode at a time:

* :class:`Inline`: one connection used on the event loop's own thread; only for a loop
  that serves nobody else (the blocking API's private loop), where a thread hand-off
  would only add two thread switches to every call;
* :class:`Threaded`: a writer :class:`~.worker.Worker`, up to ``connection_pool_size - 2``
  reader workers opened on demand (WAL lets reads run beside the write), and, with a pool
  of two or more, one connection used on the event loop's thread for small operations: it
  never waits (busy timeout 0) and never checkpoints, and an operation that finds the lock
  taken there runs on a worker instead, which waits up to ``busy_timeout``;
* :class:`Closed`.

Which operations are small enough for the loop is the cost model here (:class:`SqliteCosts`):
a read of a few hundred messages, a save of a few dozen, each with the WAL pages it may add.

Nothing here is bound to one event loop: every wait is a future of the caller's loop, so
several loops (in several threads) may use one runner at the same time. The loop
connection serves one of them at a time: a loop that finds it in use by another thread
runs its operation on a worker instead (two threads in one ``sqlite3`` connection would
run their statements inside each other's transaction). The runner raises driver errors as they are; the repository classifies, retries and
translates them at one edge.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ...base import SaveRequest
from ..dialect import Operation
from ..operations import Operations
from .connect import connect_sqlite, connect_sqlite_for_loop
from .errors import is_busy
from .executor import RawExecutor
from .search import SQLITE_SEARCH
from .worker import Worker

__all__ = [
    "LOOP_MAX_BYTES",
    "LOOP_MAX_MESSAGES",
    "LOOP_MAX_ROWS",
    "Closed",
    "Inline",
    "SqliteCosts",
    "SqliteRunner",
    "Threaded",
]

T = TypeVar("T")
Op = Callable[..., T]

#: bytes of WAL past which a background indexer's connection checkpoints it whole
#: (:meth:`SqliteRunner.bound_wal`): twice what a manager's writers let it reach alone
#: (about 1,000 pages of 4 KiB, with what small saves add before the next checkpoint)
WAL_BOUND = 8 * 1024 * 1024
#: WAL pages (estimated) the loop connection may add before the next write goes to the
#: writer thread, whose commit checkpoints the WAL once it passes SQLite's default of 1000
LOOP_WAL_PAGES = 800

# Small operations may run on the event loop's own thread:
#: most new messages, and their bytes, a save may carry to run on the loop
LOOP_MAX_MESSAGES = 64
LOOP_MAX_BYTES = 256 * 1024
#: most messages a read may return to run on the loop
LOOP_MAX_ROWS = 200


class SqliteCosts:
    """The WAL pages an operation may write if it is small enough for the loop, else None
    (see :class:`~..dialect.Costs`)."""

    @staticmethod
    def read(rows: int | None) -> int | None:
        return 0 if rows is not None and rows <= LOOP_MAX_ROWS else None

    @staticmethod
    def create(copy_from: str | None, fork_point: int | None, fork_after: int | None) -> int | None:
        # a fork inside the source counts the rows it cuts: not on the loop
        if copy_from is None:
            return 4
        return 8 if fork_point is fork_after is None else None

    @staticmethod
    def save(request: SaveRequest) -> int | None:
        if (
            request.truncation is not None
            or request.drop_newest
            or len(request.messages) > LOOP_MAX_MESSAGES
        ):
            return None  # a truncation or a drop deletes (or moves) any number of rows
        size = sum(r.byte_size() for r in request.messages)
        if request.metadata_patch:
            size += len(str(request.metadata_patch))
        if size > LOOP_MAX_BYTES:
            return None
        return 4 + size // 2048


@dataclass(slots=True)
class Inline:
    conn: sqlite3.Connection


@dataclass(slots=True)
class Threaded:
    writer: Worker
    loop_conn: sqlite3.Connection | None
    reader_limit: int
    readers: list[Worker] = field(default_factory=list)
    loop_pages: int = 0
    # held while a thread runs a transaction on loop_conn (never waited for: a thread that
    # finds it taken goes to a worker), and while the readers list changes
    loop_lock: threading.Lock = field(default_factory=threading.Lock)
    readers_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(slots=True)
class Closed:
    pass


Mode = Inline | Threaded | Closed


def in_transaction(conn: sqlite3.Connection, write: bool, fn: Op[T], args: tuple[Any, ...]) -> T:
    """BEGIN, the whole operation, COMMIT, in one go on ``conn``'s thread."""
    if conn.in_transaction:  # an operation interrupted between its statements left it
        conn.rollback()
    try:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        result = fn(RawExecutor(conn), *args)
        conn.commit()
    except BaseException:
        if conn.in_transaction:  # also after a failed COMMIT: never leave one open
            conn.rollback()
        raise
    return result


def _begin_snapshot(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.rollback()
    conn.execute("BEGIN")
    # a deferred transaction takes its WAL snapshot at its first read: take it now
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()


def _in_snapshot(conn: sqlite3.Connection, fn: Op[T], args: tuple[Any, ...]) -> T:
    return fn(RawExecutor(conn), *args)


def _end_snapshot(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.rollback()


class SqliteRunner:
    """The connections of one SQLite file, in one of the modes above."""

    operations: Operations[RawExecutor] = Operations(SQLITE_SEARCH)
    own_connections = True

    def __init__(self, path: str, busy_timeout: float, pool_size: int, *, inline: bool) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._pool_size = pool_size
        self._inline = inline
        self.mode: Mode = Closed()

    def _connect(self) -> sqlite3.Connection:
        return connect_sqlite(self._path, self._busy_timeout)

    async def open(self) -> None:
        if self._inline:
            self.mode = Inline(self._connect())
            return
        writer = Worker(self._connect, "coda-session-writer")
        try:
            loop_conn = None
            if self._pool_size >= 2:
                # made on the writer thread: setting it up may wait for a lock
                loop_conn = await writer.call(
                    lambda _conn: connect_sqlite_for_loop(self._path, self._busy_timeout)
                )
            else:
                await writer.call(lambda _conn: None)  # opens the connection now
        except BaseException:
            await writer.aclose()
            raise
        self.mode = Threaded(
            writer, loop_conn, max(0, self._pool_size - 1 - (loop_conn is not None))
        )

    @property
    def runs_small_operations_on_the_loop(self) -> bool:
        mode = self.mode
        return isinstance(mode, Threaded) and mode.loop_conn is not None

    async def run(self, op: Operation, fn: Op[T], args: tuple[Any, ...]) -> T:
        """Run ``fn`` in one transaction. ``op.loop_pages`` marks a small operation that
        may run on the event loop's thread: the WAL pages it may write (0 for a read)."""
        write, loop_pages = op.write, op.loop_pages
        mode = self.mode
        if isinstance(mode, Inline):
            return in_transaction(mode.conn, write, fn, args)
        if not isinstance(mode, Threaded):
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        loop_conn = mode.loop_conn
        if (
            loop_conn is not None
            and loop_pages is not None
            and (not write or mode.loop_pages < LOOP_WAL_PAGES)
            and mode.loop_lock.acquire(blocking=False)  # else another loop's thread uses it
        ):
            try:
                done = in_transaction(loop_conn, write, fn, args)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                # someone else holds the lock: wait for it on a worker below (the attempt
                # was rolled back whole, so running it again is safe)
            else:
                mode.loop_pages += loop_pages
                return done
            finally:
                mode.loop_lock.release()
        if write or mode.reader_limit < 1:
            result: T = await mode.writer.call(
                in_transaction, write, fn, args, interruptible=not write
            )
            if write:
                mode.loop_pages = 0  # this commit checkpointed the WAL if it had grown
            return result
        reader = self._reader(mode)
        read: T = await reader.call(in_transaction, False, fn, args, interruptible=True)
        return read

    def _reader(self, mode: Threaded) -> Worker:
        with mode.readers_lock:
            for reader in mode.readers:
                if not reader.busy:
                    return reader
            if len(mode.readers) < mode.reader_limit:
                reader = Worker(self._connect, "coda-session-reader")
                mode.readers.append(reader)
                return reader
            # every reader is busy: queue behind the one that has waited least (round robin)
            reader = mode.readers.pop(0)
            mode.readers.append(reader)
            return reader

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Callable[..., Any]]:
        """A read transaction held open across several calls: yields ``step(fn, *args)``,
        which runs ``fn(executor, *args)`` inside it. Everything read through it is one
        committed state of the database."""
        mode = self.mode
        if isinstance(mode, Inline):
            conn = mode.conn
            _begin_snapshot(conn)
            try:

                async def inline_step(fn: Op[T], *args: Any) -> T:
                    done: T = _in_snapshot(conn, fn, args)
                    return done

                yield inline_step
            finally:
                _end_snapshot(conn)
            return
        if not isinstance(mode, Threaded):
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        # a connection of its own, so that no other read queues behind a long export
        worker = Worker(self._connect, "coda-session-snapshot")
        try:
            await worker.call(_begin_snapshot)

            async def step(fn: Op[T], *args: Any) -> T:
                return await worker.call(_in_snapshot, fn, args, interruptible=True)

            yield step
        finally:
            worker.stop()  # the connection closes, ending its read transaction

    async def on_connection(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` with the writer connection on its own thread."""
        mode = self.mode
        if isinstance(mode, Inline):
            return fn(mode.conn)
        if not isinstance(mode, Threaded):
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        done: T = await mode.writer.call(fn)
        return done

    async def leave_checkpoints(self) -> None:
        # measured: an indexer connection that also checkpointed after its commits kept
        # the WAL from starting over while a manager's loop connection wrote (3,000 small
        # saves grew it to 35-88 MB instead of 6-13)
        await self.on_connection(lambda conn: conn.execute("PRAGMA wal_autocheckpoint = 0"))

    async def bound_wal(self) -> None:
        def restart(conn: sqlite3.Connection) -> None:
            path = conn.execute("PRAGMA database_list").fetchone()[2]
            try:
                size = os.path.getsize(f"{path}-wal")
            except OSError:
                return
            if size > WAL_BOUND:
                # RESTART waits (busy timeout) for the writers, copies every frame and
                # leaves the WAL to be started over by the next write
                conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()

        await self.on_connection(restart)

    async def aclose(self) -> None:
        mode, self.mode = self.mode, Closed()
        if isinstance(mode, Inline):
            mode.conn.close()
        elif isinstance(mode, Threaded):
            with mode.readers_lock:
                readers = list(mode.readers)
            for reader in readers:
                reader.stop()
            if mode.loop_conn is not None:
                # another loop's thread may be inside a transaction on it: let it end
                with mode.loop_lock:
                    mode.loop_conn.close()
            await mode.writer.aclose()
            for reader in readers:
                await reader.aclose()

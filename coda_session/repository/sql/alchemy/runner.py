"""The generic runner: the repository's operations through SQLAlchemy's async engine.

Used for every database without a fast path of its own, for PostgreSQL and SQLite with
``fast_path=False`` (in the test suite, SQLite as the ``sqlite-core`` backend, so this path
is proven on every run), and for a SQLite database that is not a file. A dialect tells it
how its transactions begin (``transaction_options``); it asks no database's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ....errors import StorageError
from ....loopsafe import loop_shutting_down
from ..dialect import Operation
from ..operations import Operations
from .executor import AlchemyExecutor

__all__ = ["AlchemyRunner"]

T = TypeVar("T")
Op = Callable[..., T]


def _call(conn: Connection, fn: Op[T], args: tuple[Any, ...]) -> T:
    return fn(AlchemyExecutor(conn), *args)


class _LoopEngine:
    """One event loop's engine. SQLAlchemy's async pool waits on futures of the loop that
    made it and is not thread-safe, so each loop that runs operations gets an engine of its
    own (several loops in several threads may share one manager). It is disposed when its
    loop shuts down: a started async generator (the *sentinel*) is closed by
    ``asyncio.run``'s ``shutdown_asyncgens()`` before the loop closes. Only its own loop
    touches it (a close from another thread is scheduled there)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.disposed = False  # asked to go: no new operation starts on it
        self.users = 0  # operations holding one of its connections
        self._gone = False
        self._sentinel: AsyncGenerator[None, None] | None = None
        # made while its loop shuts down: no sentinel can dispose of it (see watch)
        self.ephemeral = loop_shutting_down(asyncio.get_running_loop())

    async def watch(self) -> None:
        if self._sentinel is None and not self.ephemeral:
            self._sentinel = self._watch()
            await self._sentinel.__anext__()

    async def _watch(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            self._sentinel = None
            await self.dispose()

    async def dispose(self) -> None:
        """Dispose of the engine once no operation holds a connection: one checked in
        after the pool was disposed would stay open until collected."""
        self.disposed = True
        if self.users == 0 and not self._gone:
            self._gone = True
            await self.engine.dispose()

    def connection(self, options: dict[str, Any]) -> _Checkout:
        return _Checkout(self, options)

    async def aclose(self) -> None:
        sentinel, self._sentinel = self._sentinel, None
        if sentinel is not None:
            await sentinel.aclose()  # its finally disposes the engine
        else:
            await self.dispose()


class _Checkout:
    """``async with entry.connection(options) as conn``: a pooled connection of the
    loop's engine, counted as in use. A class, not an async generator: it also serves a
    flush that runs while ``asyncio.run`` shuts its loop down, when a new async
    generator is refused (asyncio warns that nobody would close it)."""

    def __init__(self, entry: _LoopEngine, options: dict[str, Any]) -> None:
        self._entry = entry
        self._options = options
        self._pooled: AsyncConnection | None = None

    async def __aenter__(self) -> AsyncConnection:
        entry = self._entry
        entry.users += 1
        try:
            self._pooled = pooled = await entry.engine.connect()
            return await pooled.execution_options(**self._options)
        except BaseException:
            await self._done()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self._done()

    async def _done(self) -> None:
        entry, pooled, self._pooled = self._entry, self._pooled, None
        try:
            if pooled is not None:
                await pooled.close()
        finally:
            entry.users -= 1
            if entry.disposed or entry.ephemeral:
                await entry.dispose()


class AlchemyRunner:
    """Runs each operation in one transaction on a pooled connection of the running
    loop's engine (made by ``make_engine`` on the loop's first operation), with the
    execution options ``transaction_options(write)``; ``operations`` are the dialect's
    (with its search index)."""

    own_connections = False
    runs_small_operations_on_the_loop = False

    def __init__(
        self,
        make_engine: Callable[[], AsyncEngine],
        transaction_options: Callable[[bool], dict[str, Any]],
        operations: Operations[Any] | None = None,
    ) -> None:
        self.operations: Operations[Any] = operations or Operations()
        self._make_engine = make_engine
        self._options = transaction_options
        first = make_engine()
        self._spare: AsyncEngine | None = first  # for the first loop (made, not connected)
        self._engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopEngine] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    async def _engine(self) -> _LoopEngine:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._engines.get(loop)
            if entry is None or entry.disposed:
                # engines of loops that ended were disposed as they shut down; drop them,
                # so their loops (which their pools may refer to) are not kept alive
                for ended in [lp for lp in self._engines if lp.is_closed()]:
                    del self._engines[ended]
                engine, self._spare = self._spare, None
                entry = self._engines[loop] = _LoopEngine(engine or self._make_engine())
        await entry.watch()
        return entry

    async def run(self, op: Operation, fn: Op[T], args: tuple[Any, ...]) -> T:
        entry = await self._engine()
        async with entry.connection(self._options(op.write)) as conn, conn.begin():
            done: T = await conn.run_sync(_call, fn, args)
            return done

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Callable[..., Any]]:
        """A read transaction held open across calls (one committed state)."""
        entry = await self._engine()
        async with entry.connection(self._options(False)) as conn, conn.begin():

            async def step(fn: Op[T], *args: Any) -> T:
                done: T = await conn.run_sync(_call, fn, args)
                return done

            yield step

    async def on_connection(self, fn: Callable[..., T]) -> T:
        """No raw connection here: the test hook is the SQLite runner's."""
        raise StorageError("this repository runs on the SQLAlchemy engine: no raw connection")

    async def leave_checkpoints(self) -> None:
        """Nothing: this runner's engine is set up for writers like any other."""

    async def bound_wal(self) -> None:
        """Nothing (see :meth:`leave_checkpoints`)."""

    async def aclose(self) -> None:
        """Dispose of this loop's engine; those of other loops still running are disposed
        on their own loops, those of loops that ended were disposed as they shut down."""
        here = asyncio.get_running_loop()
        with self._lock:
            entries = list(self._engines.items())
            self._engines.clear()
            spare, self._spare = self._spare, None
        if spare is not None:
            await spare.dispose()
        for loop, entry in entries:
            if loop is here:
                await entry.aclose()
            elif not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # closed meanwhile
                    asyncio.run_coroutine_threadsafe(entry.dispose(), loop)

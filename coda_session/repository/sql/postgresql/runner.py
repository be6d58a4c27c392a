"""PostgreSQL's runner: the repository's operations on asyncpg connections of its own.

SQLAlchemy's pooled async engine costs several hundred microseconds per operation here
(checkout, reset, result processing), as much as the round trips themselves; this runner
keeps a small pool of plain asyncpg connections and runs each operation (the portable
ones of :mod:`..operations`, with PostgreSQL's faster equals: :mod:`.operations`) through
the greenlet bridge (:mod:`.bridge`). An operation marked
:func:`~..operations.one_statement` is one statement and runs as its own transaction (one round trip); any other
runs in a transaction: READ COMMITTED for writes, whatever the server's default (each
statement after a lock wait, a tree's included, then sees the newest committed rows),
REPEATABLE READ READ ONLY for reads of several statements (one snapshot).

Connections are made with ``connect_timeout`` and the session settings of
:func:`.settings.postgres_server_settings` (``lock_timeout`` from ``busy_timeout``). One
that fails or was closed by the server (a restart) is dropped, with every idle one, and
the next operation connects again: the manager recovers by itself once the server is back.
asyncpg's errors leave as :class:`..dialect.ServerError` (SQLSTATE kept) for the edge.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import URL

from ....config import SessionConfig
from ....errors import StorageError
from ....loopsafe import loop_shutting_down
from ..dialect import Operation, ServerError
from ..operations import ONE_STATEMENT
from .bridge import run_bridged
from .executor import PgExecutor
from .operations import PgOperations
from .search import PG_SEARCH
from .settings import postgres_server_settings

__all__ = ["PgRunner"]

T = TypeVar("T")
Op = Callable[..., T]

#: asyncpg's own failures (anything else it raises is an OSError or TimeoutError, which
#: the edge translates as they are)
_DRIVER = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


#: A connection idle longer than this (seconds) is pinged (``SELECT 1``, one round trip)
#: before it is used: a blocking manager's loop runs only during calls, and even a running
#: loop needs several passes to notice a close the server sent (a restart), so a dead
#: connection is found there, not by the caller's statement. Busy connections skip it.
_IDLE_CHECK = 1.0


def _unusable(conn: asyncpg.Connection, exc: BaseException) -> bool:
    """Whether a failed connection must be dropped: closed, out of step with its protocol,
    or told by the server that the session ended (SQLSTATE class 08, 57P0x)."""
    if conn.is_closed() or isinstance(exc, asyncpg.InternalClientError):
        return True
    if type(exc) is asyncpg.InterfaceError:
        return True
    code = getattr(exc, "sqlstate", None) or ""
    return code.startswith("08") or code in ("57P01", "57P02", "57P03")


def _call(conn: asyncpg.Connection, fn: Op[T], args: tuple[Any, ...]) -> T:
    return fn(PgExecutor(conn), *args)


class _Pool:
    """At most ``size`` connections of one event loop, handed out one operation at a time.

    asyncpg's connections belong to the loop that made them, so each loop that runs
    operations gets a pool of its own (an agent framework may run every call in its own
    ``asyncio.run``). Its idle connections are closed when the loop shuts down: a started
    async generator (the *sentinel*) is closed by ``asyncio.run``'s
    ``shutdown_asyncgens()`` before the loop closes, and closes them in its ``finally``.
    """

    def __init__(self, connect: Callable[[], Any], size: int, ping_timeout: float) -> None:
        self._connect = connect
        self._size = size
        self._ping_timeout = ping_timeout
        self._idle: list[tuple[asyncpg.Connection, float]] = []  # with when it came back
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._sentinel: AsyncGenerator[None, None] | None = None
        self.closed = False
        # made while its loop shuts down (a flush at asyncio.run's end): no sentinel can
        # close its connections, so each goes when it is released
        self._ephemeral = loop_shutting_down(asyncio.get_running_loop())

    async def _watch(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            self.closed = True
            self._sentinel = None
            await self._close_idle()

    async def acquire(self) -> asyncpg.Connection:
        if self._sentinel is None and not self._ephemeral:
            self._sentinel = self._watch()
            await self._sentinel.__anext__()
        while True:
            while self._idle:
                conn, since = self._idle.pop()
                if time.monotonic() - since > _IDLE_CHECK and not conn.is_closed():
                    try:
                        await asyncio.wait_for(conn.execute("SELECT 1"), self._ping_timeout)
                    except (OSError, TimeoutError, *_DRIVER):
                        conn.terminate()  # dead or out of step: try the next, or a new one
                    except BaseException:
                        # cancelled mid-ping: the connection's state is unknown, so it
                        # goes, and its slot with it (not kept by nobody)
                        self._open -= 1
                        conn.terminate()
                        self._wake()
                        raise
                if not conn.is_closed():
                    return conn
                self._open -= 1
            if self._open < self._size:
                self._open += 1
                try:
                    made: asyncpg.Connection = await self._connect()
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
                return made
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif not waiter.cancelled():
                    self._wake()  # handed a turn it cannot take: pass it on
                raise

    def release(self, conn: asyncpg.Connection, *, broken: bool = False) -> None:
        if broken or conn.is_closed() or self.closed or self._ephemeral:
            self._open -= 1
            if not conn.is_closed():
                conn.terminate()
            if broken:
                # the server may have restarted: the idle ones are likely dead too
                self._drop_idle()
        else:
            self._idle.append((conn, time.monotonic()))
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for conn, _ in idle:
            conn.terminate()

    def terminate(self) -> None:
        """Drop the idle connections now (from the pool's own loop)."""
        self.closed = True
        self._drop_idle()

    async def aclose(self) -> None:
        self.closed = True
        sentinel, self._sentinel = self._sentinel, None
        if sentinel is not None:
            await sentinel.aclose()  # its finally closes the idle connections
        else:
            await self._close_idle()

    async def _close_idle(self) -> None:
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for conn, _ in idle:
            try:
                await asyncio.wait_for(conn.close(), timeout=5)
            except (OSError, TimeoutError, *_DRIVER):
                conn.terminate()


class PgRunner:
    """Runs each operation on a pooled asyncpg connection (see the module's docstring)."""

    operations = PgOperations(PG_SEARCH)
    own_connections = True
    runs_small_operations_on_the_loop = False

    def __init__(self, url: URL, config: SessionConfig) -> None:
        args = url.translate_connect_args(username="user")
        self._connect_args: dict[str, Any] = {
            **args,
            **{k: v for k, v in url.query.items() if isinstance(v, str)},
            "timeout": config.connect_timeout,
            "server_settings": postgres_server_settings(config),
        }
        self._size = config.connection_pool_size
        self._ping_timeout = config.connect_timeout
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = (
            weakref.WeakKeyDictionary()
        )
        # several loops, in several threads, may use the runner at the same time
        self._pools_lock = threading.Lock()

    @property
    def _pool(self) -> _Pool:
        """The running loop's pool."""
        loop = asyncio.get_running_loop()
        with self._pools_lock:
            pool = self._pools.get(loop)
            if pool is None or pool.closed:
                # (the pool holds no reference to its loop: the loop's entry goes with it)
                pool = self._pools[loop] = _Pool(self._connect, self._size, self._ping_timeout)
            return pool

    async def _connect(self) -> asyncpg.Connection:
        try:
            conn: asyncpg.Connection = await asyncpg.connect(**self._connect_args)
        except _DRIVER as exc:
            raise ServerError(exc) from exc
        return conn

    async def open(self) -> None:
        """Connect once now, so that a wrong URL or password fails at open."""
        pool = self._pool
        conn = await pool.acquire()
        pool.release(conn)

    async def run(self, op: Operation, fn: Op[T], args: tuple[Any, ...]) -> T:
        pool = self._pool
        conn = await pool.acquire()
        broken = True
        try:
            if getattr(fn, ONE_STATEMENT, False):
                done: T = await run_bridged(_call, conn, fn, args)
            elif op.write:
                # READ COMMITTED whatever the server's default: a write that waited for a
                # lock (a tree's, a row's) then reads what the holder committed; at
                # REPEATABLE READ its snapshot would predate the wait
                async with conn.transaction(isolation="read_committed"):
                    done = await run_bridged(_call, conn, fn, args)
            else:
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    done = await run_bridged(_call, conn, fn, args)
            broken = False
            return done
        except _DRIVER as exc:
            broken = _unusable(conn, exc)
            raise ServerError(exc) from exc
        except (OSError, TimeoutError):
            raise
        except asyncio.CancelledError:
            raise  # the statement may still run on the server: the connection goes
        except Exception:
            broken = conn.is_closed()  # a failure of the operation's own (e.g. too large)
            raise
        finally:
            pool.release(conn, broken=broken)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Callable[..., Any]]:
        """A REPEATABLE READ READ ONLY transaction held open across calls."""
        pool = self._pool
        conn = await pool.acquire()
        broken = True
        try:
            try:
                transaction = conn.transaction(isolation="repeatable_read", readonly=True)
                await transaction.start()
            except _DRIVER as exc:
                raise ServerError(exc) from exc

            async def step(fn: Op[T], *args: Any) -> T:
                try:
                    done: T = await run_bridged(_call, conn, fn, args)
                except _DRIVER as exc:
                    raise ServerError(exc) from exc
                return done

            yield step
            try:
                await transaction.rollback()
            except _DRIVER as exc:
                raise ServerError(exc) from exc
            broken = False
        finally:
            pool.release(conn, broken=broken)

    async def on_connection(self, fn: Callable[..., T]) -> T:
        """No raw connection here: the test hook is the SQLite runner's."""
        raise StorageError("this repository runs on the SQLAlchemy engine: no raw connection")

    async def leave_checkpoints(self) -> None:
        """Nothing: the server checkpoints."""

    async def bound_wal(self) -> None:
        """Nothing: the server checkpoints."""

    async def aclose(self) -> None:
        """Close this loop's connections; those of other loops still running are dropped
        on their own loops, those of loops that ended were closed as they shut down."""
        here = asyncio.get_running_loop()
        with self._pools_lock:
            pools = list(self._pools.items())
            self._pools.clear()
        for loop, pool in pools:
            if loop is here:
                await pool.aclose()
            elif not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # closed meanwhile
                    loop.call_soon_threadsafe(pool.terminate)

"""The SQL repository: the protocol's methods mapped onto operations and a runner.

The operations (:mod:`.ops`) are written once; a runner decides where they run
(:class:`~.sqlite_runner.SqliteRunner` for a SQLite file, :class:`~.alchemy_runner.AlchemyRunner`
for any database through SQLAlchemy). Every runner call passes through :meth:`SqlRepository._run`,
the one edge: a failure the dialect calls retryable (SQLite busy) is run again, up to
:data:`BUSY_ATTEMPTS` times, and every driver error is translated there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from sqlalchemy.engine import URL, make_url

from ...config import SessionConfig
from ...errors import ManagerClosedError, SessionError, StorageError
from ...models import MessageRecord, SessionInfo, SessionRecord
from ..base import SaveRequest, SaveResult
from . import ops
from .alchemy_runner import AlchemyRunner
from .dialect import Dialect, dialect_for
from .engine import WRITE_OPTION, create_engine, database_url, sqlite_path
from .errors import DRIVER_ERRORS, translate
from .schema import HEAD_REVISION, current_revision, ensure_schema, migration_guard
from .sqlite_runner import SqliteRunner

if TYPE_CHECKING:
    from .pg_runner import PgRunner

__all__ = ["BUSY_ATTEMPTS", "SqlRepository", "SqlSnapshot"]

T = TypeVar("T")

logger = logging.getLogger("coda_session")

#: Attempts of one operation when the database still reports itself busy after the busy
#: timeout (each attempt waits up to busy_timeout for the lock); the transaction was
#: rolled back whole, so running it again is safe.
BUSY_ATTEMPTS = 3

# Small operations may run on the event loop's own thread (see SqliteRunner):
#: most new messages, and their bytes, a save may carry to run on the loop
LOOP_MAX_MESSAGES = 64
LOOP_MAX_BYTES = 256 * 1024
#: most messages a read may return to run on the loop
LOOP_MAX_ROWS = 200

Runner: TypeAlias = "SqliteRunner | AlchemyRunner | PgRunner"


class SqlSnapshot:
    """Reads of one committed state of the database (an export's), until the ``async
    with`` block ends."""

    global_ids = True

    def __init__(self, step: Callable[..., Any], edge: Callable[..., Any]) -> None:
        self._step = step
        self._edge = edge

    async def list_sessions(self) -> list[SessionInfo]:
        done: list[SessionInfo] = await self._edge("listing sessions", self._step, ops.list_all)
        return done

    async def load_session(
        self, *, name: str | None = None, session_id: str | None = None, tail: int = 0
    ) -> SessionRecord | None:
        done: SessionRecord | None = await self._edge(
            "loading a session", self._step, ops.load, name, session_id, tail
        )
        return done

    async def read_page(
        self,
        session_id: str,
        *,
        after_id: int,
        upto_id: int,
        limit: int,
        root_id: str | None = None,
    ) -> list[MessageRecord]:
        done: list[MessageRecord] = await self._edge(
            "reading messages",
            self._step,
            ops.read_page,
            session_id,
            after_id,
            upto_id,
            limit,
            root_id,
        )
        return done


class SqlRepository:
    """Sessions in a SQL database through SQLAlchemy 2 (async).

    On a SQLite file every operation runs as one transaction in a single trip to a
    connection's own thread (the fast path); on PostgreSQL on asyncpg connections of the
    library's own, the hot operations (append, resume, reads) as one statement each (the
    fast path too); with ``fast_path=False``, or on another database, the same operations
    run through SQLAlchemy's async engine.

    ``inline=True`` runs the SQLite operations on the event loop's own thread: only for
    a loop nobody else uses (the blocking :class:`~coda_session.SessionManager` owns one).
    Otherwise, with ``connection_pool_size >= 2``, small operations also run on the event
    loop's thread on a connection that never waits (see :mod:`.sqlite_runner`).
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
        self._dialect: Dialect = dialect_for(self._url.get_backend_name())
        has_fast = self._url.get_backend_name() in ("sqlite", "postgresql")
        self._fast_wanted = has_fast if fast_path is None else (fast_path and has_fast)
        self._inline_wanted = inline
        self._runner: Runner | None = None
        self._runner_kind = ""
        self._closed = False

    @property
    def url(self) -> URL:
        return self._url

    @property
    def uses_fast_path(self) -> bool:
        """True when operations run on connections of the library's own (SQLite's, or
        asyncpg's), not through SQLAlchemy's engine."""
        return self._runner is not None and not isinstance(self._runner, AlchemyRunner)

    @property
    def _one_statement(self) -> bool:
        # PostgreSQL's runner: the operations of ops.pg_* and single-statement reads
        return self._runner is not None and self._runner_kind == "postgresql"

    @property
    def runs_small_operations_on_the_loop(self) -> bool:
        runner = self._runner
        return isinstance(runner, SqliteRunner) and runner.runs_small_operations_on_the_loop

    # -- the edge -------------------------------------------------------------------------

    async def _edge(
        self, action: str, call: Callable[..., Any], *args: Any, name: str | None = None
    ) -> Any:
        """``await call(*args)``, retried while the dialect calls its failure retryable,
        with every driver error translated."""
        attempt = 0
        while True:
            try:
                return await call(*args)
            except SessionError:
                raise
            except DRIVER_ERRORS as exc:
                if self._closed:
                    raise ManagerClosedError("the storage was closed") from exc
                attempt += 1
                if attempt < BUSY_ATTEMPTS and self._dialect.retryable(self._dialect.classify(exc)):
                    logger.debug(
                        "%s: retrying after %s (attempt %d of %d)",
                        action,
                        exc,
                        attempt + 1,
                        BUSY_ATTEMPTS,
                    )
                    await asyncio.sleep(0.01 * attempt)
                    continue
                raise translate(exc, action, self._dialect, name=name) from exc

    async def _run(
        self,
        action: str,
        write: bool,
        fn: Callable[..., T],
        *args: Any,
        loop_pages: int | None = None,
        name: str | None = None,
        single: bool = False,
    ) -> T:
        """Run ``fn`` in one transaction. ``loop_pages`` marks a small operation that may
        run on the event loop's thread: the WAL pages it may write (0 for a read);
        ``single`` one that is a single statement (a server runs it as its own
        transaction, in one round trip)."""
        runner = self._runner if self._runner is not None else await self._open_runner()
        done: T = await self._edge(
            action, runner.run, write, fn, args, loop_pages, single, name=name
        )
        return done

    # -- opening and closing --------------------------------------------------------------

    async def open(self) -> None:
        await self._open_runner()

    async def _ready(self) -> None:
        """Open now if not yet (the choice of operation depends on the runner)."""
        if self._runner is None:
            await self._open_runner()

    async def _open_runner(self) -> Runner:
        if self._closed:
            raise ManagerClosedError("the storage was closed")
        if self._runner is not None:
            return self._runner
        await self._edge("opening the database", self._migrate)
        runner: Runner = await self._edge("opening the database", self._connect)
        if self._closed:  # closed while opening
            await runner.aclose()
            raise ManagerClosedError("the storage was closed")
        self._runner = runner
        return runner

    async def _migrate(self) -> None:
        migrator = create_engine(self._config, self._url, migrations=True)
        try:
            # a database already at the newest schema is opened without the write lock:
            # another process's long write must not keep this one from even reading
            async with migrator.connect() as pooled:
                conn = await pooled.execution_options(**{WRITE_OPTION: False})
                async with conn.begin():
                    revision = await conn.run_sync(current_revision)
            if revision == HEAD_REVISION:
                return
            async with migration_guard(), migrator.connect() as conn, conn.begin():
                await conn.run_sync(ensure_schema)
        finally:
            await migrator.dispose()

    async def _connect(self) -> Runner:
        if self._fast_wanted and self._url.get_backend_name() == "postgresql":
            from .pg_runner import PgRunner  # asyncpg is imported only for PostgreSQL

            pg = PgRunner(self._url, self._config)
            await pg.open()
            self._runner_kind = "postgresql"
            return pg
        path = sqlite_path(self._url)
        if self._fast_wanted and path is not None:
            runner = SqliteRunner(
                str(path),
                self._config.busy_timeout,
                self._config.connection_pool_size,
                inline=self._inline_wanted,
            )
            await runner.open()
            return runner
        return AlchemyRunner(lambda: create_engine(self._config, self._url))

    async def aclose(self) -> None:
        self._closed = True
        runner, self._runner = self._runner, None
        if runner is not None:
            try:
                await runner.aclose()
            except DRIVER_ERRORS as exc:
                raise translate(exc, "closing the database", self._dialect) from exc

    # -- test hook ----------------------------------------------------------------------

    async def run_on_connection(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Test hook: run ``fn`` with the SQLite writer connection, on that connection's
        own thread (the fast path only; StorageError otherwise). For tests that play a
        fault SQLite's own way (``PRAGMA max_page_count``) or read the connection's PRAGMAs;
        not part of the storage contract."""
        runner = self._runner if self._runner is not None else await self._open_runner()
        if not isinstance(runner, SqliteRunner):
            raise StorageError("this repository runs on the SQLAlchemy engine: no raw connection")
        done: T = await runner.on_connection(fn)
        return done

    # -- the protocol ---------------------------------------------------------------------

    async def create_session(
        self,
        record: SessionRecord,
        *,
        copy_from: str | None = None,
        fork_point: int | None = None,
        fork_after: int | None = None,
        tail: int = 0,
    ) -> SessionRecord:
        return await self._run(
            "creating a session",
            True,
            ops.create,
            record,
            copy_from,
            fork_point,
            fork_after,
            tail,
            # a fork inside the source counts the rows it cuts: not on the loop
            loop_pages=4 if copy_from is None else 8 if fork_point is fork_after is None else None,
            name=record.name,
        )

    async def load_session(
        self, *, name: str | None = None, session_id: str | None = None, tail: int = 0
    ) -> SessionRecord | None:
        await self._ready()
        return await self._run(
            "loading a session",
            False,
            ops.pg_load if self._one_statement else ops.load,
            name,
            session_id,
            tail,
            loop_pages=0 if tail <= LOOP_MAX_ROWS else None,
            single=self._one_statement,
        )

    async def read_messages(
        self, session_id: str, *, upto_id: int, limit: int | None, root_id: str | None = None
    ) -> list[MessageRecord]:
        small = limit is not None and limit <= LOOP_MAX_ROWS
        await self._ready()
        return await self._run(
            "reading messages",
            False,
            ops.pg_read if self._one_statement else ops.read,
            session_id,
            upto_id,
            limit,
            root_id,
            loop_pages=0 if small else None,
            single=True,
        )

    async def read_page(
        self,
        session_id: str,
        *,
        after_id: int,
        upto_id: int,
        limit: int,
        root_id: str | None = None,
    ) -> list[MessageRecord]:
        await self._ready()
        return await self._run(
            "reading messages",
            False,
            ops.pg_read_page if self._one_statement else ops.read_page,
            session_id,
            after_id,
            upto_id,
            limit,
            root_id,
            loop_pages=0 if limit <= LOOP_MAX_ROWS else None,
            single=True,
        )

    async def import_session(
        self,
        record: SessionRecord,
        batches: Iterable[Sequence[MessageRecord]],
        *,
        max_bytes: int | None = None,
        fork: tuple[str, int] | None = None,
    ) -> SessionRecord:
        return await self._run(
            "importing a session",
            True,
            ops.import_all,
            record,
            batches,
            max_bytes,
            fork,
            name=record.name,
        )

    async def save(self, request: SaveRequest) -> SaveResult:
        await self._ready()
        if (
            self._one_statement
            and request.messages
            and request.truncation is None
            and not request.metadata_patch
            and not request.drop_newest
        ):
            return await self._run("saving a session", True, ops.pg_append, request, single=True)
        return await self._run(
            "saving a session", True, ops.save, request, loop_pages=_save_pages(request)
        )

    async def delete_session(self, session_id: str) -> bool:
        return await self._run("deleting a session", True, ops.delete, session_id)

    async def list_sessions(self) -> list[SessionInfo]:
        return await self._run("listing sessions", False, ops.list_all, single=True)

    async def text_length(
        self, session_id: str, *, upto_id: int, limit: int | None, root_id: str | None = None
    ) -> tuple[int, int]:
        await self._ready()
        return await self._run(
            "counting tokens",
            False,
            ops.pg_text_length if self._one_statement else ops.text_length,
            session_id,
            upto_id,
            limit,
            root_id,
            single=True,
        )

    async def list_tree(self, root_id: str) -> list[SessionInfo]:
        return await self._run("listing a tree", False, ops.tree, root_id, single=True)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[SqlSnapshot]:
        """Reads of one committed state (a read transaction spanning them), for exports."""
        runner = self._runner if self._runner is not None else await self._open_runner()
        async with contextlib.AsyncExitStack() as stack:
            step = await self._edge(
                "reading a snapshot", stack.enter_async_context, runner.snapshot()
            )
            yield SqlSnapshot(step, self._edge)


def _save_pages(request: SaveRequest) -> int | None:
    """The WAL pages a save may write if it is small enough for the loop, else None."""
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

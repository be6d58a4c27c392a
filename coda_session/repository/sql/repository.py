"""The SQL repository: the protocol's methods mapped onto operations and a runner.

The database's dialect (:mod:`.dialect`, picked by :func:`.registry.dialect_for`) gives the
runner, which decides where operations run and which operations it runs (the portable
ones of :mod:`.operations`, or a dialect's faster equals), the cost model that says which
calls are small, and the error rules. The repository never asks which database it is on.
Every runner call passes through :meth:`SqlRepository._edge`, the one edge: a failure the
dialect calls retryable (SQLite busy) is run again, up to :data:`BUSY_ATTEMPTS` times, and
every driver error is translated there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy.engine import URL, make_url

from ...config import SessionConfig
from ...errors import ManagerClosedError, SessionError, StorageError
from ...models import MessageRecord, SessionInfo, SessionRecord
from ...search.analysis import INDEX_VERSION
from ..base import SaveRequest, SaveResult
from ..capabilities import SessionFiltering, Snapshots
from ..filters import SessionFilter, SessionPage
from ..protocol import Repository
from ..searching import Candidates, SearchIndexReport, SearchRequest
from .dialect import WRITE_OPTION, Dialect, Operation, Runner
from .engine import create_engine, database_url
from .errors import DRIVER_ERRORS, translate
from .filters import find_page
from .indexer import BackgroundIndexer, in_own_thread
from .operations import Operations
from .registry import dialect_for
from .schema import HEAD_REVISION, current_revision, ensure_schema, migration_guard
from .search import BULK_ROWS, DEFER_UNDER, bodies_of, entries_of

__all__ = ["BUSY_ATTEMPTS", "SqlRepository", "SqlSnapshot"]

T = TypeVar("T")

logger = logging.getLogger("coda_session")

#: Attempts of one operation when the database still reports itself busy after the busy
#: timeout (each attempt waits up to busy_timeout for the lock); the transaction was
#: rolled back whole, so running it again is safe.
BUSY_ATTEMPTS = 3

# the calls whose spec never varies
_APPEND = Operation("saving a session", write=True)
_DELETE = Operation("deleting a session", write=True)
_TEXT_LENGTH = Operation("counting tokens")
_LIST = Operation("listing sessions")
_FIND = Operation("listing sessions")
_LIST_TREE = Operation("listing a tree")
_READ_SNAPSHOT = Operation("reading a snapshot")
_SEARCH = Operation("searching messages")
_CHECK_INDEX = Operation("checking the search index")
_INDEX_VERSION = Operation("reading the search index's version", loop_pages=0)
_RESET_INDEX = Operation("resetting the search index", write=True)
_INDEX_BATCH = Operation("indexing messages for search", write=True)
_INDEX_STEP = Operation("indexing messages for search", write=True)
_READ_PENDING = Operation("reading messages to index for search")


class SqlSnapshot:
    """Reads of one committed state of the database (an export's), until the ``async
    with`` block ends."""

    global_ids = True

    def __init__(
        self, step: Callable[..., Any], edge: Callable[..., Any], ops: Operations[Any]
    ) -> None:
        self._step = step
        self._edge = edge
        self._ops = ops

    async def list_sessions(self) -> list[SessionInfo]:
        done: list[SessionInfo] = await self._edge(
            "listing sessions", self._step, self._ops.list_all
        )
        return done

    async def load_session(
        self, *, name: str | None = None, session_id: str | None = None, tail: int = 0
    ) -> SessionRecord | None:
        done: SessionRecord | None = await self._edge(
            "loading a session", self._step, self._ops.load, name, session_id, tail
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
            self._ops.read_page,
            session_id,
            after_id,
            upto_id,
            limit,
            root_id,
        )
        return done


class SqlRepository(Repository, Snapshots, SessionFiltering):
    """Sessions in a SQL database through SQLAlchemy 2 (async).

    On a SQLite file every operation runs as one transaction in a single trip to a
    connection's own thread (the fast path); on PostgreSQL on asyncpg connections of the
    library's own, the hot operations (append, resume, reads) as one statement each (the
    fast path too); with ``fast_path=False``, or on another database, the same operations
    run through SQLAlchemy's async engine.

    ``inline=True`` runs the SQLite operations on the event loop's own thread: only for
    a loop nobody else uses (the blocking :class:`~coda_session.SessionManager` owns one).
    Otherwise, with ``connection_pool_size >= 2``, small operations also run on the event
    loop's thread on a connection that never waits (see :mod:`.sqlite.runner`).

    ``background=True`` makes the repository a background indexer's connection (see
    :mod:`.indexer`): it never checkpoints the WAL, never re-indexes on opening and starts
    no indexer of its own.
    """

    def __init__(
        self,
        config: SessionConfig | None = None,
        *,
        url: str | URL | None = None,
        fast_path: bool | None = None,
        inline: bool = False,
        background: bool = False,
    ) -> None:
        self._config = config or SessionConfig()
        if url is None:
            self._url = database_url(self._config)
        else:
            self._url = url if isinstance(url, URL) else make_url(url)
        self._dialect: Dialect = dialect_for(self._url.get_backend_name())
        self._costs = self._dialect.costs
        self._fast_path = fast_path
        self._inline_wanted = inline
        self._background = background
        self._runner: Runner | None = None
        self._closed = False
        self._indexer: BackgroundIndexer | None = None

    @property
    def url(self) -> URL:
        return self._url

    @property
    def uses_fast_path(self) -> bool:
        """True when operations run on connections of the library's own (SQLite's, or
        asyncpg's), not through SQLAlchemy's engine."""
        return self._runner is not None and self._runner.own_connections

    @property
    def runs_small_operations_on_the_loop(self) -> bool:
        runner = self._runner
        return runner is not None and runner.runs_small_operations_on_the_loop

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

    async def _run(self, runner: Runner, op: Operation, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` (an operation of ``runner``'s) in one transaction, as ``op`` says."""
        done: T = await self._edge(op.action, runner.run, op, fn, args, name=op.name)
        return done

    # -- opening and closing --------------------------------------------------------------

    async def open(self) -> None:
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
        if self._background:
            await self._edge("opening the database", runner.leave_checkpoints)
            return runner
        await self._index_outdated(runner)
        if (
            self._config.index_in_background
            and runner.operations.search is not None
            and self._dialect.shares_connections(self._url)
        ):
            self._indexer = BackgroundIndexer(self._index_worker)
        return runner

    def _index_worker(self) -> SqlRepository:
        """The background indexer's own connection to the store: a repository of its
        own, opened on the indexer's thread and loop (see :mod:`.indexer`)."""
        return SqlRepository(
            self._config, url=self._url, fast_path=self._fast_path, inline=True, background=True
        )

    async def index_step(self, limit: int) -> int:
        """Index up to ``limit`` pending messages and remove a bounded batch of the
        entries deleted messages left, in one transaction; returns how much it did (0:
        nothing left). What a background indexer runs (:mod:`.indexer`)."""
        runner = self._runner or await self._open_runner()
        ops = runner.operations
        # the terms are computed between a read and a short write transaction: a save
        # waits for the write lock the time of an FTS5 insert, and no snapshot is held
        # meanwhile (it would keep the WAL from starting over)
        rows = await self._run(runner, _READ_PENDING, ops.pending_rows, limit)
        entries = entries_of(rows)
        done: int = await self._run(runner, _INDEX_STEP, ops.index_entries, rows, entries)
        if not done:
            await self._edge("checkpointing the database", runner.bound_wal)
        return done

    async def settle_search_index(self) -> None:
        """Wait until the messages this repository's writes left pending are indexed by
        its background indexer (at once when there is none). Searches never need it (they
        evaluate pending messages in Python)."""
        indexer = self._indexer
        if indexer is not None:
            await in_own_thread(indexer.settle)

    def _written(self, rows: int, *, deleted: bool = False) -> None:
        """Tell the background indexer (if any) what a committed write left to index."""
        if self._indexer is not None:
            self._indexer.written(rows, deleted=deleted)

    async def _index_outdated(self, runner: Runner) -> None:
        """Index every message again when the stored index was built with other rules
        than this library's (or never: a database just upgraded to it). A store that
        cannot be written now (read-only, busy) still opens: its searches evaluate the
        rows not indexed yet in Python, and a later open or write indexes them."""
        ops = runner.operations
        if ops.search is None:
            return
        try:
            version = await self._run(runner, _INDEX_VERSION, ops.index_version)
            if version != INDEX_VERSION:
                await self._reindex(runner, force=False)
        except StorageError as exc:
            logger.warning("the search index was not brought up to date: %s", exc)

    async def _reindex(self, runner: Runner, *, force: bool) -> int:
        """Empty the index (when ``force``, or its version is not the library's: another
        process may have done it meanwhile) and index every pending row, in batches of
        their own transactions (writers and readers go on between them)."""
        ops = runner.operations
        await self._run(runner, _RESET_INDEX, ops.reset_index, force)
        done = 0
        while True:
            n = await self._run(runner, _INDEX_BATCH, ops.index_batch, BULK_ROWS)
            done += n
            if n < BULK_ROWS:
                return done

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
        return await self._dialect.open_runner(
            self._config,
            self._url,
            lambda: create_engine(self._config, self._url),
            fast_path=self._fast_path,
            inline=self._inline_wanted,
        )

    async def aclose(self) -> None:
        indexer, self._indexer = self._indexer, None
        if indexer is not None:
            # what the writes left pending is indexed before the store closes (a run
            # interrupted here leaves rows pending: found by searches, indexed later)
            await in_own_thread(indexer.close)
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
        runner = self._runner or await self._open_runner()
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
        runner = self._runner or await self._open_runner()
        op = Operation(
            "creating a session",
            write=True,
            loop_pages=self._costs.create(copy_from, fork_point, fork_after),
            name=record.name,
        )
        return await self._run(
            runner,
            op,
            runner.operations.create,
            record,
            copy_from,
            fork_point,
            fork_after,
            tail,
        )

    async def load_session(
        self, *, name: str | None = None, session_id: str | None = None, tail: int = 0
    ) -> SessionRecord | None:
        runner = self._runner or await self._open_runner()
        op = Operation("loading a session", loop_pages=self._costs.read(tail))
        return await self._run(runner, op, runner.operations.load, name, session_id, tail)

    async def read_messages(
        self, session_id: str, *, upto_id: int, limit: int | None, root_id: str | None = None
    ) -> list[MessageRecord]:
        runner = self._runner or await self._open_runner()
        op = Operation("reading messages", loop_pages=self._costs.read(limit))
        return await self._run(
            runner, op, runner.operations.read, session_id, upto_id, limit, root_id
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
        runner = self._runner or await self._open_runner()
        op = Operation("reading messages", loop_pages=self._costs.read(limit))
        return await self._run(
            runner,
            op,
            runner.operations.read_page,
            session_id,
            after_id,
            upto_id,
            limit,
            root_id,
        )

    async def import_session(
        self,
        record: SessionRecord,
        batches: Iterable[Sequence[MessageRecord]],
        *,
        max_bytes: int | None = None,
        fork: tuple[str, int] | None = None,
    ) -> SessionRecord:
        runner = self._runner or await self._open_runner()
        op = Operation("importing a session", write=True, name=record.name)
        # an import indexes its messages in its own transaction even with a background
        # indexer: a search right after an import of millions of messages would otherwise
        # evaluate them all in Python until the indexer caught up
        return await self._run(
            runner, op, runner.operations.import_all, record, batches, max_bytes, fork
        )

    async def save(self, request: SaveRequest) -> SaveResult:
        runner = self._runner or await self._open_runner()
        ops = runner.operations
        deferred = self._indexer is not None
        if ops.appends_alone(request):
            done: SaveResult = await self._run(runner, _APPEND, ops.append, request, deferred)
        else:
            # the new messages' index terms, computed before the transaction takes the lock
            bodies = None
            if not deferred and ops.search is not None and len(request.messages) >= DEFER_UNDER:
                bodies = bodies_of(request.messages)
            op = Operation("saving a session", write=True, loop_pages=self._costs.save(request))
            done = await self._run(runner, op, ops.save, request, bodies, deferred)
        self._written(
            len(done.ids),
            deleted=request.truncation is not None or bool(request.drop_newest),
        )
        return done

    async def delete_session(self, session_id: str) -> bool:
        runner = self._runner or await self._open_runner()
        deferred = self._indexer is not None
        done: bool = await self._run(
            runner, _DELETE, runner.operations.delete, session_id, None, deferred
        )
        self._written(0, deleted=done)
        return done

    async def list_sessions(self) -> list[SessionInfo]:
        runner = self._runner or await self._open_runner()
        return await self._run(runner, _LIST, runner.operations.list_all)

    async def find_sessions(self, flt: SessionFilter) -> SessionPage:
        """A filtered, ordered page of sessions in one query (see sql/filters.py)."""
        runner = self._runner or await self._open_runner()
        return await self._run(runner, _FIND, find_page, flt)

    async def text_length(
        self, session_id: str, *, upto_id: int, limit: int | None, root_id: str | None = None
    ) -> tuple[int, int]:
        runner = self._runner or await self._open_runner()
        return await self._run(
            runner,
            _TEXT_LENGTH,
            runner.operations.text_length,
            session_id,
            upto_id,
            limit,
            root_id,
        )

    async def list_tree(self, root_id: str) -> list[SessionInfo]:
        runner = self._runner or await self._open_runner()
        return await self._run(runner, _LIST_TREE, runner.operations.tree, root_id)

    # -- search (the Searching and IndexMaintenance capabilities) ----------------------------

    async def search_messages(self, request: SearchRequest) -> Candidates:
        """The newest messages matching ``request`` (at most its window), newest first,
        looked up in the database's full-text index in one read transaction; rows not
        indexed yet (another program's) are evaluated in Python, so they are found too."""
        runner = self._runner or await self._open_runner()
        return await self._run(runner, _SEARCH, runner.operations.search_messages, request)

    async def rebuild_search_index(self) -> int:
        """Index every stored message again, in bulk (batches of their own transactions;
        searches stay complete meanwhile); returns how many messages were indexed."""
        runner = self._runner or await self._open_runner()
        if runner.operations.search is None:
            return 0
        return await self._reindex(runner, force=True)

    async def check_search_index(self) -> SearchIndexReport:
        """Compare the index with the stored messages (recomputing every message's terms),
        changing neither: see :class:`~coda_session.repository.searching.SearchIndexReport`."""
        runner = self._runner or await self._open_runner()
        return await self._run(runner, _CHECK_INDEX, runner.operations.check_index)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[SqlSnapshot]:
        """Reads of one committed state (a read transaction spanning them), for exports."""
        runner = self._runner or await self._open_runner()
        async with contextlib.AsyncExitStack() as stack:
            step = await self._edge(
                _READ_SNAPSHOT.action, stack.enter_async_context, runner.snapshot()
            )
            yield SqlSnapshot(step, self._edge, runner.operations)

"""The dialect seam: what the repository asks of the database it runs on.

Everything specific to one database lives in its package (:mod:`.sqlite`,
:mod:`.postgresql`; :mod:`.alchemy` is the generic SQLAlchemy path both of them can fall
back on, and the dialect of any other database). A :class:`Dialect` object is how the
repository gets its runner (and with it the operations that runner runs), its error
rules and its engine's set-up; the repository never asks which database it is on.
:func:`.registry.dialect_for` picks the dialect for a URL.

This module is the interface only: it imports no dialect package.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ...config import SessionConfig
from .search import IndexRow, SearchScope, SearchStatements

if TYPE_CHECKING:
    import sqlite3
    from datetime import datetime

    from ..base import SaveRequest
    from .operations import Operations

__all__ = [
    "WRITE_OPTION",
    "Costs",
    "Dialect",
    "Failure",
    "IndexRow",
    "NoCosts",
    "Operation",
    "Runner",
    "SearchScope",
    "SearchStatements",
    "ServerError",
    "driver_error",
]

T = TypeVar("T")

#: The execution option telling an engine whether a transaction writes (SQLite's begin
#: hook takes the write lock up front for one that does)
WRITE_OPTION = "coda_session_write"


class Failure(enum.Enum):
    """What went wrong, as far as the library's behaviour is concerned."""

    BUSY = "the database is locked by another connection and the busy timeout ran out"
    UNIQUE_NAME = "a session of that name exists already"
    FULL = "the database or disk is full"
    READ_ONLY = "the database is read-only"
    CORRUPT = (
        "the database file is corrupt or not a database: restore it from a backup (or an "
        "export), or check that the configuration names the right file"
    )
    CANT_OPEN = (
        "cannot open the database file: it is missing or its directory is read-only "
        "or not accessible"
    )
    INTERRUPTED = "the operation was interrupted"
    IO = "a disk I/O error"
    CONFLICT = "the transaction conflicted with another one (serialization failure or deadlock)"
    CONNECTION = "the connection to the database server failed or was lost"
    AUTH = "the database server refused the credentials"
    NO_DATABASE = "the database does not exist on the server"
    TIMEOUT = "the database server did not answer in time"
    OTHER = "the database failed"


class ServerError(Exception):
    """A database server driver's error (asyncpg's), as the library's own runner raises it:
    the original is the ``__cause__``; ``sqlstate`` and ``constraint_name`` are copied."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error) or type(error).__name__)
        self.sqlstate: str | None = getattr(error, "sqlstate", None)
        self.constraint_name: str | None = getattr(error, "constraint_name", None)


def driver_error(exc: BaseException) -> BaseException:
    """The DBAPI error behind a SQLAlchemy wrapper (``exc.orig``), or ``exc`` itself."""
    orig = getattr(exc, "orig", None)
    return orig if isinstance(orig, BaseException) else exc


@dataclass(frozen=True, slots=True)
class Operation:
    """How one call of an operation runs: ``action`` names it in errors and logs,
    ``write`` takes the write lock, ``loop_pages`` marks a small operation that may run
    on the event loop's thread (the WAL pages it may write, 0 for a read; None: not
    small), ``name`` is the session name a unique violation reports. Whether the
    operation is one statement (a server runs it as its own transaction) is the
    operation's own mark (:func:`.operations.one_statement`), not the caller's."""

    action: str
    write: bool = False
    loop_pages: int | None = None
    name: str | None = None


class Runner(Protocol):
    """Where operations run: each call is one transaction on a connection of the runner's."""

    @property
    def operations(self) -> Operations[Any]:
        """The operations this runner's executor runs (a dialect's faster ones, or the
        portable ones)."""
        ...

    @property
    def own_connections(self) -> bool:
        """True on connections of the library's own, False through SQLAlchemy's engine."""
        ...

    @property
    def runs_small_operations_on_the_loop(self) -> bool: ...

    async def run(self, op: Operation, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        """``fn(executor, *args)`` in one transaction; driver errors raised as they are."""
        ...

    def snapshot(self) -> AbstractAsyncContextManager[Callable[..., Any]]:
        """A read transaction held open across calls: yields ``step(fn, *args)``."""
        ...

    async def on_connection(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Test hook: ``fn`` with a raw ``sqlite3`` connection (StorageError elsewhere)."""
        ...

    async def leave_checkpoints(self) -> None:
        """Never checkpoint the WAL after this runner's own commits: a background
        indexer's, beside a manager's writers, whose connections checkpoint it (SQLite;
        nothing elsewhere)."""
        ...

    async def bound_wal(self) -> None:
        """Between a background indexer's runs: when the WAL has grown past a bound (its
        writes happened beside the checkpoints of a manager's writers, which then could
        not start the WAL over), checkpoint it whole so the next write starts it over
        (SQLite; nothing elsewhere)."""
        ...

    async def aclose(self) -> None: ...


class Costs(Protocol):
    """Which operations are small enough to run on the event loop's thread, and the WAL
    pages each may write there (None: not small). Only a runner that runs operations on
    the loop reads the figures; the other dialects answer None."""

    def read(self, rows: int | None) -> int | None:
        """A read of at most ``rows`` messages (None: unbounded)."""
        ...

    def create(
        self, copy_from: str | None, fork_point: int | None, fork_after: int | None
    ) -> int | None:
        """A new session, or a fork of ``copy_from``."""
        ...

    def save(self, request: SaveRequest) -> int | None:
        """A save."""
        ...


class Dialect(Protocol):
    """One database: its error rules, its engine's set-up and its runner."""

    name: str
    #: the database's full-text index; None: search evaluates every message in Python
    search: SearchStatements | None
    #: whether a column may hold a value of any type (SQLite's dynamic typing): the
    #: adoption of a database the library did not write then checks each stored type
    any_type_columns: bool

    @property
    def costs(self) -> Costs:
        """Which calls are small enough for the event loop's thread (see :class:`Costs`)."""
        ...

    def classify(self, exc: BaseException) -> Failure:
        """What a driver (or SQLAlchemy-wrapped driver) error means."""
        ...

    def retryable(self, failure: Failure) -> bool:
        """Whether a transaction that failed so, rolled back whole, may simply run again."""
        ...

    def database_file(self, url: URL) -> Path | None:
        """The file behind ``url``, or None for a database that is not one file."""
        ...

    def shares_connections(self, url: URL) -> bool:
        """Whether another connection to ``url`` opens the same database (not so for an
        in-memory SQLite database): a background indexer needs one of its own."""
        ...

    def engine_options(
        self, config: SessionConfig, url: URL, *, migrations: bool
    ) -> dict[str, Any]:
        """``create_async_engine`` options (a file database's file is prepared here)."""
        ...

    def prepare_engine(self, engine: AsyncEngine) -> None:
        """Hooks on a new engine (how its transactions begin)."""
        ...

    def hold_migration_lock(self, conn: Connection, key: int) -> None:
        """Wait for and hold, until the transaction ends, the lock ``key`` migrations
        take (nothing where the write lock already runs them one at a time)."""
        ...

    def stored_timestamp(self, value: datetime) -> Any:
        """A timestamp as the library stores it on this database."""
        ...

    def byte_length(self, expr: str, *, text: bool) -> str:
        """SQL for the size in bytes of ``expr``: its UTF-8 text when ``text``, else its
        binary value (for the one-time repairs written as SQL text)."""
        ...

    async def open_runner(
        self,
        config: SessionConfig,
        url: URL,
        make_engine: Callable[[], AsyncEngine],
        *,
        fast_path: bool | None,
        inline: bool,
    ) -> Runner:
        """The runner for ``url``: on connections of the library's own when the dialect has
        a fast path and ``fast_path`` is not False, else through ``make_engine``'s engine."""
        ...


def no_cost(*_args: Any) -> None:
    """The cost of every operation for a runner that runs nothing on the loop: none."""
    return None


class NoCosts:
    """:class:`Costs` of a dialect whose runners never run on the event loop's thread."""

    read = create = save = staticmethod(no_cost)

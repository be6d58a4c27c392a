"""SQLite's dialect: its error rules, its engine's set-up, and its runner."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from ....config import SessionConfig
from ....timeutil import to_sqlite_timestamp
from ..alchemy import AlchemyDialect
from ..dialect import WRITE_OPTION, Failure, Runner, SearchStatements
from .connect import connect_aiosqlite, prepare_sqlite_file
from .errors import classify
from .runner import SqliteCosts, SqliteRunner
from .search import SQLITE_SEARCH

__all__ = ["SQLITE", "SqliteDialect"]


class SqliteDialect(AlchemyDialect):
    """SQLite: errors by ``sqlite3.Error.sqlite_errorcode``; a file runs on connections of
    the library's own (:class:`~.runner.SqliteRunner`), anything else through SQLAlchemy."""

    name = "sqlite"
    costs = SqliteCosts()
    any_type_columns = True
    search: SearchStatements | None = SQLITE_SEARCH

    def classify(self, exc: BaseException) -> Failure:
        return classify(exc)

    def retryable(self, failure: Failure) -> bool:
        return failure is Failure.BUSY

    def database_file(self, url: URL) -> Path | None:
        """The file behind the URL, or None for an in-memory database."""
        db = url.database or ""
        if db in ("", ":memory:") or db.startswith("file:"):
            return None
        return Path(db)

    def shares_connections(self, url: URL) -> bool:
        return self.database_file(url) is not None

    def stored_timestamp(self, value: datetime) -> Any:
        return to_sqlite_timestamp(value)

    def byte_length(self, expr: str, *, text: bool) -> str:
        return f"length(CAST({expr} AS BLOB))" if text else f"length({expr})"

    def engine_options(
        self, config: SessionConfig, url: URL, *, migrations: bool
    ) -> dict[str, Any]:
        """A file is prepared (see :func:`.connect.prepare_sqlite_file`) and its connections
        made with the library's PRAGMAs; ``migrations=True`` turns foreign keys off (see
        :func:`..engine.create_engine`)."""
        path = self.database_file(url)
        if path is None:
            return {}
        prepare_sqlite_file(path)
        target = str(path)

        async def creator() -> Any:
            return await connect_aiosqlite(target, config.busy_timeout, not migrations)

        return {"async_creator": creator, "pool_size": config.connection_pool_size}

    def prepare_engine(self, engine: AsyncEngine) -> None:
        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Any) -> None:
            # take the write lock up front: a deferred transaction that later writes can
            # fail with SQLITE_BUSY instead of waiting (read-to-write upgrade deadlock)
            write = conn.get_execution_options().get(WRITE_OPTION, True)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    async def fast_runner(self, config: SessionConfig, url: URL, *, inline: bool) -> Runner | None:
        path = self.database_file(url)
        if path is None:
            return None
        runner = SqliteRunner(
            str(path), config.busy_timeout, config.connection_pool_size, inline=inline
        )
        await runner.open()
        return runner


SQLITE = SqliteDialect()

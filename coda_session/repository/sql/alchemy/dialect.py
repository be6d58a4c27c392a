"""The generic dialect, and the base every dialect builds on: what a database does not
do its own way, it does through SQLAlchemy alone."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ....config import SessionConfig
from ..dialect import WRITE_OPTION, Costs, Failure, NoCosts, Runner, SearchStatements
from ..operations import Operations
from .runner import AlchemyRunner

__all__ = ["AlchemyDialect", "GenericDialect"]


class AlchemyDialect:
    """A database through SQLAlchemy's engine, with no error table (nothing is retried,
    every failure is a plain StorageError) and no runner of its own. A dialect package
    subclasses it and overrides what its database does its own way."""

    name: str
    costs: Costs = NoCosts()
    any_type_columns = False
    #: no full-text index of its own: search evaluates every message in Python
    search: SearchStatements | None = None

    def classify(self, exc: BaseException) -> Failure:
        return Failure.OTHER

    def retryable(self, failure: Failure) -> bool:
        return False

    def database_file(self, url: URL) -> Path | None:
        return None

    def shares_connections(self, url: URL) -> bool:
        return True  # a database server

    def engine_options(
        self, config: SessionConfig, url: URL, *, migrations: bool
    ) -> dict[str, Any]:
        return {"pool_size": config.connection_pool_size}

    def prepare_engine(self, engine: AsyncEngine) -> None:
        return None

    def hold_migration_lock(self, conn: Connection, key: int) -> None:
        return None

    def stored_timestamp(self, value: datetime) -> Any:
        return value

    def byte_length(self, expr: str, *, text: bool) -> str:
        return f"octet_length(CAST({expr} AS TEXT))" if text else f"octet_length({expr})"

    def transaction_options(self, write: bool) -> dict[str, Any]:
        """The execution options of a transaction through the engine: whether it writes
        (SQLite's begin hook takes the write lock up front for one that does)."""
        return {WRITE_OPTION: write}

    async def fast_runner(self, config: SessionConfig, url: URL, *, inline: bool) -> Runner | None:
        """A runner on connections of the dialect's own, opened, or None (here: none)."""
        return None

    async def open_runner(
        self,
        config: SessionConfig,
        url: URL,
        make_engine: Callable[[], AsyncEngine],
        *,
        fast_path: bool | None,
        inline: bool,
    ) -> Runner:
        if fast_path is not False:
            runner = await self.fast_runner(config, url, inline=inline)
            if runner is not None:
                return runner
        return AlchemyRunner(make_engine, self.transaction_options, Operations(self.search))


class GenericDialect(AlchemyDialect):
    """A database the library has no package for."""

    def __init__(self, name: str) -> None:
        self.name = name

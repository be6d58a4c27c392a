"""The generic runner: the repository's operations through SQLAlchemy's async engine.

Used for every database the SQLite fast path does not serve (and, in the test suite, for
SQLite itself as the ``sqlite-core`` backend, so this path is proven on every run).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from .engine import WRITE_OPTION
from .executors import AlchemyExecutor

__all__ = ["AlchemyRunner"]

T = TypeVar("T")
Op = Callable[..., T]


def _call(conn: Connection, fn: Op[T], args: tuple[Any, ...]) -> T:
    return fn(AlchemyExecutor(conn), *args)


class AlchemyRunner:
    """Runs each operation in one transaction on a pooled connection."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def run(
        self,
        write: bool,
        fn: Op[T],
        args: tuple[Any, ...],
        loop_pages: int | None,
        single: bool = False,
    ) -> T:
        async with self._engine.connect() as pooled:
            conn = await pooled.execution_options(**self._options(write))
            async with conn.begin():
                done: T = await conn.run_sync(_call, fn, args)
                return done

    def _options(self, write: bool) -> dict[str, Any]:
        # a server database reads several statements in one snapshot (REPEATABLE READ, read
        # only), as the library's own PostgreSQL runner does; SQLite's read transaction is one
        options: dict[str, Any] = {WRITE_OPTION: write}
        if self._engine.dialect.name == "postgresql":
            if write:
                # whatever the server's default: a write that waited for a lock (a tree's,
                # a row's) then reads what the holder committed, as on the own runner
                options.update(isolation_level="READ COMMITTED")
            else:
                options.update(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        return options

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Callable[..., Any]]:
        """A read transaction held open across calls (one committed state)."""
        async with self._engine.connect() as pooled:
            conn = await pooled.execution_options(**self._options(False))
            async with conn.begin():

                async def step(fn: Op[T], *args: Any) -> T:
                    done: T = await conn.run_sync(_call, fn, args)
                    return done

                yield step

    async def aclose(self) -> None:
        await self._engine.dispose()

"""PostgreSQL's executor: the operations' statements on an asyncpg connection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.base import PGDialect

from ....models import MessageRecord
from ..executors import Compiled, Compiler, Params
from . import statements as pg_sql
from .bridge import wait

__all__ = ["PgConnection", "PgExecutor", "message_arrays"]


class PgConnection(Protocol):
    """What :class:`PgExecutor` uses of an asyncpg connection."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def execute(self, query: str, *args: Any) -> str: ...


class PgExecutor:
    """Runs the statements on an asyncpg connection, inside :func:`.bridge.run_bridged`.

    Statements are compiled for PostgreSQL with ``$n`` parameters and no casts (the
    server infers each parameter's type when asyncpg prepares the statement, once per
    connection); the registered constants once per process, as on SQLite.
    """

    _compiler = Compiler(PGDialect(paramstyle="numeric_dollar"))  # type: ignore[no-untyped-call]

    def __init__(self, conn: PgConnection) -> None:
        self._conn = conn

    @classmethod
    def _sql(cls, stmt: sa.Executable) -> Compiled:
        return cls._compiler.compile(stmt)

    def _args(self, stmt: sa.Executable, params: Params) -> tuple[str, list[Any]]:
        sql, names, defaults = self._sql(stmt)
        return sql, [params[n] if n in params else defaults[n] for n in names]

    def fetch(self, stmt: pg_sql.Prepared, params: Params) -> Sequence[Sequence[Any]]:
        """A PostgreSQL statement of :mod:`.statements`, its binds given by name."""
        return self._fetch(stmt.sql, stmt.args(params))

    def _fetch(self, sql: str, args: Sequence[Any]) -> Sequence[Sequence[Any]]:
        rows: Sequence[Sequence[Any]] = wait(self._conn.fetch(sql, *args))
        return rows

    def rows(self, stmt: sa.Executable, params: Params) -> Sequence[Sequence[Any]]:
        sql, args = self._args(stmt, params)
        return self._fetch(sql, args)

    def run(self, stmt: sa.Executable, params: Params) -> int:
        sql, args = self._args(stmt, params)
        status: str = wait(self._conn.execute(sql, *args))
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    def insert_messages(
        self, session_id: str, root_id: str, records: Sequence[MessageRecord]
    ) -> list[int]:
        params = {"session_id": session_id, "root_id": root_id, **message_arrays(records)}
        found = self.fetch(pg_sql.INSERT_MESSAGES, params)
        ids = found[0][0] if found else None
        return [int(i) for i in ids or ()]


def message_arrays(records: Sequence[MessageRecord]) -> dict[str, list[Any]]:
    """The records as one array per column, named as :data:`.statements.INSERT_MESSAGES`'
    binds."""
    return {
        "roles": [r.role for r in records],
        "contents": [r.content for r in records],
        "timestamps": [r.timestamp for r in records],
        "extras": [r.extra for r in records],
        "packed": [r.zcontent for r in records],
        "sizes": [r.size for r in records],
        "chars": [r.chars for r in records],
    }

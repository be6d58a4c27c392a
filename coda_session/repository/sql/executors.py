"""How an operation's statements reach the database: two executors, one interface.

Operations (:mod:`.ops`) are written once against :class:`Executor`. :class:`RawExecutor`
runs them on a stdlib ``sqlite3`` connection (SQLite's fast path, compiled once);
:class:`AlchemyExecutor` through a SQLAlchemy connection (any database).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import Connection

from ...models import MessageRecord
from ...timeutil import to_sqlite_timestamp
from . import pg_sql
from . import statements as q
from .bridge import wait

__all__ = [
    "AlchemyExecutor",
    "Executor",
    "Params",
    "PgConnection",
    "PgExecutor",
    "RawExecutor",
    "message_arrays",
    "next_places",
]

Params = Mapping[str, Any]


class Executor(Protocol):
    def rows(self, stmt: sa.Executable, params: Params) -> Sequence[Sequence[Any]]: ...

    def run(self, stmt: sa.Executable, params: Params) -> int: ...

    def insert_messages(
        self, session_id: str, root_id: str, records: Sequence[MessageRecord]
    ) -> list[int]: ...


_INSERT_ORDER = (
    "session_id",
    "role",
    "content",
    "timestamp",
    "metadata",
    "content_zlib",
    "size_bytes",
    "char_count",
    "root_id",
    "ord",
    "cum_size",
)
_Compiled = tuple[str, tuple[str, ...], dict[str, Any]]


class _Compiler:
    """Statements compiled for one dialect with positional parameters: (SQL, parameter
    names in order, defaults). The registered constants (:func:`.statements.is_constant`)
    are compiled once per process; anything else per call."""

    def __init__(self, dialect: Any) -> None:
        self._dialect = dialect
        self._cache: dict[int, _Compiled] = {}

    def compile(self, stmt: sa.Executable) -> _Compiled:
        key = id(stmt)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        compiled = stmt.compile(dialect=self._dialect)  # type: ignore[attr-defined]
        made = (str(compiled), tuple(compiled.positiontup or ()), dict(compiled.params))
        if q.is_constant(stmt):  # lives as long as the process: its id is never reused
            self._cache[key] = made
        return made


def next_places(
    last: Sequence[Sequence[Any]], records: Sequence[MessageRecord]
) -> list[tuple[int | None, int | None]]:
    """(ord, cum_size) of ``records`` appended after a session's newest row ``last`` (a
    ``LAST_ORD`` result): its place and running size continued; NULL after a row that has
    none (another program's, which the database's trigger could not number)."""
    if last:
        ord_, cum = last[0]
        if ord_ is None or cum is None:
            return [(None, None)] * len(records)
        ord_, cum = int(ord_), int(cum)
    else:
        ord_, cum = 0, 0
    out: list[tuple[int | None, int | None]] = []
    for r in records:
        ord_ += 1
        cum += r.size
        out.append((ord_, cum))
    return out


class RawExecutor:
    """Runs the statements on a ``sqlite3`` connection (already on its thread).

    The registered constant statements (:func:`.statements.is_constant`) are compiled
    once per process; anything else is compiled per call.
    """

    _compiler = _Compiler(SQLiteDialect_pysqlite())

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def _sql(cls, stmt: sa.Executable) -> _Compiled:
        return cls._compiler.compile(stmt)

    def _params(self, stmt: sa.Executable, params: Params) -> tuple[str, list[Any]]:
        sql, names, defaults = self._sql(stmt)
        return sql, [self._value(params[n]) if n in params else defaults[n] for n in names]

    @staticmethod
    def _value(value: Any) -> Any:
        return to_sqlite_timestamp(value) if isinstance(value, datetime) else value

    def rows(self, stmt: sa.Executable, params: Params) -> Sequence[Sequence[Any]]:
        return self._conn.execute(*self._params(stmt, params)).fetchall()

    def run(self, stmt: sa.Executable, params: Params) -> int:
        return self._conn.execute(*self._params(stmt, params)).rowcount

    def insert_messages(
        self, session_id: str, root_id: str, records: Sequence[MessageRecord]
    ) -> list[int]:
        sql, names, _ = self._sql(q.INSERT_MESSAGE)
        # rows are built as tuples straight from the records: the hot loop of a bulk save
        assert names == _INSERT_ORDER, names
        places = next_places(self.rows(q.LAST_ORD, {"session_id": session_id}), records)
        rows = [
            (
                session_id,
                r.role,
                r.content,
                r.timestamp,
                r.extra,
                r.zcontent,
                r.size,
                r.chars,
                root_id,
                place[0],
                place[1],
            )
            for r, place in zip(records, places, strict=True)
        ]
        if len(rows) == 1:
            return [int(self._conn.execute(sql, rows[0]).lastrowid or 0)]
        self._conn.executemany(sql, rows)
        last = self._conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        # one writer holds the lock: with AUTOINCREMENT SQLite hands each row in turn
        # max(largest id ever used)+1, so the ids of this batch are consecutive
        return list(range(last - len(rows) + 1, last + 1))


class AlchemyExecutor:
    """Runs the statements through a SQLAlchemy connection (any dialect)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def rows(self, stmt: sa.Executable, params: Params) -> Sequence[Sequence[Any]]:
        return self._conn.execute(stmt, dict(params)).all()

    def run(self, stmt: sa.Executable, params: Params) -> int:
        return self._conn.execute(stmt, dict(params)).rowcount

    def insert_messages(
        self, session_id: str, root_id: str, records: Sequence[MessageRecord]
    ) -> list[int]:
        places = next_places(self.rows(q.LAST_ORD, {"session_id": session_id}), records)
        params = [
            {
                "session_id": session_id,
                "role": r.role,
                "content": r.content,
                "timestamp": r.timestamp,
                "metadata": r.extra,
                "content_zlib": r.zcontent,
                "size_bytes": r.size,
                "char_count": r.chars,
                "root_id": root_id,
                "ord": place[0],
                "cum_size": place[1],
            }
            for r, place in zip(records, places, strict=True)
        ]
        ids = self._conn.execute(q.INSERT_MESSAGE_RETURNING, params).scalars().all()
        return [int(i) for i in ids]


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

    _compiler = _Compiler(PGDialect(paramstyle="numeric_dollar"))  # type: ignore[no-untyped-call]

    def __init__(self, conn: PgConnection) -> None:
        self._conn = conn

    @classmethod
    def _sql(cls, stmt: sa.Executable) -> _Compiled:
        return cls._compiler.compile(stmt)

    def _args(self, stmt: sa.Executable, params: Params) -> tuple[str, list[Any]]:
        sql, names, defaults = self._sql(stmt)
        return sql, [params[n] if n in params else defaults[n] for n in names]

    def fetch(self, stmt: pg_sql.Prepared, params: Params) -> Sequence[Sequence[Any]]:
        """A PostgreSQL statement of :mod:`.pg_sql`, its binds given by name."""
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
    """The records as one array per column, named as :data:`.pg_sql.INSERT_MESSAGES`'
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

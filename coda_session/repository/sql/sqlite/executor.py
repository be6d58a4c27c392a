"""SQLite's executor: the operations' statements on a stdlib ``sqlite3`` connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

from ....models import MessageRecord
from ....timeutil import to_sqlite_timestamp
from .. import statements as q
from ..executors import INSERT_ORDER, Compiled, Compiler, Params, next_places

__all__ = ["RawExecutor"]


class RawExecutor:
    """Runs the statements on a ``sqlite3`` connection (already on its thread).

    The registered constant statements (:func:`.statements.is_constant`) are compiled
    once per process; anything else is compiled per call.
    """

    _compiler = Compiler(SQLiteDialect_pysqlite())

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @property
    def connection(self) -> sqlite3.Connection:
        """The ``sqlite3`` connection (for the statements of this package's own)."""
        return self._conn

    @classmethod
    def _sql(cls, stmt: sa.Executable) -> Compiled:
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
        assert names == INSERT_ORDER, names
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

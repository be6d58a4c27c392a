"""How an operation's statements reach the database: the one interface they are written
against.

Operations (:mod:`.operations`) are written once against :class:`Executor`; each dialect
package has its executor (``sqlite3``'s, asyncpg's, SQLAlchemy's connection). What they
share is here: the compile cache of the registered constant statements, and where the
rows of an append continue (their places and running sizes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import sqlalchemy as sa

from ...models import MessageRecord
from . import statements as q

__all__ = [
    "INSERT_ORDER",
    "Compiled",
    "Compiler",
    "Executor",
    "Params",
    "next_places",
]

Params = Mapping[str, Any]


class Executor(Protocol):
    def rows(self, stmt: sa.Executable, params: Params) -> Sequence[Sequence[Any]]: ...

    def run(self, stmt: sa.Executable, params: Params) -> int: ...

    def insert_messages(
        self, session_id: str, root_id: str, records: Sequence[MessageRecord]
    ) -> list[int]: ...


#: ``INSERT_MESSAGE``'s parameters in order (an executor builds its rows as tuples)
INSERT_ORDER = (
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
Compiled = tuple[str, tuple[str, ...], dict[str, Any]]


class Compiler:
    """Statements compiled for one dialect with positional parameters: (SQL, parameter
    names in order, defaults). The registered constants (:func:`.statements.is_constant`)
    are compiled once per process; anything else per call."""

    def __init__(self, dialect: Any) -> None:
        self._dialect = dialect
        self._cache: dict[int, Compiled] = {}

    def compile(self, stmt: sa.Executable) -> Compiled:
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

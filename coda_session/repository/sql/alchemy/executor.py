"""The generic executor: the operations' statements through a SQLAlchemy connection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ....models import MessageRecord
from .. import statements as q
from ..executors import Params, next_places

__all__ = ["AlchemyExecutor"]


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

"""PostgreSQL's operations: the portable ones, with those it does in one statement
(resume, reads, text length, an append, a fork's insert) overridden by faster equals."""

from __future__ import annotations

from typing import Any

from ....codec import decode_metadata
from ....errors import SessionNotFoundError, SessionTooLargeError
from ....models import MessageRecord, SessionRecord
from ...base import SaveRequest, SaveResult
from ..branching import Part
from ..operations import Operations, one_statement
from ..rows import message_of, session_of
from ..search import bodies_of
from . import statements as pg_sql
from .executor import PgExecutor, message_arrays
from .search import tsvector_literal

__all__ = ["PgOperations"]


class PgOperations(Operations[PgExecutor]):
    """The operations on asyncpg connections (:class:`~.executor.PgExecutor`)."""

    def appends_alone(self, request: SaveRequest) -> bool:
        """New messages only (no truncation, drop or metadata patch): one statement."""
        return bool(
            request.messages
            and request.truncation is None
            and not request.metadata_patch
            and not request.drop_newest
        )

    @one_statement
    def load(
        self, cx: PgExecutor, name: str | None, session_id: str | None, tail: int
    ) -> SessionRecord | None:
        """:meth:`Operations.load` as one statement (the session row and its tail in one snapshot)."""
        if session_id is not None:
            rows = cx.fetch(pg_sql.LOAD_BY_ID, {"session_id": session_id, "tail": max(tail, 0)})
        else:
            rows = cx.fetch(pg_sql.LOAD_BY_NAME, {"name": name, "tail": max(tail, 0)})
        if not rows:
            return None
        messages = [message_of(r[12:]) for r in reversed(rows) if r[12] is not None]
        return session_of(rows[0][:12], messages)

    @one_statement
    def read(
        self,
        cx: PgExecutor,
        session_id: str,
        upto_id: int,
        limit: int | None,
        root_id: str | None = None,
    ) -> list[MessageRecord]:
        """:meth:`Operations.read` as one statement."""
        params = {"session_id": session_id, "upto_id": upto_id, "limit": limit, "root_id": root_id}
        if limit is None:
            return [message_of(r) for r in cx.fetch(pg_sql.READ_ALL, params)]
        if limit <= 0:
            return []
        rows = cx.fetch(pg_sql.READ_TAIL, params)
        return [message_of(r) for r in reversed(rows)]

    @one_statement
    def read_page(
        self,
        cx: PgExecutor,
        session_id: str,
        after_id: int,
        upto_id: int,
        limit: int,
        root_id: str | None = None,
    ) -> list[MessageRecord]:
        """:meth:`Operations.read_page` as one statement."""
        params = {
            "session_id": session_id,
            "after_id": after_id,
            "upto_id": upto_id,
            "limit": limit,
            "root_id": root_id,
        }
        rows = cx.fetch(pg_sql.READ_PAGE, params)
        return [message_of(r) for r in rows]

    @one_statement
    def text_length(
        self,
        cx: PgExecutor,
        session_id: str,
        upto_id: int,
        limit: int | None,
        root_id: str | None = None,
    ) -> tuple[int, int]:
        """:meth:`Operations.text_length` as one statement."""
        params = {"session_id": session_id, "upto_id": upto_id, "limit": limit, "root_id": root_id}
        row = cx.fetch(pg_sql.TEXT_LENGTH, params)[0]
        return int(row[0]), int(row[1])

    @one_statement
    def append(self, cx: PgExecutor, req: SaveRequest, deferred: bool = False) -> SaveResult:
        """A save of new messages only (no truncation, no metadata patch) as one statement,
        its own transaction: see :data:`.statements.APPEND` (which indexes them for
        search too, unless ``deferred``: :data:`.statements.APPEND_PENDING`)."""
        size_delta = sum(r.size for r in req.messages)
        params: dict[str, Any] = {
            "session_id": req.session_id,
            "max_bytes": req.max_bytes,
            "metadata_version": req.metadata_version,
            "updated_at": req.updated_at,
            "size_delta": size_delta,
            "root_id": req.root_id,
            **message_arrays(req.messages),
        }
        stmt = pg_sql.APPEND_PENDING
        if not deferred:
            stmt = pg_sql.APPEND
            params["bodies"] = bodies = bodies_of(req.messages)
            params["tsvs"] = [tsvector_literal(b.split()) for b in bodies]
        while True:
            found = cx.fetch(stmt, params)
            if not found:
                raise SessionNotFoundError(f"session {req.name!r} was deleted")
            # stale: another writer of the session committed while this one waited for its
            # row, after the statement's snapshot; nothing was written, and a new statement
            # (a new snapshot) sees that writer's rows. Each rerun follows another writer's
            # commit, so the appends queued on one session all get through.
            if not found[0][8]:
                break
        previous, size_before, ids, count, size, version, stored, last, _ = found[0]
        if count is None:  # over the limit: nothing was written
            assert req.max_bytes is not None
            raise SessionTooLargeError(req.name, int(size_before) + size_delta, req.max_bytes)
        metadata = decode_metadata(stored) if version != req.metadata_version else None
        return SaveResult(
            [int(i) for i in ids or ()],
            int(count),
            int(size),
            int(last),
            metadata,
            int(previous),
            int(version),
        )

    def _insert_session(
        self,
        cx: PgExecutor,
        values: dict[str, Any],
        parts: list[Part],
        whole_of: str | None,
        tail: int,
    ) -> list[MessageRecord]:
        """The row, its segments and, when it lists only a run of its source's own rows,
        its newest messages in one round trip: the source's up to its newest id. A piece
        of a segment is no bound there (the source's read of its segments knows no upper
        id): read after the insert."""
        if not parts:
            return super()._insert_session(cx, values, parts, whole_of, tail)
        rows = cx.fetch(
            pg_sql.INSERT_FORK,
            {
                **values,
                "owners": [p.owner for p in parts],
                "los": [p.lo for p in parts],
                "his": [p.hi for p in parts],
                "counts": [p.count for p in parts],
                "sizes": [p.size for p in parts],
                "tail": max(tail, 0) if whole_of is not None else 0,
            },
        )
        newest = [message_of(r) for r in reversed(rows)]
        if tail > 0 and whole_of is None:
            newest = self.read(cx, values["id"], values["last_id"], tail, values["root_id"])
        return newest

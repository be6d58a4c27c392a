"""Repository operations as plain functions over a narrow executor.

Each operation is one transaction and is written once. It runs either on SQLite's
connection thread in a single trip (:class:`RawExecutor`, the fast path) or through
SQLAlchemy on any database (:class:`AlchemyExecutor`).
"""

from __future__ import annotations

import gc
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import Connection

from ...codec import decode_metadata, dumps_metadata
from ...errors import SessionExistsError, SessionNotFoundError, SessionTooLargeError
from ...models import MessageRecord, SessionInfo, SessionRecord, _trusted_info
from ...timeutil import from_db_timestamp, to_sqlite_timestamp
from ..base import SaveRequest, SaveResult
from . import statements as q

__all__ = ["AlchemyExecutor", "Executor", "RawExecutor"]

Params = Mapping[str, Any]


class Executor(Protocol):
    def rows(self, stmt: sa.Executable, params: Params) -> Sequence[Sequence[Any]]: ...

    def run(self, stmt: sa.Executable, params: Params) -> int: ...

    def insert_messages(self, session_id: str, records: Sequence[MessageRecord]) -> list[int]: ...


_INSERT_ORDER = (
    "session_id",
    "role",
    "content",
    "timestamp",
    "metadata",
    "content_zlib",
    "size_bytes",
    "char_count",
)


class RawExecutor:
    """Runs the compiled statements on a ``sqlite3`` connection (already on its thread)."""

    _dialect = SQLiteDialect_pysqlite()
    _compiled: dict[int, tuple[str, tuple[str, ...], dict[str, Any]]] = {}  # noqa: RUF012

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def _sql(cls, stmt: sa.Executable) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        # keyed by identity: the statements are module-level constants that live forever
        hit = cls._compiled.get(id(stmt))
        if hit is None:
            compiled = stmt.compile(dialect=cls._dialect)  # type: ignore[attr-defined]
            hit = (str(compiled), tuple(compiled.positiontup or ()), dict(compiled.params))
            cls._compiled[id(stmt)] = hit
        return hit

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

    def insert_messages(self, session_id: str, records: Sequence[MessageRecord]) -> list[int]:
        sql, names, _ = self._sql(q.INSERT_MESSAGE)
        # rows are built as tuples straight from the records: the hot loop of a bulk save
        assert names == _INSERT_ORDER, names
        rows = [
            (session_id, r.role, r.content, r.timestamp, r.extra, r.zcontent, r.size, r.chars)
            for r in records
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

    def insert_messages(self, session_id: str, records: Sequence[MessageRecord]) -> list[int]:
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
            }
            for r in records
        ]
        ids = self._conn.execute(q.INSERT_MESSAGE_RETURNING, params).scalars().all()
        return [int(i) for i in ids]


def _session(row: Sequence[Any], last_id: int, tail: list[MessageRecord]) -> SessionRecord:
    return SessionRecord(
        id=row[0],
        name=row[1],
        created_at=from_db_timestamp(row[2]),
        updated_at=from_db_timestamp(row[3] if row[3] is not None else row[2]),
        metadata=decode_metadata(row[4]),
        message_count=int(row[5]),
        size_bytes=int(row[6]),
        last_message_id=int(last_id),
        tail=tail,
        metadata_version=int(row[7]),
    )


def _message(row: Sequence[Any]) -> MessageRecord:
    ts = row[3]
    return MessageRecord(
        row[1] if row[1] is not None else "",
        row[2],
        ts if isinstance(ts, str) else ("" if ts is None else str(ts)),
        row[4],
        int(row[6]),
        int(row[7]),
        int(row[0]),
        None if row[5] is None else bytes(row[5]),
    )


def load(cx: Executor, name: str | None, session_id: str | None, tail: int) -> SessionRecord | None:
    if session_id is not None:
        found = cx.rows(q.SESSION_BY_ID, {"session_id": session_id})
    else:
        found = cx.rows(q.SESSION_BY_NAME, {"name": name})
    if not found:
        return None
    row = found[0]
    if tail <= 0:
        return _session(row, cx.rows(q.LAST_MESSAGE_ID, {"session_id": row[0]})[0][0], [])
    rows = cx.rows(q.MESSAGES_LATEST, {"session_id": row[0], "n": tail})
    return _session(row, rows[0][0] if rows else 0, [_message(r) for r in reversed(rows)])


def read(cx: Executor, session_id: str, upto_id: int, limit: int | None) -> list[MessageRecord]:
    if limit is None:
        rows = cx.rows(q.MESSAGES_ALL, {"session_id": session_id, "upto_id": upto_id})
        return [_message(r) for r in rows]
    if limit <= 0:
        return []
    rows = cx.rows(q.MESSAGES_TAIL, {"session_id": session_id, "upto_id": upto_id, "n": limit})
    return [_message(r) for r in reversed(rows)]


def read_page(
    cx: Executor, session_id: str, after_id: int, upto_id: int, limit: int
) -> list[MessageRecord]:
    params = {"session_id": session_id, "after_id": after_id, "upto_id": upto_id, "n": limit}
    return [_message(r) for r in cx.rows(q.MESSAGES_PAGE, params)]


def import_begin(cx: Executor, record: SessionRecord) -> None:
    create(cx, record, None)


def import_batch(cx: Executor, session_id: str, records: Sequence[MessageRecord]) -> int:
    cx.insert_messages(session_id, records)
    return sum(r.byte_size() for r in records)


def import_finish(cx: Executor, record: SessionRecord, count: int, size: int) -> int:
    cx.run(
        q.SET_SESSION_TOTALS,
        {
            "session_id": record.id,
            "updated_at": record.updated_at,
            "metadata": dumps_metadata(record.metadata),
            "message_count": count,
            "size_bytes": size,
        },
    )
    return int(cx.rows(q.LAST_MESSAGE_ID, {"session_id": record.id})[0][0])


def text_length(cx: Executor, session_id: str, upto_id: int, limit: int | None) -> tuple[int, int]:
    params = {"session_id": session_id, "upto_id": upto_id, "n": 2**62 if limit is None else limit}
    row = cx.rows(q.TEXT_LENGTH, params)[0]
    return int(row[0]), int(row[1])


def create(cx: Executor, record: SessionRecord, copy_from: str | None) -> SessionRecord:
    if cx.rows(q.SESSION_BY_NAME, {"name": record.name}):
        raise SessionExistsError(f"session {record.name!r} already exists")
    metadata, count, size = record.metadata, 0, 0
    if copy_from is not None:
        source = cx.rows(q.SESSION_BY_ID, {"session_id": copy_from})
        if not source:
            raise SessionNotFoundError("the session to branch from no longer exists")
        metadata = decode_metadata(source[0][4])
        count, size = int(source[0][5]), int(source[0][6])
    cx.run(
        q.INSERT_SESSION,
        {
            "id": record.id,
            "name": record.name,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "metadata": dumps_metadata(metadata),
            "message_count": count,
            "size_bytes": size,
        },
    )
    last_id = 0
    if copy_from is not None and count:
        cx.run(q.COPY_MESSAGES, {"new_id": record.id, "source_id": copy_from})
        last_id = cx.rows(q.LAST_MESSAGE_ID, {"session_id": record.id})[0][0]
    return SessionRecord(
        id=record.id,
        name=record.name,
        created_at=record.created_at,
        updated_at=record.updated_at,
        metadata=metadata,
        message_count=count,
        size_bytes=size,
        last_message_id=int(last_id),
    )


def save(cx: Executor, req: SaveRequest) -> SaveResult:
    sid = req.session_id
    previous = int(cx.rows(q.LAST_MESSAGE_ID, {"session_id": sid})[0][0])
    metadata: dict[str, Any] | None = None
    version_before = -1
    if req.metadata_patch:
        # read-modify-write below: hold the session row first
        found = cx.rows(q.SESSION_METADATA, {"session_id": sid})
        if not found:
            raise SessionNotFoundError(f"session {req.name!r} was deleted")
        metadata = decode_metadata(found[0][0])
        metadata.update(req.metadata_patch)
        version_before = int(found[0][1])
    # a truncation holds the row too, without reading or decoding the metadata
    elif req.truncation is not None and not cx.rows(q.SESSION_LOCK, {"session_id": sid}):
        raise SessionNotFoundError(f"session {req.name!r} was deleted")
    count_delta = len(req.messages)
    size_delta = sum(r.size for r in req.messages)
    cut = req.truncation
    if cut is not None:
        boundary = cx.rows(
            q.TRUNCATE_BOUNDARY, {"session_id": sid, "upto_id": cut.upto_id, "keep": cut.keep}
        )
        if boundary:
            params = {"session_id": sid, "boundary": boundary[0][0]}
            gone, gone_size = cx.rows(q.TRUNCATE_STATS, params)[0]
            cx.run(q.DELETE_MESSAGES_UPTO, params)
            count_delta -= int(gone)
            size_delta -= int(gone_size)
    params = {
        "session_id": sid,
        "updated_at": req.updated_at,
        "count_delta": count_delta,
        "size_delta": size_delta,
    }
    if metadata is not None:
        params["metadata"] = dumps_metadata(metadata)
    else:
        params["seen"] = req.metadata_version
    counters = cx.rows(q.UPDATE_SESSION if metadata is None else q.UPDATE_SESSION_METADATA, params)
    if not counters:
        raise SessionNotFoundError(f"session {req.name!r} was deleted")
    count, size, version = (int(v) for v in counters[0][:3])
    if req.max_bytes is not None and size_delta > 0 and size > req.max_bytes:
        raise SessionTooLargeError(req.name, size, req.max_bytes)
    ids: list[int] = []
    if req.messages:
        ids = cx.insert_messages(sid, req.messages)
    last_id = ids[-1] if ids else cx.rows(q.LAST_MESSAGE_ID, {"session_id": sid})[0][0]
    if metadata is None:
        # unchanged by this save; sent back (and decoded) only if another writer changed it
        if version != req.metadata_version:
            metadata = decode_metadata(counters[0][3])
    elif version_before == req.metadata_version:
        metadata = None  # what the caller saw plus its own patch: it knows that already
    return SaveResult(ids, count, size, int(last_id), metadata, previous, version)


def delete(cx: Executor, session_id: str) -> bool:
    cx.run(q.DELETE_MESSAGES, {"session_id": session_id})
    return cx.run(q.DELETE_SESSION, {"session_id": session_id}) > 0


def list_all(cx: Executor) -> list[SessionInfo]:
    # The hot loop of list_sessions(): one object per row and nothing else, timestamps
    # parsed inline when they are this library's own UTC text. The cyclic collector is
    # paused meanwhile: the ~30k tracked objects of 10k rows made it walk the growing
    # list dozens of times per call, and a full heap collection every few calls (40-70
    # ms instead of about 30). Nothing built here forms a cycle; reference counting
    # frees it all as usual. Written inline, not as a context manager: a Ctrl-C landing
    # between a helper's frames could leave the collector off for good.
    build, meta, iso, stamp = (
        _trusted_info,
        decode_metadata,
        datetime.fromisoformat,
        from_db_timestamp,
    )
    infos: list[SessionInfo] = []
    add = infos.append
    collecting = gc.isenabled()
    try:
        gc.disable()
        for sid, name, created, updated, metadata, count, size in cx.rows(q.LIST_SESSIONS, {}):
            created = iso(created) if type(created) is str else stamp(created)
            if created.tzinfo is not UTC:
                created = stamp(created)
            if updated is None:
                updated = created
            else:
                updated = iso(updated) if type(updated) is str else stamp(updated)
                if updated.tzinfo is not UTC:
                    updated = stamp(updated)
            add(
                build(
                    {
                        "id": sid,
                        "name": name,
                        "created_at": created,
                        "updated_at": updated,
                        "message_count": count,
                        "size_bytes": size,
                        "metadata": meta(metadata),
                    }
                )
            )
    finally:
        if collecting:
            gc.enable()
    return infos

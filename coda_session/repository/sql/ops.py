"""Repository operations as plain functions over a narrow executor.

Each operation is one transaction and is written once, against
:class:`~.executors.Executor`: a runner runs it on SQLite's connection thread in a single
trip (the fast path) or through SQLAlchemy on any database.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from ...codec import decode_metadata, dumps_metadata, read_metadata
from ...errors import DamagedDataError, SessionNotFoundError, SessionTooLargeError
from ...models import MessageRecord, SessionInfo, SessionRecord, trusted_info
from ...timeutil import from_db_timestamp, read_timestamp
from ..base import SaveRequest, SaveResult, check_import_size
from . import pg_sql
from . import statements as q
from .executors import Executor, PgExecutor, message_arrays

__all__ = [
    "create",
    "delete",
    "import_all",
    "list_all",
    "load",
    "pg_append",
    "pg_load",
    "read",
    "read_page",
    "save",
    "session_fields",
    "text_length",
]

logger = logging.getLogger("coda_session")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# (session id, field) already reported damaged by this process: logged once, not per read
_REPORTED: set[tuple[str, str]] = set()


def _report(session_id: Any, fields: list[str]) -> None:
    new = [f for f in fields if (str(session_id), f) not in _REPORTED]
    if not new:
        return
    _REPORTED.update((str(session_id), f) for f in new)
    logger.warning(
        "session %s: stored %s unreadable, shown with fallbacks (see the README, 'Damaged rows')",
        session_id,
        " and ".join(new) + (" is" if len(new) == 1 else " are"),
    )


def session_fields(
    session_id: Any, created: Any, updated: Any, metadata: Any
) -> tuple[datetime, datetime, dict[str, Any]]:
    """A session row's timestamps and metadata, decoded; never raises.

    What cannot be decoded is shown with a fallback and logged (once per process): a
    created_at by the updated_at (else 1970-01-01T00:00:00+00:00), an updated_at by the
    created_at, metadata as ``{"_unreadable_metadata": <stored text>}``.
    """
    damaged: list[str] = []
    when_created, when_updated = read_timestamp(created), read_timestamp(updated)
    if when_created is None:
        damaged.append("created_at")
        when_created = when_updated or _EPOCH
    if when_updated is None:
        if updated is not None:
            damaged.append("updated_at")
        when_updated = when_created
    decoded = read_metadata(metadata)
    if decoded is None:
        damaged.append("metadata")
        decoded = decode_metadata(metadata)
    if damaged:
        _report(session_id, damaged)
    return when_created, when_updated, decoded


def _session(row: Sequence[Any], tail: list[MessageRecord]) -> SessionRecord:
    created, updated, metadata = session_fields(row[0], row[2], row[3], row[4])
    if type(row[0]) is not str or type(row[1]) is not str:
        raise DamagedDataError(f"session {row[1]!r:.80}: its id or name is damaged")
    try:
        count, size = int(row[5]), int(row[6])
    except (TypeError, ValueError):
        raise DamagedDataError(
            f"session {row[1]!r}: its message count or size is damaged"
        ) from None
    return SessionRecord(
        id=row[0],
        name=row[1],
        created_at=created,
        updated_at=updated,
        metadata=metadata,
        message_count=count,
        size_bytes=size,
        last_message_id=int(row[8]),
        tail=tail,
        metadata_version=int(row[7]),
    )


def _message(row: Sequence[Any]) -> MessageRecord:
    id_, role, content, ts, extra, packed, size, chars = row
    if (
        type(role) is str
        and role
        and type(ts) is str
        and (content is None or type(content) is str)
        and (extra is None or type(extra) is str)
        and (packed is None or type(packed) is bytes)
    ):
        return MessageRecord(role, content, ts, extra, int(size), int(chars), int(id_), packed)
    return _odd_message(row)


def _odd_message(row: Sequence[Any]) -> MessageRecord:
    """A row of unexpected column types: numbers and byte strings of other drivers are
    read as before; what cannot be a message becomes a record that raises when read."""
    id_, role, content, ts, extra, packed, size, chars = row
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        ts = str(ts)  # written by other code; shown as stored
    if isinstance(packed, bytearray | memoryview):
        packed = bytes(packed)
    problems = [
        what
        for what, bad in (
            ("its role is missing or not text", type(role) is not str or not role),
            ("its timestamp is missing or not text", type(ts) is not str),
            ("its content is not text", content is not None and type(content) is not str),
            (
                "its extra keys (metadata) are not text",
                extra is not None and type(extra) is not str,
            ),
            (
                "its compressed content is not bytes",
                packed is not None and type(packed) is not bytes,
            ),
        )
        if bad
    ]
    if not problems:
        return MessageRecord(role, content, ts, extra, int(size), int(chars), int(id_), packed)
    return MessageRecord("", None, "", None, 0, 0, int(id_), None, "; ".join(problems))


def load(cx: Executor, name: str | None, session_id: str | None, tail: int) -> SessionRecord | None:
    if session_id is not None:
        found = cx.rows(q.SESSION_BY_ID, {"session_id": session_id})
    else:
        found = cx.rows(q.SESSION_BY_NAME, {"name": name})
    if not found:
        return None
    row = found[0]
    if tail <= 0:
        return _session(row, [])
    rows = cx.rows(q.MESSAGES_LATEST, {"session_id": row[0], "upto_id": row[8], "n": tail})
    return _session(row, [_message(r) for r in reversed(rows)])


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
    last = int(cx.rows(q.LAST_MESSAGE_ID, {"session_id": record.id})[0][0])
    cx.run(
        q.SET_SESSION_TOTALS,
        {
            "session_id": record.id,
            "updated_at": record.updated_at,
            "metadata": dumps_metadata(record.metadata),
            "message_count": count,
            "size_bytes": size,
            "last_id": last,
        },
    )
    return last


def import_all(
    cx: Executor,
    record: SessionRecord,
    batches: Iterable[Sequence[MessageRecord]],
    max_bytes: int | None,
) -> SessionRecord:
    """A whole import in one transaction: the session, every batch, then its totals."""
    import_begin(cx, record)
    count = size = 0
    for batch in batches:
        size += import_batch(cx, record.id, batch)
        count += len(batch)
        check_import_size(record.name, size, max_bytes)
    last = import_finish(cx, record, count, size)
    return dataclasses.replace(record, message_count=count, size_bytes=size, last_message_id=last)


def text_length(cx: Executor, session_id: str, upto_id: int, limit: int | None) -> tuple[int, int]:
    params = {"session_id": session_id, "upto_id": upto_id, "n": 2**62 if limit is None else limit}
    row = cx.rows(q.TEXT_LENGTH, params)[0]
    return int(row[0]), int(row[1])


def create(cx: Executor, record: SessionRecord, copy_from: str | None) -> SessionRecord:
    # a taken name fails the INSERT on the UNIQUE constraint: the error edge makes that
    # SessionExistsError (one statement, and no race between a check and the insert)
    metadata, count, size = record.metadata, 0, 0
    if copy_from is not None:
        # held until the copy commits: the counters and the rows copied are one state
        source = cx.rows(q.SESSION_TO_COPY, {"session_id": copy_from})
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
        cx.run(q.SET_LAST_MESSAGE_ID, {"session_id": record.id, "last_id": last_id})
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
    # the row is held now (the UPDATE): its newest id is current on every database
    previous = int(counters[0][4])
    if req.max_bytes is not None and size_delta > 0 and size > req.max_bytes:
        raise SessionTooLargeError(req.name, size, req.max_bytes)
    last_id = previous
    ids: list[int] = []
    if req.messages:
        ids = cx.insert_messages(sid, req.messages)
        last_id = max(previous, ids[-1])
        cx.run(q.SET_LAST_MESSAGE_ID, {"session_id": sid, "last_id": last_id})
    if metadata is None:
        # unchanged by this save; sent back (and decoded) only if another writer changed it
        if version != req.metadata_version:
            metadata = decode_metadata(counters[0][3])
    elif version_before == req.metadata_version:
        metadata = None  # what the caller saw plus its own patch: it knows that already
    return SaveResult(ids, count, size, int(last_id), metadata, previous, version)


def delete(cx: Executor, session_id: str) -> bool:
    if not cx.rows(q.DELETE_LOCK, {"session_id": session_id}):
        return False
    cx.run(q.DELETE_MESSAGES, {"session_id": session_id})
    return cx.run(q.DELETE_SESSION, {"session_id": session_id}) > 0


def _strict_metadata(text: Any) -> dict[str, Any]:
    value = read_metadata(text)
    if value is None:
        raise ValueError("metadata cannot be decoded")
    return value


def list_all(cx: Executor) -> list[SessionInfo]:
    # The hot loop of list_sessions(): one object per row and nothing else, timestamps
    # parsed inline when they are this library's own UTC text. The cyclic collector is
    # paused meanwhile: the ~30k tracked objects of 10k rows made it walk the growing
    # list dozens of times per call, and a full heap collection every few calls (40-70
    # ms instead of about 30). Nothing built here forms a cycle; reference counting
    # frees it all as usual. Written inline, not as a context manager: a Ctrl-C landing
    # between a helper's frames could leave the collector off for good.
    build, meta, iso, stamp = (
        trusted_info,
        _strict_metadata,
        datetime.fromisoformat,
        from_db_timestamp,
    )
    infos: list[SessionInfo] = []
    add = infos.append
    collecting = gc.isenabled()
    try:
        gc.disable()
        for sid, name, created, updated, metadata, count, size in cx.rows(q.LIST_SESSIONS, {}):
            try:
                created = iso(created) if type(created) is str else stamp(created)
                if created.tzinfo is not UTC:
                    created = stamp(created)
                if updated is None:
                    updated = created
                else:
                    updated = iso(updated) if type(updated) is str else stamp(updated)
                    if updated.tzinfo is not UTC:
                        updated = stamp(updated)
                metadata = meta(metadata)
            except (ValueError, TypeError, OverflowError, RecursionError):
                # a row this library did not write, or damaged: the slow path, logged
                created, updated, metadata = session_fields(sid, created, updated, metadata)
            add(
                build(
                    {
                        "id": sid,
                        "name": name,
                        "created_at": created,
                        "updated_at": updated,
                        "message_count": count,
                        "size_bytes": size,
                        "metadata": metadata,
                    }
                )
            )
    finally:
        if collecting:
            gc.enable()
    return infos


# -- PostgreSQL: the same operations in one statement each --------------------------------


def pg_load(
    cx: PgExecutor, name: str | None, session_id: str | None, tail: int
) -> SessionRecord | None:
    """:func:`load` as one statement (the session row and its tail in one snapshot)."""
    if session_id is not None:
        rows = cx.fetch(pg_sql.LOAD_BY_ID, session_id, max(tail, 0))
    else:
        rows = cx.fetch(pg_sql.LOAD_BY_NAME, name, max(tail, 0))
    if not rows:
        return None
    messages = [_message(r[9:]) for r in reversed(rows) if r[9] is not None]
    return _session(rows[0][:9], messages)


def pg_append(cx: PgExecutor, req: SaveRequest) -> SaveResult:
    """A save of new messages only (no truncation, no metadata patch) as one statement,
    its own transaction: see :data:`.pg_sql.APPEND`."""
    size_delta = sum(r.size for r in req.messages)
    found = cx.fetch(
        pg_sql.APPEND,
        req.session_id,
        *message_arrays(req.messages),
        req.max_bytes,
        req.metadata_version,
        req.updated_at,
        size_delta,
    )
    if not found:
        raise SessionNotFoundError(f"session {req.name!r} was deleted")
    previous, size_before, ids, count, size, version, stored, last = found[0]
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

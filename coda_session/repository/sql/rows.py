"""Rows as records: the one decoder every SQL operation reads rows with (messages,
sessions, session listings). A damaged value is shown with a fallback or raises
DamagedDataError; nothing here runs a statement."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from ...codec import decode_metadata, read_metadata
from ...errors import DamagedDataError
from ...models import MessageRecord, SessionInfo, SessionRecord, message_record, trusted_info
from ...timeutil import from_db_timestamp, read_timestamp

__all__ = ["infos_of", "message_of", "session_fields", "session_of"]

logger = logging.getLogger("coda_session")


def message_of(row: Sequence[Any]) -> MessageRecord:
    id_, role, content, ts, extra, packed, size, chars = row
    if (
        type(role) is str
        and role
        and type(ts) is str
        and (content is None or type(content) is str)
        and (extra is None or type(extra) is str)
        and (packed is None or type(packed) is bytes)
    ):
        return message_record(
            role=role,
            content=content,
            timestamp=ts,
            extra=extra,
            size=int(size),
            chars=int(chars),
            id=int(id_),
            zcontent=packed,
        )
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
        return message_record(
            role=role,
            content=content,
            timestamp=ts,
            extra=extra,
            size=int(size),
            chars=int(chars),
            id=int(id_),
            zcontent=packed,
        )
    return message_record(
        role="",
        content=None,
        timestamp="",
        extra=None,
        size=0,
        chars=0,
        id=int(id_),
        damage="; ".join(problems),
    )


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


def session_of(row: Sequence[Any], tail: list[MessageRecord]) -> SessionRecord:
    """A session row (``statements.SESSION_BY_ID``'s columns) with its newest messages."""
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
        root_id=row[9] or row[0],
        parent_id=row[10],
        fork_point=None if row[11] is None else int(row[11]),
    )


def _strict_metadata(text: Any) -> dict[str, Any]:
    value = read_metadata(text)
    if value is None:
        raise ValueError("metadata cannot be decoded")
    return value


def infos_of(rows: Iterable[Sequence[Any]]) -> list[SessionInfo]:
    """Session listing rows (``statements.LIST_SESSIONS``'s columns) as infos."""
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
        for sid, name, created, updated, metadata, count, size, root, parent, point in rows:
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
                        "root_id": root or sid,
                        "parent_id": parent,
                        "fork_point": point,
                    }
                )
            )
    finally:
        if collecting:
            gc.enable()
    return infos

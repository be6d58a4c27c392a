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
from itertools import pairwise
from typing import Any

from ...codec import decode_metadata, dumps_metadata, read_metadata
from ...errors import (
    DamagedDataError,
    SessionNotFoundError,
    SessionTooLargeError,
)
from ...models import MessageRecord, SessionInfo, SessionRecord, trusted_info
from ...timeutil import from_db_timestamp, read_timestamp
from ..base import SaveRequest, SaveResult, check_import_size, fork_count, parents_first
from . import pg_sql
from . import statements as q
from .branching import (
    BEYOND,
    MAX_DEPTH,
    Link,
    Part,
    cut_from_end,
    cut_oldest,
    damaged,
    detach,
    drop_newest,
    fork_parts,
    link_from,
    lock_tree,
    nth_from_end,
    own_part,
    reclaim,
    release,
    segments,
    span,
    span_upto,
    tail_parts,
)
from .executors import Executor, PgExecutor, message_arrays
from .rows import message_of

__all__ = [
    "create",
    "delete",
    "import_all",
    "list_all",
    "load",
    "pg_append",
    "pg_load",
    "pg_read",
    "pg_read_page",
    "pg_text_length",
    "read",
    "read_page",
    "save",
    "session_fields",
    "text_length",
    "tree",
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
        root_id=row[9] or row[0],
        parent_id=row[10],
        fork_point=None if row[11] is None else int(row[11]),
    )


def _root(cx: Executor, session_id: str, root_id: str | None) -> str:
    """The session's tree key: ``root_id`` when the caller knows it, else read."""
    if root_id:
        return root_id
    found = cx.rows(q.ROOT_OF, {"session_id": session_id})
    return str(found[0][0] or session_id) if found else session_id


def _view(cx: Executor, root: str, session_id: str, upto_id: int) -> list[Part]:
    """The session's view: its segments, then its own rows up to ``upto_id``."""
    parts = segments(cx, root, session_id)
    parts.append(Part(session_id, 0, upto_id, 1, 0))  # own rows: count unknown, not needed
    return parts


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
    return _session(row, read(cx, row[0], int(row[8]), tail, row[9]))


def read(
    cx: Executor, session_id: str, upto_id: int, limit: int | None, root_id: str | None = None
) -> list[MessageRecord]:
    if limit is not None and limit <= 0:
        return []
    root = _root(cx, session_id, root_id)
    if limit is None:
        params = {"session_id": session_id, "tree": root, "beyond": BEYOND, "upto": upto_id}
        rows: list[Sequence[Any]] = list(cx.rows(q.VIEW_ROWS, params))
        _ascending(session_id, rows, 1)
        return [message_of(r) for r in rows]
    params = {"owner": session_id, "tree": root, "lo": 0, "hi": upto_id, "n": limit}
    rows = list(cx.rows(q.RANGE_DESC, params))
    if len(rows) < limit:
        # a branch: the rest comes from what it inherited (a plain session has no segment),
        # down its links only as far as the newest ``limit`` messages go
        want = limit - len(rows)
        tail = {
            "session_id": session_id,
            "tree": root,
            "beyond": BEYOND,
            "need": want,
            "depth": MAX_DEPTH,
        }
        rows.extend(cx.rows(q.TAIL_ROWS, tail))
        _ascending(session_id, rows, -1)
    return [message_of(r) for r in reversed(rows)]


def _ascending(session_id: str, rows: Sequence[Sequence[Any]], way: int) -> None:
    """A view's rows come in id order (``way`` 1: ascending, -1: descending), each once:
    anything else is damaged branch rows (a link cycle, overlapping segments)."""
    for before, after in pairwise(rows):
        if (int(after[0]) - int(before[0])) * way <= 0:
            raise damaged(session_id, "its segments show a message twice or out of order")


def read_page(
    cx: Executor,
    session_id: str,
    after_id: int,
    upto_id: int,
    limit: int,
    root_id: str | None = None,
) -> list[MessageRecord]:
    root = _root(cx, session_id, root_id)
    rows: list[Sequence[Any]] = []
    view = segments(cx, root, session_id, above=after_id)
    view.append(Part(session_id, 0, upto_id, 1, 0))
    for part in view:
        if len(rows) >= limit:
            break
        if part.hi <= after_id:
            continue
        params = {"owner": part.owner, "tree": root, "lo": max(part.lo, after_id)}
        rows.extend(cx.rows(q.RANGE_ASC, {**params, "hi": part.hi, "n": limit - len(rows)}))
    return [message_of(r) for r in rows]


def import_begin(cx: Executor, record: SessionRecord) -> None:
    create(cx, record, None)


def import_batch(cx: Executor, record: SessionRecord, records: Sequence[MessageRecord]) -> int:
    cx.insert_messages(record.id, record.root_id or record.id, records)
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
    fork: tuple[str, int] | None = None,
) -> SessionRecord:
    """A whole import in one transaction: the session (a fork of ``fork``'s (source id,
    fork point) when given), every batch, then its totals."""
    if fork is None:
        import_begin(cx, record)
        base = record
    else:
        base = create(cx, record, fork[0], fork[1])
    count, size = base.message_count, base.size_bytes
    for batch in batches:
        size += import_batch(cx, base, batch)
        count += len(batch)
        check_import_size(record.name, size, max_bytes)
    if fork is None:
        last = import_finish(cx, record, count, size)
    else:
        last = max(
            base.last_message_id, int(cx.rows(q.LAST_MESSAGE_ID, {"session_id": record.id})[0][0])
        )
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
    return dataclasses.replace(
        base,
        metadata=record.metadata,
        updated_at=record.updated_at,
        message_count=count,
        size_bytes=size,
        last_message_id=last,
    )


def text_length(
    cx: Executor, session_id: str, upto_id: int, limit: int | None, root_id: str | None = None
) -> tuple[int, int]:
    want = 2**62 if limit is None else limit
    root = _root(cx, session_id, root_id)
    chars = count = 0
    if limit is None:
        view = _view(cx, root, session_id, upto_id)
    else:
        view = tail_parts(cx, root, session_id, limit)
        view.append(Part(session_id, 0, upto_id, 1, 0))
    for part in reversed(view):
        if count >= want:
            break
        params = {"owner": part.owner, "tree": root, "lo": part.lo, "hi": part.hi}
        row = cx.rows(q.RANGE_TEXT, {**params, "n": want - count})[0]
        chars += int(row[0])
        count += int(row[1])
    return chars, count


@dataclasses.dataclass(slots=True)
class _Plan:
    """What a fork starts with: the bound up to which it inherits its source's segments
    (None: nothing), the count and size of what it shows through that link, the segments
    of its own list, and its totals."""

    upto: int | None
    inherit_count: int
    inherit_size: int
    own: list[Part]
    count: int
    size: int


def _fork_plan(
    cx: Executor,
    root: str,
    source: SessionRecord,
    link: Link,
    fork_point: int | None,
    fork_after: int | None,
) -> _Plan:
    """A fork of the whole view, or at a point in the source's own rows, reads no
    segment: it inherits them all and lists one run of the source's own rows. Elsewhere
    the view is resolved: the fork inherits up to the last segment it shows whole and
    lists the piece of the one its point cuts. ``link`` is the source's (read with its
    row)."""
    sid = source.id
    lo = link.own_lo
    total, size = source.message_count, source.size_bytes
    upto = lo if link.segmented else None
    in_count, in_size = link.inherited
    if fork_after is None:
        point = total if fork_point is None else fork_point
        leave = total - point  # the newest messages it leaves out
        own_count, own_size = total - in_count, size - in_size
        if own_count < 0 or own_size < 0:
            raise damaged(repr(source.name), "its counters are less than its segments show")
        if leave == 0:
            own = Part(sid, lo, source.last_message_id, own_count, own_size)
            return _Plan(upto, in_count, in_size, [own], total, size)
        if leave < own_count:
            cut = cut_from_end(cx, root, sid, lo, leave)
            if cut is not None:
                own = Part(sid, lo, cut[0], own_count - leave, own_size - cut[1])
                return _Plan(upto, in_count, in_size, [own], point, size - cut[1])
            # rows without places (another program's): found by reading
            boundary = nth_from_end(cx, root, sid, lo, BEYOND, leave)
            if boundary is not None:
                out_count, out_size = span(cx, root, sid, boundary, BEYOND)
                if out_count == leave:
                    own = Part(sid, lo, boundary, own_count - leave, own_size - out_size)
                    return _Plan(upto, in_count, in_size, [own], point, size - out_size)
            raise damaged(repr(source.name), "its message count does not match its rows")
    elif lo < fork_after <= source.last_message_id:
        # after one of the source's own rows: the run up to it, from its two ends
        upto_after = span_upto(cx, root, sid, lo, fork_after)
        # (counters short of the rows: the reading path below says what is damaged)
        if upto_after is not None and (
            upto_after[0] <= total - in_count and upto_after[1] <= size - in_size
        ):
            count, kept = upto_after
            own = Part(sid, lo, fork_after, count, kept)
            return _Plan(upto, in_count, in_size, [own], in_count + count, in_size + kept)
    # The segments' owners (other sessions of the tree, holders) are not locked: every
    # writer that moves or deletes rows a segment shows (a truncation, pop, clear or
    # delete, a holder's reclaim inside them) holds the tree lock, which the caller took
    # first, so nothing read here changes before the fork commits (on SQLite its write
    # lock does the same). Appends go on meanwhile: they only add rows above every ``hi``.
    parts = segments(cx, root, sid)
    own = own_part(sid, parts, total, size, source.last_message_id)
    if own.count < 0 or own.size < 0:
        raise damaged(repr(source.name), "its counters are less than its segments show")
    taken = fork_parts(cx, root, [*parts, own], fork_point, fork_after)
    whole = 0  # the leading parts it takes as they are: inherited
    while whole < len(taken) and whole < len(parts) and taken[whole] is parts[whole]:
        whole += 1
    mine = [p for p in taken[whole:] if p.count > 0]
    inherited = taken[:whole]
    return _Plan(
        parts[whole - 1].hi if whole else None,
        sum(p.count for p in inherited),
        sum(p.size for p in inherited),
        mine,
        sum(p.count for p in taken),
        sum(p.size for p in taken),
    )


def create(
    cx: Executor,
    record: SessionRecord,
    copy_from: str | None,
    fork_point: int | None = None,
    fork_after: int | None = None,
    tail: int = 0,
) -> SessionRecord:
    """A new session, or a branch of ``copy_from`` at ``fork_point`` (its first that many
    messages) or after message ``fork_after`` (all when neither): the branch inherits the
    source's segments up to there (see branching.py), lists at most two of its own, and
    copies no row. The record holds its newest ``tail`` messages."""
    # a taken name fails the INSERT on the UNIQUE constraint: the error edge makes that
    # SessionExistsError (one statement, and no race between a check and the insert)
    metadata, count, size, last_id = record.metadata, 0, 0, 0
    root, parent, point = record.id, None, None
    parts: list[Part] = []
    inherit: str | None = None
    upto: int | None = None
    in_count = in_size = 0
    if copy_from is not None:
        # held until the fork commits: the counters and the segments are one state (the
        # caller names the source's tree in record.root_id; the new branch joins it)
        source_root = _root(cx, copy_from, record.root_id)
        lock_tree(cx, source_root)
        found = cx.rows(q.SESSION_TO_FORK, {"session_id": copy_from, "tree": source_root})
        if not found:
            raise SessionNotFoundError("the session to branch from no longer exists")
        source = _session(found[0][:12], [])
        link = link_from(copy_from, found[0][12:])
        metadata = source.metadata
        if fork_point is not None:
            fork_point = fork_count(source.name, source.message_count, fork_point)
        plan = _fork_plan(cx, source_root, source, link, fork_point, fork_after)
        count, size = plan.count, plan.size
        parts = [p for p in plan.own if p.count > 0]
        if parts:
            last_id = parts[-1].hi
        elif plan.upto is not None and count:
            last_id = plan.upto
        if plan.upto is not None and plan.inherit_count:
            inherit, upto = copy_from, plan.upto
            in_count, in_size = plan.inherit_count, plan.inherit_size
        # an import keeps the fork point its file recorded (what it shares may be less)
        point = record.fork_point if record.fork_point is not None else count
        root, parent = source.root_id, copy_from
    values = {
        "id": record.id,
        "name": record.name,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "metadata": dumps_metadata(metadata),
        "message_count": count,
        "size_bytes": size,
        "root_id": root,
        "parent_id": parent,
        "fork_point": point,
        "last_id": last_id,
        "holder": False,
        "inherit_id": inherit,
        "inherit_upto": upto,
        "inherit_count": in_count,
        "inherit_size": in_size,
    }
    newest: list[MessageRecord] = []
    whole = len(parts) == 1 and parts[0].owner == copy_from
    if isinstance(cx, PgExecutor) and parts:
        # one round trip for the row, its segments and, when it lists only a run of its
        # source's own rows (it inherits all the source's segments), its newest messages:
        # the source's up to its newest id. A piece of a segment is no bound there (the
        # source's read of its segments knows no upper id): read after the insert.
        rows = cx.fetch(
            pg_sql.INSERT_FORK,
            {
                **values,
                "owners": [p.owner for p in parts],
                "los": [p.lo for p in parts],
                "his": [p.hi for p in parts],
                "counts": [p.count for p in parts],
                "sizes": [p.size for p in parts],
                "tail": max(tail, 0) if whole else 0,
            },
        )
        newest = [message_of(r) for r in reversed(rows)]
        if tail > 0 and not whole:
            newest = pg_read(cx, record.id, last_id, tail, root)
    else:
        cx.run(q.INSERT_SESSION, values)
        for part in parts:
            cx.run(
                q.INSERT_SEGMENT,
                {
                    "root_id": root,
                    "session_id": record.id,
                    "owner": part.owner,
                    "lo": part.lo,
                    "hi": part.hi,
                    "message_count": part.count,
                    "size_bytes": part.size,
                },
            )
        if tail > 0 and count and isinstance(cx, PgExecutor):
            newest = pg_read(cx, record.id, last_id, tail, root)
        elif tail > 0 and count:
            # the source's own rows when they are what it lists (a plain read of one run,
            # where the new branch's own read goes through its link)
            newest = read(cx, str(copy_from) if whole else record.id, last_id, tail, root)
    return SessionRecord(
        id=record.id,
        name=record.name,
        created_at=record.created_at,
        updated_at=record.updated_at,
        metadata=metadata,
        message_count=count,
        tail=newest,
        size_bytes=size,
        last_message_id=int(last_id),
        root_id=root,
        parent_id=parent,
        fork_point=point,
    )


def save(cx: Executor, req: SaveRequest) -> SaveResult:
    sid = req.session_id
    root = _root(cx, sid, req.root_id)
    key = {"session_id": sid, "tree": root}
    if req.truncation is not None or req.drop_newest:
        # rewrites segments and holders other sessions' operations rewrite too; a plain
        # append or metadata patch changes the session's own row and rows only
        lock_tree(cx, root)
    metadata: dict[str, Any] | None = None
    version_before = -1
    if req.metadata_patch:
        # read-modify-write below: hold the session row first
        found = cx.rows(q.SESSION_METADATA, key)
        if not found:
            raise SessionNotFoundError(f"session {req.name!r} was deleted")
        metadata = decode_metadata(found[0][0])
        metadata.update(req.metadata_patch)
        version_before = int(found[0][1])
    # a truncation or a drop holds the row too, without reading or decoding the metadata
    elif (req.truncation is not None or req.drop_newest) and not cx.rows(q.SESSION_LOCK, key):
        raise SessionNotFoundError(f"session {req.name!r} was deleted")
    count_delta = len(req.messages)
    size_delta = sum(r.size for r in req.messages)
    dropped: list[MessageRecord] = []
    if req.truncation is not None or req.drop_newest:
        cut = req.truncation
        if cut is not None:
            gone, gone_size = cut_oldest(cx, sid, root, cut.upto_id, cut.keep, req.updated_at)
            count_delta -= gone
            size_delta -= gone_size
        if req.drop_newest:
            dropped = drop_newest(cx, sid, root, req.drop_newest, req.updated_at)
            count_delta -= len(dropped)
            size_delta -= sum(r.size for r in dropped)
    params = {
        **key,
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
        ids = cx.insert_messages(sid, root, req.messages)
        last_id = max(previous, ids[-1])
        cx.run(q.SET_LAST_MESSAGE_ID, {**key, "last_id": last_id})
    if metadata is None:
        # unchanged by this save; sent back (and decoded) only if another writer changed it
        if version != req.metadata_version:
            metadata = decode_metadata(counters[0][3])
    elif version_before == req.metadata_version:
        metadata = None  # what the caller saw plus its own patch: it knows that already
    return SaveResult(ids, count, size, int(last_id), metadata, previous, version, dropped)


def delete(cx: Executor, session_id: str, when: datetime | None = None) -> bool:
    """Delete a session: the rows its branches show stay (moved to a holder), the others
    go, and so do the rows of holders that only it showed."""
    root = _root(cx, session_id, None)  # never changes: safe to read before the lock
    lock_tree(cx, root)
    if not cx.rows(q.DELETE_LOCK, {"session_id": session_id}):
        return False
    # the sessions inheriting its segments take copies of those they show first
    release(cx, root, session_id)
    parts = [p for p in segments(cx, root, session_id) if p.listed_by == session_id]
    cx.run(q.DELETE_SEGMENTS_OF, {"session_id": session_id})
    detach(cx, session_id, root, -1, BEYOND, when or datetime.now(UTC))
    deleted = cx.run(q.DELETE_SESSION, {"session_id": session_id}) > 0
    reclaim(cx, (p.owner for p in parts), root)
    return deleted


def tree(cx: Executor, root_id: str) -> list[SessionInfo]:
    """Every session of the branching tree whose key is ``root_id``, oldest first, each
    after the one it was forked from."""
    return parents_first(_infos(cx.rows(q.LIST_TREE, {"tree": root_id})))


def _strict_metadata(text: Any) -> dict[str, Any]:
    value = read_metadata(text)
    if value is None:
        raise ValueError("metadata cannot be decoded")
    return value


def list_all(cx: Executor) -> list[SessionInfo]:
    return _infos(cx.rows(q.LIST_SESSIONS, {}))


def _infos(rows: Iterable[Sequence[Any]]) -> list[SessionInfo]:
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


# -- PostgreSQL: the same operations in one statement each --------------------------------


def pg_load(
    cx: PgExecutor, name: str | None, session_id: str | None, tail: int
) -> SessionRecord | None:
    """:func:`load` as one statement (the session row and its tail in one snapshot)."""
    if session_id is not None:
        rows = cx.fetch(pg_sql.LOAD_BY_ID, {"session_id": session_id, "tail": max(tail, 0)})
    else:
        rows = cx.fetch(pg_sql.LOAD_BY_NAME, {"name": name, "tail": max(tail, 0)})
    if not rows:
        return None
    messages = [message_of(r[12:]) for r in reversed(rows) if r[12] is not None]
    return _session(rows[0][:12], messages)


def pg_read(
    cx: PgExecutor, session_id: str, upto_id: int, limit: int | None, root_id: str | None = None
) -> list[MessageRecord]:
    """:func:`read` as one statement."""
    params = {"session_id": session_id, "upto_id": upto_id, "limit": limit, "root_id": root_id}
    if limit is None:
        return [message_of(r) for r in cx.fetch(pg_sql.READ_ALL, params)]
    if limit <= 0:
        return []
    rows = cx.fetch(pg_sql.READ_TAIL, params)
    return [message_of(r) for r in reversed(rows)]


def pg_read_page(
    cx: PgExecutor,
    session_id: str,
    after_id: int,
    upto_id: int,
    limit: int,
    root_id: str | None = None,
) -> list[MessageRecord]:
    """:func:`read_page` as one statement."""
    params = {
        "session_id": session_id,
        "after_id": after_id,
        "upto_id": upto_id,
        "limit": limit,
        "root_id": root_id,
    }
    rows = cx.fetch(pg_sql.READ_PAGE, params)
    return [message_of(r) for r in rows]


def pg_text_length(
    cx: PgExecutor, session_id: str, upto_id: int, limit: int | None, root_id: str | None = None
) -> tuple[int, int]:
    """:func:`text_length` as one statement."""
    params = {"session_id": session_id, "upto_id": upto_id, "limit": limit, "root_id": root_id}
    row = cx.fetch(pg_sql.TEXT_LENGTH, params)[0]
    return int(row[0]), int(row[1])


def pg_append(cx: PgExecutor, req: SaveRequest) -> SaveResult:
    """A save of new messages only (no truncation, no metadata patch) as one statement,
    its own transaction: see :data:`.pg_sql.APPEND`."""
    size_delta = sum(r.size for r in req.messages)
    params = {
        "session_id": req.session_id,
        "max_bytes": req.max_bytes,
        "metadata_version": req.metadata_version,
        "updated_at": req.updated_at,
        "size_delta": size_delta,
        "root_id": req.root_id,
        **message_arrays(req.messages),
    }
    while True:
        found = cx.fetch(pg_sql.APPEND, params)
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

"""The repository's operations, written once over a narrow executor.

Each operation is one transaction, a method of :class:`Operations` written against
:class:`~.executors.Executor`, blind to the database: a runner runs it on SQLite's
connection thread in a single trip, on PostgreSQL's own connections, or through
SQLAlchemy on any database. A dialect may override an operation with a faster
equivalent (PostgreSQL's one-statement append, resume and reads: its package's
``PgOperations``); the suite proves them equal. An operation that is one statement is
marked :func:`one_statement`: a server runs it as its own transaction, in one round trip.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Generic, TypeVar

from ...codec import decode_metadata, dumps_metadata
from ...errors import SessionNotFoundError, SessionTooLargeError
from ...models import MessageRecord, SessionInfo, SessionRecord
from ...search.analysis import INDEX_VERSION
from ..base import SaveRequest, SaveResult, check_import_size, fork_count, parents_first
from ..searching import Candidates, SearchIndexReport, SearchRequest
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
from .executors import Executor
from .rows import infos_of, message_of, session_of
from .search import (
    DEFER_UNDER,
    IndexRow,
    NotingDeletes,
    OrphanSweeping,
    SearchStatements,
    check,
    index_entries,
    index_pending,
    index_some_pending,
    index_version,
    index_written,
    index_written_or_defer,
    pending_rows,
    reset,
    search,
    sweep_some,
)

__all__ = ["ONE_STATEMENT", "Operations", "one_statement"]

X = TypeVar("X", bound=Executor)
F = TypeVar("F", bound=Callable[..., Any])

#: The attribute :func:`one_statement` sets on an operation
ONE_STATEMENT = "one_statement"


def one_statement(fn: F) -> F:
    """Mark an operation that is one statement: a server runs it as its own transaction
    (one round trip); elsewhere it runs in a transaction like any other."""
    setattr(fn, ONE_STATEMENT, True)
    return fn


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


def _ascending(session_id: str, rows: Sequence[Sequence[Any]], way: int) -> None:
    """A view's rows come in id order (``way`` 1: ascending, -1: descending), each once:
    anything else is damaged branch rows (a link cycle, overlapping segments)."""
    for before, after in pairwise(rows):
        if (int(after[0]) - int(before[0])) * way <= 0:
            raise damaged(session_id, "its segments show a message twice or out of order")


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


class Operations(Generic[X]):
    """Every operation of the repository over an executor of type ``X``; each method is
    one transaction's work (the runner begins and ends it). ``search`` is the dialect's
    full-text index (:attr:`.dialect.Dialect.search`; None: none, every message is
    searched in Python): every write keeps it in step in its own transaction."""

    def __init__(self, search: SearchStatements | None = None) -> None:
        self.search = search

    def appends_alone(self, request: SaveRequest) -> bool:
        """Whether :meth:`append` runs ``request`` faster than :meth:`save` (here never:
        :meth:`append` is :meth:`save`)."""
        return False

    def load(
        self, cx: X, name: str | None, session_id: str | None, tail: int
    ) -> SessionRecord | None:
        if session_id is not None:
            found = cx.rows(q.SESSION_BY_ID, {"session_id": session_id})
        else:
            found = cx.rows(q.SESSION_BY_NAME, {"name": name})
        if not found:
            return None
        row = found[0]
        if tail <= 0:
            return session_of(row, [])
        return session_of(row, self.read(cx, row[0], int(row[8]), tail, row[9]))

    def read(
        self, cx: X, session_id: str, upto_id: int, limit: int | None, root_id: str | None = None
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

    def read_page(
        self,
        cx: X,
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

    def text_length(
        self, cx: X, session_id: str, upto_id: int, limit: int | None, root_id: str | None = None
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

    def save(
        self,
        cx: X,
        req: SaveRequest,
        bodies: Sequence[str] | None = None,
        deferred: bool = False,
    ) -> SaveResult:
        """A save; ``bodies`` are the new messages' index bodies when the caller computed
        them before the transaction (:func:`.search.bodies_of`), else computed here.
        ``deferred``: the new messages stay pending and the index is left as it is (a
        background indexer writes it after the commit, :mod:`.indexer`)."""
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
            dx = self._deleting(cx)
            if cut is not None:
                gone, gone_size = cut_oldest(dx, sid, root, cut.upto_id, cut.keep, req.updated_at)
                count_delta -= gone
                size_delta -= gone_size
            if req.drop_newest:
                dropped = drop_newest(dx, sid, root, req.drop_newest, req.updated_at)
                count_delta -= len(dropped)
                size_delta -= sum(r.size for r in dropped)
            self._deleted(cx, dx)
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
        counters = cx.rows(
            q.UPDATE_SESSION if metadata is None else q.UPDATE_SESSION_METADATA, params
        )
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
            if self.search is not None and not deferred:
                index_written_or_defer(cx, self.search, sid, root, req.messages, ids, bodies)
        if not deferred:
            self.index_others(
                cx,
                len(ids) >= DEFER_UNDER or req.truncation is not None or bool(req.drop_newest),
            )
        if metadata is None:
            # unchanged by this save; sent back (and decoded) only if another writer changed it
            if version != req.metadata_version:
                metadata = decode_metadata(counters[0][3])
        elif version_before == req.metadata_version:
            metadata = None  # what the caller saw plus its own patch: it knows that already
        return SaveResult(ids, count, size, int(last_id), metadata, previous, version, dropped)

    def delete(
        self, cx: X, session_id: str, when: datetime | None = None, deferred: bool = False
    ) -> bool:
        """Delete a session: the rows its branches show stay (moved to a holder), the others
        go, and so do the rows of holders that only it showed. ``deferred``: the orphans
        are left to the background indexer (see :meth:`save`)."""
        root = _root(cx, session_id, None)  # never changes: safe to read before the lock
        lock_tree(cx, root)
        if not cx.rows(q.DELETE_LOCK, {"session_id": session_id}):
            return False
        dx = self._deleting(cx)
        # the sessions inheriting its segments take copies of those they show first
        release(dx, root, session_id)
        parts = [p for p in segments(dx, root, session_id) if p.listed_by == session_id]
        dx.run(q.DELETE_SEGMENTS_OF, {"session_id": session_id})
        detach(dx, session_id, root, -1, BEYOND, when or datetime.now(UTC))
        deleted = dx.run(q.DELETE_SESSION, {"session_id": session_id}) > 0
        reclaim(dx, (p.owner for p in parts), root)
        self._deleted(cx, dx)
        if not deferred:
            self.index_others(cx, True)
        return deleted

    @one_statement
    def tree(self, cx: X, root_id: str) -> list[SessionInfo]:
        """Every session of the branching tree whose key is ``root_id``, oldest first, each
        after the one it was forked from."""
        return parents_first(infos_of(cx.rows(q.LIST_TREE, {"tree": root_id})))

    @one_statement
    def list_all(self, cx: X) -> list[SessionInfo]:
        return infos_of(cx.rows(q.LIST_SESSIONS, {}))

    def append(self, cx: X, req: SaveRequest, deferred: bool = False) -> SaveResult:
        """A save of new messages only (see :meth:`appends_alone`); it indexes them as
        :meth:`save` does (computing their terms in the transaction), or leaves them
        pending (``deferred``)."""
        return self.save(cx, req, None, deferred)

    # -- search (see .search) ---------------------------------------------------------

    def _deleting(self, cx: X) -> Executor:
        """The executor a write's deletions of messages run on: one noting what they
        remove when the index keeps the entries of deleted messages (orphans, removed
        later: :class:`.search.OrphanSweeping`), else ``cx`` itself."""
        return NotingDeletes(cx) if isinstance(self.search, OrphanSweeping) else cx

    def _deleted(self, cx: X, dx: Executor) -> None:
        """Note the id ranges the deletions on ``dx`` (:meth:`_deleting`) removed."""
        if isinstance(dx, NotingDeletes) and isinstance(self.search, OrphanSweeping):
            self.search.note_gone(cx, dx.gone)

    def index_others(self, cx: X, indexes: bool = False) -> int:
        """Index a bounded batch of the pending rows (small saves', another program's)
        once there are enough of them (:data:`.search.FLUSH_AT`): every write of ours
        calls it, so they do not stay pending for long. Returns how many.

        A write that changes the index anyway (``indexes``: it indexed its messages or
        deleted some, or this flush indexed pending rows) also removes a bounded batch of
        the orphans our deletes left (:func:`.search.sweep_some`); a small save does not,
        so its cost stays that of a save without an index."""
        if self.search is None:
            return 0
        indexed = index_some_pending(cx, self.search)
        if indexes or indexed:
            sweep_some(cx, self.search)
        return indexed

    def index_batch(self, cx: X, limit: int) -> int:
        """Index the oldest ``limit`` pending rows (a bulk indexing's step)."""
        if self.search is None:
            return 0
        return index_pending(cx, self.search, limit)

    @one_statement
    def pending_rows(self, cx: X, limit: int) -> list[tuple[Any, ...]]:
        """A background indexer's read (:mod:`.indexer`): the oldest ``limit`` pending
        rows (see :func:`.search.pending_rows`)."""
        if self.search is None:
            return []
        return pending_rows(cx, limit)

    def index_entries(
        self, cx: X, rows: Sequence[tuple[Any, ...]], entries: Sequence[IndexRow]
    ) -> int:
        """A background indexer's write: the entries of the rows :meth:`pending_rows` read (of
        the rows still pending unchanged), and a bounded batch of orphans removed;
        returns how many entries it wrote and removed (0: nothing left to do now)."""
        if self.search is None:
            return 0
        return index_entries(cx, self.search, rows, entries) + sweep_some(cx, self.search)

    def index_version(self, cx: X) -> int:
        """The analysis rules' version the stored index was built with (0: never)."""
        return index_version(cx)

    def reset_index(self, cx: X, force: bool) -> bool:
        """Empty the index and mark every row pending (then indexed in batches), when
        ``force`` or the stored index's rules are not the library's; True when it did."""
        if not force and index_version(cx) == INDEX_VERSION:
            return False
        reset(cx, self.search)
        return True

    def search_messages(self, cx: X, request: SearchRequest) -> Candidates:
        """The candidates of ``request`` (see :func:`.search.search`)."""
        return search(cx, self.search, request)

    def check_index(self, cx: X) -> SearchIndexReport:
        """Compare the index with the stored messages (see :func:`.search.check`)."""
        return check(cx, self.search)

    def create(
        self,
        cx: X,
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
            source = session_of(found[0][:12], [])
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
        # a fork that lists only a run of its source's own rows (it inherits all the
        # source's segments)
        whole = len(parts) == 1 and parts[0].owner == copy_from
        newest = self._insert_session(cx, values, parts, copy_from if whole else None, tail)
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

    def _insert_session(
        self,
        cx: X,
        values: dict[str, Any],
        parts: list[Part],
        whole_of: str | None,
        tail: int,
    ) -> list[MessageRecord]:
        """Insert the new session's row (``values``) and its segments (``parts``); return
        its newest ``tail`` messages. ``whole_of`` names the source when the new session
        lists only a run of that source's own rows."""
        sid, root = values["id"], values["root_id"]
        cx.run(q.INSERT_SESSION, values)
        for part in parts:
            cx.run(
                q.INSERT_SEGMENT,
                {
                    "root_id": root,
                    "session_id": sid,
                    "owner": part.owner,
                    "lo": part.lo,
                    "hi": part.hi,
                    "message_count": part.count,
                    "size_bytes": part.size,
                },
            )
        if tail > 0 and values["message_count"]:
            # the source's own rows when they are what it lists (a plain read of one run,
            # where the new branch's own read goes through its link)
            return self.read(cx, whole_of or sid, values["last_id"], tail, root)
        return []

    def import_all(
        self,
        cx: X,
        record: SessionRecord,
        batches: Iterable[Sequence[MessageRecord]],
        max_bytes: int | None,
        fork: tuple[str, int] | None = None,
        deferred: bool = False,
    ) -> SessionRecord:
        """A whole import in one transaction: the session (a fork of ``fork``'s (source id,
        fork point) when given), every batch, then its totals. ``deferred``: the messages
        stay pending (see :meth:`save`)."""
        if fork is None:
            self.create(cx, record, None)
            base = record
        else:
            base = self.create(cx, record, fork[0], fork[1])
        count, size = base.message_count, base.size_bytes
        root = base.root_id or base.id
        for batch in batches:
            ids = cx.insert_messages(base.id, root, batch)
            if self.search is not None and not deferred:
                index_written(cx, self.search, base.id, root, batch, ids, None)
            size += sum(r.byte_size() for r in batch)
            count += len(batch)
            check_import_size(record.name, size, max_bytes)
        if not deferred:
            self.index_others(cx, True)
        last = int(cx.rows(q.LAST_MESSAGE_ID, {"session_id": record.id})[0][0])
        if fork is not None:
            last = max(base.last_message_id, last)
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

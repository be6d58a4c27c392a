"""Search in SQL: the dialect's full-text index interface, and the search operations
every dialect shares.

A dialect's index (SQLite: FTS5 in :mod:`.sqlite.search`; PostgreSQL: tsvector + GIN) only
stores and looks up the terms :mod:`coda_session.search.analysis` computes; which rows are
in scope (trees, sessions' views, roles, timestamps), the rows not indexed yet (pending),
where a hit is shown and at which position, counting and the bounded window are decided
here, once, over the executor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ...errors import DamagedDataError
from ...models import MessageRecord
from ...search.analysis import INDEX_VERSION, index_body, record_text, terms
from ...search.query import matches
from ..searching import Candidates, SearchIndexReport, SearchRequest, StoredHit
from . import statements as q
from .branching import BEYOND, Part, segments, span
from .rows import message_of

if TYPE_CHECKING:
    import sqlalchemy as sa

    from ...search.query import Query
    from .executors import Executor, Params

__all__ = [
    "BULK_ROWS",
    "DEFER_UNDER",
    "FLUSH_AT",
    "ORPHANS_PER_WRITE",
    "PENDING_PER_WRITE",
    "IndexRow",
    "NotingDeletes",
    "OrphanSweeping",
    "SearchScope",
    "SearchStatements",
    "bodies_of",
    "check",
    "entries_of",
    "index_entries",
    "index_pending",
    "index_some_pending",
    "index_version",
    "index_written",
    "index_written_or_defer",
    "pending_rows",
    "reset",
    "search",
    "sweep_some",
]


@dataclass(frozen=True, slots=True)
class IndexRow:
    """One message's entry in the search index: its id, its tree's key, its role and its
    index body (``search.analysis.index_body``: the terms joined by single spaces)."""

    id: int
    root_id: str
    role: str
    body: str


@dataclass(frozen=True, slots=True)
class SearchScope:
    """Which stored messages a lookup may return (every condition holds):

    * ``roots``: the rows of these trees (``messages.root_id``); None: every tree;
    * ``parts``: rows of ``owner`` with ``lo < id <= hi`` for one of the (owner, lo, hi)
      (the sessions' views, resolved by the shared code); None: every row of ``roots``;
    * ``roles``: ``messages.role`` is one of them; None: any role;
    * ``after`` <= ``messages.timestamp`` < ``before``, compared as text; None: unbounded;
    * ``id <= upto_id``.
    """

    upto_id: int
    roots: tuple[str, ...] | None = None
    parts: tuple[tuple[str, int, int], ...] | None = None
    roles: tuple[str, ...] | None = None
    after: str | None = None
    before: str | None = None


class SearchStatements(Protocol):
    """A dialect's full-text index (SQLite: FTS5; PostgreSQL: tsvector + GIN): the few
    statements only it can write. Everything else (which rows to index, the terms, the
    pending rows, the sessions' views, shown_in, counting what is pending) is the shared
    code's (:mod:`.search`), written once over the executor.

    The contract every implementation keeps:

    * A message is either *indexed* (``messages.indexed = 1``, with an entry written by
      :meth:`index` whose id is the message's id) or *pending* (``messages.indexed IS
      NULL``, no entry: written by another program, changed by one, or by a small save of
      ours, :data:`DEFER_UNDER`): never both. Every insert leaves its rows pending; the
      shared code calls :meth:`index` and marks them indexed in the same transaction (a
      save of many messages), or in a later write of ours with other pending rows
      (:data:`FLUSH_AT`), or a rebuild. An UPDATE of the message's content,
      ``content_zlib``, ``role`` or ``metadata`` by anyone sets ``indexed`` to NULL and
      removes the entry (a trigger). A deleted message's entry goes with it (ON DELETE
      CASCADE), or stays as an *orphan* (an index implementing :class:`OrphanSweeping`,
      which removes them later): every lookup and count joins the messages, so an orphan
      is never shown nor counted (ids are never reused).
    * The text searched is only ever the compiled string :meth:`compile` returned, sent
      as a bound parameter; the scope's values are bound parameters too.
    * Results are newest first (id descending).
    """

    def compile(self, query: Query) -> str | None:
        """The index's match expression for ``query`` (``search.query.to_fts5`` /
        ``to_tsquery``), or None when it has no positive term."""
        ...

    def index(self, cx: Executor, rows: Sequence[IndexRow]) -> None:
        """Write entries for ``rows`` (messages not in the index), in bulk."""
        ...

    def lookup(
        self, cx: Executor, match: str | None, scope: SearchScope, limit: int
    ) -> list[Sequence[Any]]:
        """The newest ``limit`` indexed messages in ``scope`` that ``match`` matches
        (None: every indexed message in scope), id descending: each row the message's columns as :func:`.rows.message_of` reads them
        (id, role, content, timestamp, metadata, content_zlib, size_bytes, char_count),
        then its ``root_id``, its ``session_id`` and the entry's body."""
        ...

    def count(self, cx: Executor, match: str | None, scope: SearchScope, cap: int) -> int:
        """How many indexed messages in ``scope`` ``match`` matches (None: every indexed
        message in scope), counting at most ``cap``."""
        ...

    def clear(self, cx: Executor) -> None:
        """Remove every entry (a rebuild then indexes every message again)."""
        ...

    def entries(self, cx: Executor, lo: int, hi: int) -> list[IndexRow]:
        """The entries with ``lo < id <= hi``, by id (the integrity check reads them)."""
        ...


@runtime_checkable
class OrphanSweeping(Protocol):
    """An index whose entries outlive their deleted messages (SQLite's FTS5: deleting an
    entry re-reads and re-tokenizes it, ~70 us a row, so a delete of ours leaves them):
    the deletes of ours note the id ranges they emptied, later writes of ours remove those
    ranges' orphans in bounded batches (:func:`sweep_some`), :meth:`SearchStatements.clear`
    removes them all. Another program's deletes are not noted: their orphans are never
    shown (lookups join the messages); the integrity check counts them, a rebuild removes
    them."""

    def note_gone(self, cx: Executor, ranges: Sequence[tuple[int, int]]) -> None:
        """Note id ranges (``lo < id <= hi``) whose messages a write of ours deleted."""
        ...

    def sweep(self, cx: Executor, limit: int) -> int:
        """Remove the orphaned entries of the oldest noted ranges, walking at most
        ``limit`` entries (a range walked to its end is forgotten); returns how many it
        removed."""
        ...


class NotingDeletes:
    """An executor (see :class:`.executors.Executor`) that notes the ids each deletion of
    messages removes (``q.DELETE_RANGE``, the only statement of ours that deletes
    messages): their smallest and largest id, one range per statement, in :attr:`gone`."""

    def __init__(self, cx: Executor) -> None:
        self.cx = cx
        self.gone: list[tuple[int, int]] = []

    def rows(self, stmt: sa.Executable, params: Params) -> Sequence[Sequence[Any]]:
        return self.cx.rows(stmt, params)

    def run(self, stmt: sa.Executable, params: Params) -> int:
        if stmt is q.DELETE_RANGE:
            lo, hi = self.cx.rows(q.RANGE_BOUNDS, params)[0]
            if lo is not None:
                self.gone.append((int(lo) - 1, int(hi)))
        return self.cx.run(stmt, params)

    def insert_messages(
        self, session_id: str, root_id: str, records: Sequence[MessageRecord]
    ) -> list[int]:
        return self.cx.insert_messages(session_id, root_id, records)


# -- the shared operations ---------------------------------------------------------------

#: A save of fewer new messages than this leaves them pending (indexed by a later write,
#: with others, and evaluated in Python by a search meanwhile): an FTS5 transaction costs
#: about as much for one row as for dozens (a new segment, its merges, the WAL pages they
#: write), which made single-message saves 1.7x slower (median; 2.6x mean) when each
#: indexed its own message.
DEFER_UNDER = 16
#: A write of the library's indexes the pending rows once there are this many (so a
#: search evaluates at most about this many, plus other programs' newest, in Python)...
FLUSH_AT = 32
#: ... at most this many of them (another program may have written millions)
PENDING_PER_WRITE = 1024
#: index entries a write of ours walks at most to remove orphans (of the ranges our
#: deletes noted, :class:`OrphanSweeping`), when it changes the index anyway (a save of
#: :data:`DEFER_UNDER` messages or more, a flush of :data:`FLUSH_AT` pending rows, a
#: truncation, a delete, an import): removing one costs ~70 us, so such a write pays at
#: most ~20 ms more, and small saves nothing. Orphans are never shown (lookups join the
#: messages); a backlog only makes a lookup skip them, and a rebuild removes them all.
ORPHANS_PER_WRITE = 256
#: rows one transaction of a bulk indexing (after an upgrade, a rebuild) indexes
BULK_ROWS = 5000
#: tree tokens a lookup puts in the index's match at most; past that, the sessions'
#: views alone scope it (a search of thousands of sessions)
MAX_ROOT_TOKENS = 32


def body_of(record: MessageRecord) -> str:
    """The index body of a record: its terms (``search.analysis``) joined by spaces; empty
    for a damaged row (it is still indexed: nothing of it can be found)."""
    try:
        return index_body(terms(record_text(record)))
    except DamagedDataError:
        return ""


def bodies_of(records: Sequence[MessageRecord]) -> list[str]:
    """The index bodies of ``records`` (computed before a write takes its lock)."""
    return [body_of(r) for r in records]


def index_written(
    cx: Executor,
    statements: SearchStatements,
    session_id: str,
    root: str,
    records: Sequence[MessageRecord],
    ids: Sequence[int],
    bodies: Sequence[str] | None,
) -> None:
    """Index the rows a write of ours just inserted into ``session_id`` (``ids``,
    ``records`` in order), and mark them indexed."""
    if not ids:
        return
    if bodies is None:
        bodies = bodies_of(records)
    statements.index(
        cx,
        [IndexRow(i, root, r.role, b) for i, r, b in zip(ids, records, bodies, strict=True)],
    )
    cx.run(q.MARK_WRITTEN, {"owner": session_id, "lo": min(ids), "hi": max(ids)})


def _row_entry(row: Sequence[Any]) -> IndexRow:
    """The entry of a message row (``_SEARCH_COLS``: the message's columns, root_id,
    session_id, ord)."""
    record = message_of(row[:8])
    role = row[1] if isinstance(row[1], str) else ""
    root = row[8] if isinstance(row[8], str) else ""
    return IndexRow(int(row[0]), root, role, body_of(record))


def index_written_or_defer(
    cx: Executor,
    statements: SearchStatements,
    session_id: str,
    root: str,
    records: Sequence[MessageRecord],
    ids: Sequence[int],
    bodies: Sequence[str] | None,
) -> None:
    """Index the rows a save of ours just inserted, or leave a small save's pending
    (:data:`DEFER_UNDER`)."""
    if not ids:
        return
    if len(ids) >= DEFER_UNDER:  # else they stay pending, as inserted
        index_written(cx, statements, session_id, root, records, ids, bodies)


def index_some_pending(cx: Executor, statements: SearchStatements) -> int:
    """Index up to :data:`PENDING_PER_WRITE` pending rows once there are
    :data:`FLUSH_AT` (every write of ours calls it); returns how many."""
    if int(cx.rows(q.PENDING_UPTO, {"n": FLUSH_AT})[0][0]) < FLUSH_AT:
        return 0
    return index_pending(cx, statements, PENDING_PER_WRITE)


def sweep_some(cx: Executor, statements: SearchStatements) -> int:
    """Remove a bounded batch of the orphans our deletes left (:data:`ORPHANS_PER_WRITE`;
    a write of ours that changes the index calls it); returns how many."""
    if not isinstance(statements, OrphanSweeping):
        return 0
    return statements.sweep(cx, ORPHANS_PER_WRITE)


def index_pending(cx: Executor, statements: SearchStatements, limit: int) -> int:
    """Index the oldest ``limit`` pending rows (written by another program, or changed by
    one); returns how many."""
    rows = cx.rows(q.PENDING_FIRST_LOCKED, {"n": limit})
    if not rows:
        return 0
    statements.index(cx, [_row_entry(r) for r in rows])
    _mark_indexed(cx, [int(r[0]) for r in rows])
    return len(rows)


def _mark_indexed(cx: Executor, ids: Sequence[int]) -> None:
    """Mark the pending rows ``ids`` (ascending) indexed, run by run of consecutive ids:
    on a database server another transaction may commit a pending row whose id falls
    between two of them after they were read, and a range spanning that gap would mark it
    indexed without an entry."""
    if not ids:
        return
    lo = ids[0]
    for prev, cur in zip(ids, [*ids[1:], None], strict=True):
        if cur != prev + 1:
            cx.run(q.MARK_INDEXED, {"lo": lo, "hi": prev})
            if cur is not None:
                lo = cur


def pending_rows(cx: Executor, limit: int) -> list[tuple[Any, ...]]:
    """The oldest ``limit`` pending rows: a background indexer's read, whose entries
    (:func:`entries_of`) it computes outside any transaction, so the analysis holds
    neither the write lock nor a snapshot (:func:`index_entries` writes them)."""
    return [tuple(r) for r in cx.rows(q.PENDING_FIRST, {"n": limit})]


def entries_of(rows: Sequence[Sequence[Any]]) -> list[IndexRow]:
    """The index entries of message rows (``_SEARCH_COLS``), their terms computed."""
    return [_row_entry(r) for r in rows]


def index_entries(
    cx: Executor,
    statements: SearchStatements,
    rows: Sequence[tuple[Any, ...]],
    entries: Sequence[IndexRow],
) -> int:
    """Write the entries computed for ``rows`` (:func:`pending_rows`), for those still pending and
    unchanged since (another program may have changed or deleted one, or another writer
    indexed it meanwhile: those are left to a later read); returns how many it wrote."""
    if not rows:
        return 0
    now = {
        int(r[0]): tuple(r)
        for r in cx.rows(q.PENDING_BETWEEN, {"lo": rows[0][0], "hi": rows[-1][0]})
    }
    kept = [e for r, e in zip(rows, entries, strict=True) if now.get(e.id) == r]
    statements.index(cx, kept)
    _mark_indexed(cx, [e.id for e in kept])
    return len(kept)


def index_version(cx: Executor) -> int:
    """The analysis rules' version the stored index was built with (0: never built)."""
    found = cx.rows(q.INDEX_VERSION_OF, {})
    return int(found[0][0]) if found else 0


def reset(cx: Executor, statements: SearchStatements | None) -> None:
    """Empty the index and mark every row pending, to be indexed again with the current
    rules (:data:`search.analysis.INDEX_VERSION`)."""
    if statements is not None:
        statements.clear(cx)
    cx.run(q.MARK_ALL_PENDING, {})
    cx.run(q.SET_INDEX_VERSION, {"version": INDEX_VERSION})


# -- a lookup ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Found:
    """A matching message: its id, record, tree, owner (``messages.session_id``), body and
    place among its owner's rows (``messages.ord``; None when it has none)."""

    id: int
    record: MessageRecord
    root: str
    owner: str
    body: str
    place: int | None


def _found(row: Sequence[Any], body: str) -> _Found:
    """A lookup's row (the message's columns, root_id, session_id[, body])."""
    place = row[10]
    return _Found(
        int(row[0]),
        message_of(row[:8]),
        str(row[8] or ""),
        str(row[9] or ""),
        body,
        int(place) if isinstance(place, int) else None,
    )


def _scope(cx: Executor, request: SearchRequest, upto: int) -> SearchScope | None:
    """The request's scope; None when it names no session that exists."""
    roles = tuple(sorted(request.roles)) if request.roles is not None else None
    if request.session_ids is None:
        return SearchScope(upto, None, None, roles, request.after, request.before)
    roots: dict[str, None] = {}
    parts: dict[tuple[str, int, int], None] = {}
    for sid in sorted(request.session_ids):
        found = cx.rows(q.SESSION_BY_ID, {"session_id": sid})
        if not found:
            continue
        root = str(found[0][9] or sid)
        roots[root] = None
        for part in _view(cx, root, sid):
            parts[(part.owner, part.lo, part.hi)] = None
    if not roots:
        return None
    return SearchScope(upto, tuple(roots), tuple(parts), roles, request.after, request.before)


def _view(cx: Executor, root: str, session_id: str) -> list[Part]:
    """A session's view: its segments, then its own rows (count unknown)."""
    return [*segments(cx, root, session_id), Part(session_id, -1, BEYOND, 0, 0)]


def _in_scope(row: Sequence[Any], scope: SearchScope) -> bool:
    """Whether a message row (``_SEARCH_COLS``) is in ``scope`` (pending rows are
    scoped in Python: they are few, the next write indexes them)."""
    id_, role, ts = int(row[0]), row[1], row[3]
    if id_ > scope.upto_id:
        return False
    if scope.roles is not None and role not in scope.roles:
        return False
    if scope.after is not None and not (isinstance(ts, str) and ts >= scope.after):
        return False
    if scope.before is not None and not (isinstance(ts, str) and ts < scope.before):
        return False
    if scope.roots is not None and row[8] not in scope.roots:
        return False
    if scope.parts is not None:
        owner = row[9]
        return any(o == owner and lo < id_ <= hi for o, lo, hi in scope.parts)
    return True


def _pending_matches(
    cx: Executor, request: SearchRequest, scope: SearchScope, everything: bool
) -> list[_Found]:
    """The pending rows in scope that match, newest first, evaluated in Python
    (``everything``: no index at all, every row is evaluated so)."""
    stmt = q.MESSAGES_NEWEST if everything else q.PENDING_NEWEST
    out: list[_Found] = []
    for row in cx.rows(stmt, {"upto": scope.upto_id}):
        if not _in_scope(row, scope):
            continue
        entry = _row_entry(row)
        if matches(request.query, entry.body.split()):
            out.append(_found(row, entry.body))
    return out


def _indexed_matches(
    cx: Executor,
    statements: SearchStatements,
    request: SearchRequest,
    scope: SearchScope,
) -> tuple[list[_Found], int, bool]:
    """The newest indexed matches (at most the window), how many there are (up to the
    cap) and whether that count is exact."""
    match = statements.compile(request.query)
    window, cap = max(request.window, 0), max(request.count_cap, 0)
    if match is not None:
        rows = statements.lookup(cx, match, scope, window) if window else []
        found = [_found(r, str(r[11])) for r in rows]
        total = statements.count(cx, match, scope, cap + 1) if cap else 0
        return found, min(total, cap), total <= cap
    if not request.query.excluded:
        rows = statements.lookup(cx, None, scope, window) if window else []
        found = [_found(r, str(r[11])) for r in rows]
        total = statements.count(cx, None, scope, cap + 1) if cap else 0
        return found, min(total, cap), total <= cap
    # no positive term but excluded ones: the newest messages, each evaluated in Python,
    # page by page until the window is full and the count reaches the cap
    found = []
    total = 0
    upto = scope.upto_id
    page = max(window, 256)
    while True:
        rows = statements.lookup(cx, None, replace(scope, upto_id=upto), page)
        for r in rows:
            body = str(r[11])
            if matches(request.query, body.split()):
                total += 1
                if len(found) < window:
                    found.append(_found(r, body))
                if total > cap:
                    return found, cap, False
        if len(rows) < page:
            return found, total, True
        upto = int(rows[-1][0]) - 1


def search(cx: Executor, statements: SearchStatements | None, request: SearchRequest) -> Candidates:
    """The newest messages matching ``request`` (at most its window), newest first, with
    the sessions showing each; see :class:`..searching.SearchRequest`."""
    store_max = int(cx.rows(q.MAX_MESSAGE_ID, {})[0][0])
    upto = store_max if request.upto_id is None else min(request.upto_id, store_max)
    pinned = store_max if request.upto_id is None else request.upto_id
    scope = _scope(cx, request, upto)
    if scope is None:
        return Candidates([], [], 0, True, pinned)
    cap = max(request.count_cap, 0)
    if statements is None:
        found: list[_Found] = []
        total, exact = 0, True
        pending = _pending_matches(cx, request, scope, everything=True)
    else:
        found, total, exact = _indexed_matches(cx, statements, request, scope)
        pending = _pending_matches(cx, request, scope, everything=False)
    if pending:
        total += len(pending)
        found = sorted([*found, *pending], key=lambda f: f.id, reverse=True)
        if total > cap:
            total, exact = cap, False
    found = found[: max(request.window, 0)]
    shown = _shown_in(cx, found, request.session_ids)
    hits = [StoredHit(f.record, f.root, shown.get(f.id, ())) for f in found]
    return Candidates(hits, [f.body for f in found], total, exact, pinned)


def _shown_in(
    cx: Executor, found: Sequence[_Found], listed: frozenset[str] | None
) -> dict[int, tuple[tuple[str, int], ...]]:
    """(session id, 0-based position) of every session showing each hit (of ``listed``
    only, when given): each tree's sessions and their views are read once."""
    by_tree: dict[str, list[_Found]] = {}
    for f in found:
        by_tree.setdefault(f.root, []).append(f)
    out: dict[int, list[tuple[str, int]]] = {}
    for root, hits in by_tree.items():
        rows = cx.rows(q.TREE_SESSION_IDS, {"tree": root})
        sessions = [str(r[0]) for r in rows if listed is None or r[0] in listed]
        for sid in sessions:
            before = 0
            for part in _view(cx, root, sid):
                inside = [h for h in hits if h.owner == part.owner and part.lo < h.id <= part.hi]
                first: _Found | None = None
                first_count = 0
                for hit in sorted(inside, key=lambda h: h.id):
                    # a part's rows are consecutive among its owner's (see branching.span):
                    # past the first hit, places tell how many rows lie between
                    if first is not None and first.place is not None and hit.place is not None:
                        count = first_count + hit.place - first.place
                    else:
                        count, _ = span(cx, root, part.owner, part.lo, hit.id)
                        first, first_count = hit, count
                    out.setdefault(hit.id, []).append((sid, before + count - 1))
                before += part.count
    return {k: tuple(v) for k, v in out.items()}


# -- the integrity check -------------------------------------------------------------------


def check(cx: Executor, statements: SearchStatements | None) -> SearchIndexReport:
    """Compare every entry with its message, recomputing the message's terms: an entry
    without a message is *orphaned*, one whose body, tree or role differ is *stale*; a
    message marked indexed without an entry is reported in ``problems`` (a search would
    miss it: rebuild). Pending messages are counted (a search finds them anyway)."""
    if statements is None:
        return SearchIndexReport(indexed=0)
    indexed = pending = orphaned = stale = missing = both = 0
    after = 0
    while True:
        rows = cx.rows(q.MESSAGES_FROM, {"after": after, "n": BULK_ROWS})
        hi = int(rows[-1][0]) if len(rows) == BULK_ROWS else BEYOND
        entries = {e.id: e for e in statements.entries(cx, after, hi)}
        indexed += len(entries)
        for row in rows:
            id_ = int(row[0])
            entry = entries.pop(id_, None)
            if row[11] is None:
                pending += 1
                both += entry is not None
            elif entry is None:
                missing += 1
            elif entry != _row_entry(row):
                stale += 1
        orphaned += len(entries)
        if hi == BEYOND:
            break
        after = hi
    problems: list[str] = []
    if missing:
        problems.append(f"{missing} messages marked indexed have no index entry")
    if both:
        problems.append(f"{both} pending messages still have an index entry")
    return SearchIndexReport(
        indexed=indexed,
        pending=pending,
        orphaned=orphaned,
        stale=stale,
        index_version=index_version(cx),
        current_version=INDEX_VERSION,
        problems=tuple(problems),
    )

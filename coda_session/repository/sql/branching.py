"""Copy-on-write branches over SQL: a session's view is its segments, then its own rows.

A session shows, oldest first, the rows of each of its *segments* (the rows of another
session, its ``owner``, with ``lo < id <= hi``) and then its own rows (``session_id`` is
its id). Message ids ascend across the whole store, and every row a branch inherits is
older than the branch, so the view is in id order.

**Inherited segment lists.** A session's segments are those of its *list* (the
``session_segments`` rows with its ``session_id``) after those it *inherits*: with
``sessions.inherit_id`` set, the segments of that session with ``hi <= inherit_upto``,
resolved the same way down that session's own link (each link's bound the smaller of its
own and the bounds above it). A fork writes no copy of its source's segments: it
inherits them, up to the last one it shows whole, and lists at most two of its own (the
piece of a segment the fork point cuts, and the source's own rows it shows). So a chain
of forks (an agent regenerating at every turn) stores one segment and one link per fork,
where copies of every ancestor's segments stored a number growing with the square of the
depth (1,000 forks: 500,500 segment rows); a fork of the deepest costs what a fork of the
root does (it reads the source's row and writes two); a read of the newest messages
follows the links only as far as those messages go, in one statement (``TAIL_ROWS`` on
SQLite, ``postgresql.statements.READ_TAIL`` on PostgreSQL), a page only the links above it
(``RESOLVED_ABOVE``), and a whole read resolves the chain and reads the rows in one
(``VIEW_ROWS``). A link is the *only* thing a fork shares by reference: a session's
view is never a function of another session's later writes, because a session that
rewrites its own list releases its inheritors first (below).

Why this holds: a segment row is shown alike by its list's session and by every session
inheriting it, and every change to a segment row keeps what each of them shows:

* moving an owner's rows to a holder (:func:`detach`) splits the segments on them into
  pieces of the same rows, in the same list, none reaching past the original ``hi``;
  an inheritance bound never falls inside a segment (it is always some segment's
  ``hi`` or ``lo``), so each inheriting session takes all the pieces or none;
* a session that changes its own list or link (a truncation, a pop into what it
  inherits, a delete) first *releases* the sessions inheriting from it
  (:func:`release`): each gets copies of the segments it took from that list and
  inherits what that list inherited, so what it shows does not change. Only these
  writers copy segments, and only the ones they must: what the changed session's own
  list held (a truncation keeping inherited segments copies those it keeps).

Every session's own rows are exactly the own rows it shows. When a session stops showing
some of them (truncate, clear, drop the newest, delete) those that another session's
segment still shows move to a *holder* (a hidden ``sessions`` row of the same tree) and
the segments follow them; the others are deleted. A holder's rows that no segment shows
any more are deleted as soon as a segment stops showing them (:func:`reclaim`), and an
empty holder with them, so storage never keeps a row nothing shows. A holder that takes
the oldest rows of a session which already handed rows to a holder the same segments
continue from is that holder again, when the rows continue the places of the holder's
newest (a sliding window kept turn after turn under branches adds no holder and no
segment per turn; rows of another session, whose places start afresh, go to a new
holder, so a segment's rows stay consecutive places of their owner, below).

**Places.** Every message row carries its place among its session's rows and the running
size up to it (``messages.ord``, ``cum_size``, continued by every insert). The rows of a
range a session shows whole are consecutive among their owner's (a session's own rows
only ever lose their oldest or newest; a segment covers rows moved together), so the
count and size of such a range, and its k-th row, come from its two ends by index
(:func:`_span`, :func:`_at`) instead of an OFFSET scan or a sum over the rows: a fork
in the middle of a 100k-message session, and a truncation keeping the newest 5,000,
cost what they cost at the end. Ranges about to be moved or deleted are read whole
(that costs as much anyway), and rows without places (another program's, before the
trigger existed) fall back to reading.

Damaged tree rows (a link cycle, segments out of order, ``lo > hi``, negative counters)
raise :class:`~coda_session.errors.DamagedDataError` naming the session.

Every function runs inside the caller's transaction, with the session row already held.

Locking: an operation that rewrites what another session of the tree shows, or reads
what another one may rewrite (a fork, a truncation, clear or replacement, a pop, a
delete, an import as a branch), calls :func:`lock_tree` first, before it reads anything
it will rewrite, and holds the tree until it commits: a source's truncation and a
branch's pop rewrite the same segments and holders from what they read, and READ
COMMITTED alone lets each overwrite the other's effects. Appends that only add a
session's own rows take no tree lock: their ids are above every segment's ``hi``, and
the only other writers of a session's own rows (its own truncation, pop, delete, and a
fork that shows them) hold its row, which the append holds too. The key is the tree's
``root_id``, written once when a session is made and never changed (a root's branches
keep it after the root is deleted), so every operation on the tree agrees on it, even
one that read it before taking the lock. So a fork locks only the tree and its source's
row (shared, against the source's appends, which take no tree lock): the owners of the
segments it lists need no lock, every writer that moves or deletes their rows holding
the tree. It then reads the source's row with its link in one statement, finds a cut in
the source's own rows in one more, and on PostgreSQL writes its row and segments in one
that also returns its newest messages (``postgresql.statements.INSERT_FORK``).
Several sessions' rows change in one operation (a release rewrites the inheritors' lists
and links, a detach the segments on the session's rows in other lists): on a server
database such an operation must not interleave with another one of the same tree, which
a per-tree lock taken at the start of each (its ``root_id``) provides.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...errors import DamagedDataError
from ...models import MessageRecord
from ..base import not_shown
from . import statements as q
from .executors import Executor
from .rows import message_of

__all__ = [
    "BEYOND",
    "MAX_DEPTH",
    "Link",
    "Part",
    "check_parts",
    "cut_from_end",
    "cut_oldest",
    "damaged",
    "detach",
    "drop_newest",
    "fork_parts",
    "link_from",
    "link_of",
    "lock_tree",
    "new_holder",
    "nth_from_end",
    "own_lo",
    "own_part",
    "reclaim",
    "release",
    "segments",
    "span",
    "span_upto",
    "tail_parts",
]

#: an upper bound above every message id
BEYOND = 2**62
#: the deepest chain of inheritance links a tail read follows (a damaged link cycle
#: whose counts never add up stops there)
MAX_DEPTH = 1_000_000


def lock_tree(cx: Executor, root_id: str) -> None:
    """Hold the tree whose key is ``root_id`` until the transaction ends: every other
    operation that takes it waits until then, and (at READ COMMITTED, which the write
    transactions use) then reads what this one committed. Take it before reading
    anything the operation will rewrite. On PostgreSQL an advisory lock (bounded by
    ``busy_timeout`` like any lock wait); on SQLite nothing, its write lock already
    serialises every write transaction."""
    digest = hashlib.blake2b(
        root_id.encode("utf-8", "surrogatepass"), digest_size=8, person=b"coda-tree"
    ).digest()
    cx.rows(q.TREE_LOCK, {"key": int.from_bytes(digest, "big", signed=True)})


@dataclass(slots=True)
class Part:
    """One run of a session's view: ``owner``'s rows with ``lo < id <= hi``."""

    owner: str
    lo: int
    hi: int
    count: int
    size: int
    segment_id: int | None = None
    """The ``session_segments`` row, or None for the session's own rows."""
    listed_by: str | None = None
    """The session whose list holds the segment row (the session itself, or one it
    inherits from)."""


@dataclass(slots=True)
class Link:
    """A session's inheritance link (the session, the bound, the count and size of what
    it shows through it) and its own list (the newest ``hi``, count and size)."""

    inherit_id: str | None
    upto: int | None
    count: int
    size: int
    own_max: int | None
    list_count: int
    list_size: int

    @property
    def segmented(self) -> bool:
        """Whether the session shows any segment (else only its own rows)."""
        return bool(self.inherit_id or self.own_max)

    @property
    def inherited(self) -> tuple[int, int]:
        """(count, size) of everything its segments show."""
        return self.count + self.list_count, self.size + self.list_size

    @property
    def own_lo(self) -> int:
        """An id below every own row: the newest the session inherits."""
        return max(self.own_max or 0, self.upto or 0 if self.inherit_id else 0)


def damaged(session_id: str, what: str) -> DamagedDataError:
    """The error for damaged branch rows of a session (its id or name), saying what to do."""
    return DamagedDataError(
        f"session {session_id}: its branch rows are damaged ({what}); restore the database "
        "from a backup, or export the sessions of its tree that still read "
        "(export_session) and import them into a new store (see the README, 'Damaged rows')"
    )


def check_parts(session_id: str, rows: Sequence[Sequence[Any]]) -> list[Part]:
    """Segment rows (``RESOLVED``'s columns), checked: ``hi`` strictly ascending,
    ``lo < hi``, counters not negative, no row twice (a link cycle repeats them)."""
    out: list[Part] = []
    seen: set[int] = set()
    for owner, lo, hi, count, size, seg, listed_by in rows:
        try:
            part = Part(str(owner), int(lo), int(hi), int(count), int(size), int(seg))
        except (TypeError, ValueError):
            raise damaged(session_id, f"segment {seg}: a value is not a number") from None
        part.listed_by = None if listed_by is None else str(listed_by)
        if owner is None:
            raise damaged(session_id, f"segment {seg} names no owner")
        if int(seg) in seen:
            raise damaged(session_id, "its inheritance links form a cycle")
        seen.add(int(seg))
        if part.lo >= part.hi:
            raise damaged(session_id, f"segment {seg} has lo {part.lo} >= hi {part.hi}")
        if part.count < 0 or part.size < 0:
            raise damaged(session_id, f"segment {seg} has a negative count or size")
        if out and part.hi <= out[-1].hi:
            raise damaged(session_id, f"segment {seg} overlaps the one before it")
        out.append(part)
    return out


def segments(cx: Executor, root: str, session_id: str, above: int | None = None) -> list[Part]:
    """The session's segments, inherited and its own, oldest first (only those with
    ``hi > above`` when given: the links below are not read)."""
    params = {"session_id": session_id, "tree": root, "beyond": BEYOND}
    if above is not None:
        return check_parts(session_id, cx.rows(q.RESOLVED_ABOVE, {**params, "floor": above}))
    return check_parts(session_id, cx.rows(q.RESOLVED, params))


def tail_parts(cx: Executor, root: str, session_id: str, need: int) -> list[Part]:
    """The session's newest segments, oldest first: at least those of its ``need``
    newest inherited messages (more when one list holds more)."""
    params = {
        "session_id": session_id,
        "tree": root,
        "beyond": BEYOND,
        "need": need,
        "depth": MAX_DEPTH,
    }
    return check_parts(session_id, cx.rows(q.TAIL_PARTS, params))


def link_of(cx: Executor, root: str, session_id: str) -> Link:
    found = cx.rows(q.INHERIT_OF, {"session_id": session_id, "tree": root})
    if not found:
        return Link(None, None, 0, 0, None, 0, 0)
    return link_from(session_id, found[0])


def link_from(session_id: str, row: Sequence[Any]) -> Link:
    """The link of an ``INHERIT_OF`` row (also the last columns of ``SESSION_TO_FORK``),
    checked."""
    inherit, upto, count, size, own_max, list_count, list_size = row
    try:
        link = Link(
            None if inherit is None else str(inherit),
            None if upto is None else int(upto),
            int(count or 0),
            int(size or 0),
            None if own_max is None else int(own_max),
            int(list_count),
            int(list_size),
        )
    except (TypeError, ValueError):
        raise damaged(session_id, "its inheritance link is not a number") from None
    if link.inherit_id is not None and link.upto is None:
        raise damaged(session_id, "its inheritance link has no bound")
    if min(link.count, link.size, link.list_count, link.list_size) < 0:
        raise damaged(session_id, "a count or size of its segments is negative")
    return link


def own_lo(parts: Sequence[Part]) -> int:
    """An id below every own row of a session whose segments are ``parts``: the newest it
    inherits (its own rows are younger than the fork). A range from there, not from 0,
    keeps a server's scan of the id index short for a branch with few rows of its own."""
    return max((p.hi for p in parts), default=0)


def own_part(session_id: str, parts: Sequence[Part], count: int, size: int, hi: int) -> Part:
    """The session's own rows as a part, from its totals (``count``, ``size``) and its
    segments (``parts``)."""
    return Part(
        session_id,
        own_lo(parts),
        hi,
        count - sum(p.count for p in parts),
        size - sum(p.size for p in parts),
    )


def release(cx: Executor, root: str, session_id: str) -> None:
    """Before ``session_id`` changes its own segment list or its link: every session
    inheriting from it gets copies of the segments it takes from that list and inherits
    what the list inherits (so what each shows does not change)."""
    referers = cx.rows(q.REFERERS, {"session_id": session_id})
    if not referers:
        return
    link = link_of(cx, root, session_id)
    for referer, upto in referers:
        try:
            upto = int(upto)
        except (TypeError, ValueError):
            raise damaged(str(referer), "its inheritance bound is not a number") from None
        cx.run(q.COPY_SEGMENTS, {"session_id": session_id, "to": referer, "upto": upto})
        copied = cx.rows(q.LIST_STATS, {"session_id": session_id, "upto": upto})[0]
        mine = link_of(cx, root, str(referer))
        inherit = link.inherit_id
        bound = None if inherit is None else min(upto, link.upto or 0)
        _link(
            cx,
            str(referer),
            inherit,
            bound,
            mine.count - int(copied[0]) if inherit else 0,
            mine.size - int(copied[1]) if inherit else 0,
        )


def _link(
    cx: Executor, session_id: str, inherit: str | None, upto: int | None, count: int, size: int
) -> None:
    cx.run(
        q.SET_INHERIT,
        {
            "session_id": session_id,
            "inherit_id": inherit,
            "inherit_upto": upto,
            "inherit_count": count,
            "inherit_size": size,
        },
    )


def _unlink(cx: Executor, session_id: str) -> None:
    _link(cx, session_id, None, None, 0, 0)


def _insert_segment(cx: Executor, root: str, session_id: str, part: Part) -> None:
    cx.run(
        q.INSERT_SEGMENT,
        {
            "root_id": root,
            "session_id": session_id,
            "owner": part.owner,
            "lo": part.lo,
            "hi": part.hi,
            "message_count": part.count,
            "size_bytes": part.size,
        },
    )


def _range(part: Part, root: str, lo: int | None = None, hi: int | None = None) -> dict[str, Any]:
    return {
        "owner": part.owner,
        "tree": root,
        "lo": part.lo if lo is None else lo,
        "hi": part.hi if hi is None else hi,
    }


def _stats(cx: Executor, root: str, owner: str, lo: int, hi: int) -> tuple[int, int]:
    """(count, size) of a range by reading it: for ranges about to be moved or deleted
    (which costs that much anyway), where rows may be missing between its ends."""
    params = {"owner": owner, "tree": root, "lo": lo, "hi": hi}
    count, size, _ = cx.rows(q.RANGE_STATS, params)[0]
    return int(count), int(size)


def _ends(cx: Executor, root: str, owner: str, lo: int, hi: int) -> tuple[int, ...] | None:
    """A range's (first id, ord, cum_size, size, last id, ord, cum_size); None when it is
    empty or a row has no place (another program's, unnumbered)."""
    found = cx.rows(q.RANGE_ENDS, {"owner": owner, "tree": root, "lo": lo, "hi": hi})
    if not found or any(v is None for v in found[0]):
        return None
    return tuple(int(v) for v in found[0])


def _span(cx: Executor, root: str, owner: str, lo: int, hi: int) -> tuple[int, int]:
    """(count, size) of a range a session shows whole, from its two ends: the rows of
    such a range are consecutive among its owner's (a session's own rows lose only
    their oldest or newest; a segment covers rows moved together), so their places and
    running sizes tell both without reading what lies between."""
    ends = _ends(cx, root, owner, lo, hi)
    if ends is None:
        return _stats(cx, root, owner, lo, hi)
    _, first_ord, first_cum, first_size, _, last_ord, last_cum = ends
    count, size = last_ord - first_ord + 1, last_cum - first_cum + first_size
    if count <= 0 or size < 0:
        return _stats(cx, root, owner, lo, hi)
    return count, size


def _at(
    cx: Executor, root: str, owner: str, lo: int, hi: int, k: int, from_end: bool
) -> int | None:
    """The id of the range's ``k``-th row (0-based) from its oldest or newest end, or
    None past its end: found by its place, or by an OFFSET (rows without places)."""
    ends = _ends(cx, root, owner, lo, hi)
    params = {"owner": owner, "tree": root, "lo": lo, "hi": hi}
    if ends is not None:
        target = ends[5] - k if from_end else ends[1] + k
        if target < ends[1] or target > ends[5]:
            return None
        found = cx.rows(q.RANGE_BY_ORD, {**params, "ord": target})
        if found:
            return int(found[0][0])
    stmt = q.RANGE_NTH_DESC if from_end else q.RANGE_NTH_ASC
    found = cx.rows(stmt, {**params, "k": k})
    return int(found[0][0]) if found else None


def _nth(cx: Executor, root: str, part: Part, k: int) -> int:
    """The id of the part's ``k``-th row (1-based, 1 <= k <= count)."""
    found = _at(cx, root, part.owner, part.lo, part.hi, k - 1, False)
    if found is None:
        raise damaged(part.owner, f"a segment's count ({part.count}) is more than its rows")
    return found


def _head(cx: Executor, root: str, part: Part, boundary: int, count: int) -> Part:
    """The part's rows up to ``boundary`` (``count`` of them)."""
    return Part(
        part.owner, part.lo, boundary, count, _span(cx, root, part.owner, part.lo, boundary)[1]
    )


def fork_parts(
    cx: Executor, root: str, parts: Sequence[Part], point: int | None, after_id: int | None
) -> list[Part]:
    """The parts a fork of a view made of ``parts`` starts with: its first ``point``
    messages, or those up to and including message ``after_id``, or all of them. A part
    taken whole is the same object as in ``parts``; a cut one is new."""
    total = sum(p.count for p in parts)
    cut: Part | None = None  # the part that message ``after_id`` ends (it is its head)
    if after_id is not None:
        point = None
        seen = 0
        for part in parts:
            if part.lo < after_id <= part.hi and cx.rows(
                q.RANGE_HAS, {**_range(part, root), "message_id": after_id}
            ):
                count, size = _span(cx, root, part.owner, part.lo, after_id)
                cut = Part(part.owner, part.lo, after_id, count, size)
                point = seen + count
                break
            seen += part.count
        if point is None:
            raise not_shown(after_id)
    if point is None:
        point = total
    out: list[Part] = []
    seen = 0
    for part in parts:
        if seen >= point:
            break
        if part.count <= 0:
            continue
        if seen + part.count <= point:
            out.append(part)
        elif cut is not None:
            out.append(cut)  # cut at the message itself: no need to look for it by place
        else:
            k = point - seen
            out.append(_head(cx, root, part, _nth(cx, root, part, k), k))
        seen += out[-1].count
    return out


def new_holder(cx: Executor, root_id: str, when: datetime) -> str:
    """A hidden session row of the tree, to hold rows only other sessions show."""
    holder = str(uuid.uuid4())
    cx.run(
        q.INSERT_SESSION,
        {
            "id": holder,
            # names never hold control characters (codec.check_name): this one is
            # unique and can never be looked up
            "name": "\x01held:" + holder,
            "created_at": when,
            "updated_at": when,
            "metadata": "{}",
            "message_count": 0,
            "size_bytes": 0,
            "root_id": root_id,
            "parent_id": None,
            "fork_point": None,
            "last_id": 0,
            "holder": True,
            "inherit_id": None,
            "inherit_upto": None,
            "inherit_count": 0,
            "inherit_size": 0,
        },
    )
    return holder


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _gaps(within: tuple[int, int], kept: list[tuple[int, int]]) -> list[tuple[int, int]]:
    gaps, at = [], within[0]
    for lo, hi in kept:
        if lo > at:
            gaps.append((at, lo))
        at = max(at, hi)
    if at < within[1]:
        gaps.append((at, within[1]))
    return gaps


def _continued_holder(
    cx: Executor, root: str, session_id: str, refs: Sequence[Sequence[Any]], lo: int
) -> tuple[str, dict[int, Sequence[Any]]] | None:
    """The holder the detached rows can join instead of a new one, with the segment
    each ref continues (by the ref's segment id); None unless every ref starts where a
    segment of its own list on that one holder ends (a session truncated again under
    the same branches: a sliding window), no segment on the holder reaches past there,
    no session inheriting a ref's list takes one of the two and not the other, and the
    rows continue the holder's places: the joined segment's count, size and k-th row
    come from its two ends (:func:`_span`), so its rows must be numbered in one run. A
    holder of *another* session's rows that the same segments continue from (T forked
    S, V forked T; S cleared, then T truncated) numbers its rows from 1 like the
    session does, and is not joined. Every ref is checked: the first row each moves must
    continue the holder's newest row."""
    holder: str | None = None
    before: dict[int, Sequence[Any]] = {}
    for seg_id, viewer, s_lo, s_hi, _, _ in refs:
        if int(s_lo) < lo:  # a piece of the session's own rows stays before it
            return None
        found = cx.rows(q.PREVIOUS_SEGMENT, {"session_id": viewer, "hi": s_lo})
        if not found or int(found[0][2]) != int(s_lo):
            return None
        if holder is None:
            holder = str(found[0][1])
        elif str(found[0][1]) != holder:
            return None
        if cx.rows(q.LINKED_WITHIN, {"session_id": viewer, "lo": s_lo, "hi": s_hi}):
            return None
        before[int(seg_id)] = found[0]
    if holder is None or not cx.rows(q.HOLDER_LOCK, {"session_id": holder}):
        return None
    start = min(int(r[2]) for r in refs)
    top = cx.rows(q.OWNER_MAX_HI, {"owner": holder, "tree": root})[0][0]
    if top is not None and int(top) > start:
        return None
    held = _ends(cx, root, holder, -1, BEYOND)
    if held is None:
        return None
    _, _, _, _, _, held_ord, held_cum = held
    for s_lo in {int(r[2]) for r in refs}:
        moved = _ends(cx, root, session_id, s_lo, BEYOND)
        if moved is None:
            return None
        _, first_ord, first_cum, first_size, _, _, _ = moved
        if first_ord != held_ord + 1 or first_cum != held_cum + first_size:
            return None
    return holder, before


def detach(cx: Executor, session_id: str, root_id: str, lo: int, hi: int, when: datetime) -> None:
    """``session_id`` stops showing its own rows with ``lo < id <= hi``: those another
    session's segment shows move to a holder (and the segments with them), the others
    are deleted. The holder is a new one, or the one the same segments continue from
    (:func:`_continued_holder`). The session's totals are the caller's to adjust."""
    root = root_id
    refs = [
        r
        for r in cx.rows(q.SEGMENTS_ON, {"owner": session_id, "tree": root})
        if int(r[2]) < hi and int(r[3]) > lo
    ]
    if not refs:
        cx.run(q.DELETE_RANGE, {"owner": session_id, "tree": root_id, "lo": lo, "hi": hi})
        return
    shown = _merge((max(int(r[2]), lo), min(int(r[3]), hi)) for r in refs)
    continued = _continued_holder(cx, root, session_id, refs, lo)
    holder = continued[0] if continued else new_holder(cx, root_id, when)
    moved_count = moved_size = 0
    for a, b in shown:
        count, size = _stats(cx, root, session_id, a, b)
        cx.run(q.MOVE_RANGE, {"owner": session_id, "tree": root_id, "lo": a, "hi": b, "to": holder})
        moved_count += count
        moved_size += size
    for a, b in _gaps((lo, hi), shown):
        cx.run(q.DELETE_RANGE, {"owner": session_id, "tree": root_id, "lo": a, "hi": b})
    cx.run(
        q.BUMP_TOTALS,
        {"session_id": holder, "count_delta": moved_count, "size_delta": moved_size},
    )
    for seg_id, viewer, s_lo, s_hi, s_count, s_size in refs:
        s_lo, s_hi, s_count, s_size = int(s_lo), int(s_hi), int(s_count), int(s_size)
        a, b = max(s_lo, lo), min(s_hi, hi)
        mid_count, mid_size = _stats(cx, root, holder, a, b)
        rest_count, rest_size = s_count - mid_count, s_size - mid_size
        left = (0, 0)
        if s_lo < a and s_hi > b:
            left = _stats(cx, root, session_id, s_lo, a)
        elif s_lo < a:
            left = (rest_count, rest_size)
        right = (rest_count - left[0], rest_size - left[1])
        if continued is not None:
            # the segment before it, on the same holder, takes the moved rows
            prev_id, _, _, prev_count, prev_size, prev_lo = continued[1][int(seg_id)]
            cx.run(
                q.UPDATE_SEGMENT,
                {
                    "segment_id": prev_id,
                    "owner": holder,
                    "lo": int(prev_lo),
                    "hi": b,
                    "message_count": int(prev_count) + mid_count,
                    "size_bytes": int(prev_size) + mid_size,
                },
            )
            if right[0] > 0:
                cx.run(
                    q.UPDATE_SEGMENT,
                    {
                        "segment_id": seg_id,
                        "owner": session_id,
                        "lo": b,
                        "hi": s_hi,
                        "message_count": right[0],
                        "size_bytes": right[1],
                    },
                )
            else:
                cx.run(q.DELETE_SEGMENT, {"segment_id": seg_id})
            continue
        # the pieces the segment becomes, oldest first, none empty (an empty one would
        # keep an owner, or later a holder, that shows nothing)
        pieces = [
            (owner, p_lo, p_hi, count, size)
            for owner, p_lo, p_hi, (count, size) in (
                (session_id, s_lo, a, left),
                (holder, a, b, (mid_count, mid_size)),
                (session_id, b, s_hi, right),
            )
            if count > 0
        ]
        if not pieces:
            cx.run(q.DELETE_SEGMENT, {"segment_id": seg_id})
        for i, (owner, p_lo, p_hi, count, size) in enumerate(pieces):
            values = {
                "owner": owner,
                "lo": p_lo,
                "hi": p_hi,
                "message_count": count,
                "size_bytes": size,
            }
            if i == 0:
                cx.run(q.UPDATE_SEGMENT, {"segment_id": seg_id, **values})
            else:
                cx.run(q.INSERT_SEGMENT, {"root_id": root_id, "session_id": viewer, **values})
    if not moved_count and continued is None:  # nothing to hold
        cx.run(q.DELETE_HOLDER, {"session_id": holder})


def reclaim(cx: Executor, owners: Iterable[str], root_id: str) -> None:
    """Delete the rows of the holders among ``owners`` that no segment shows any more
    (and a holder left with none)."""
    root = root_id
    for owner in sorted(set(owners)):
        # a session's own rows it shows itself; only a holder's row is held (locking a
        # session's here would deadlock with its own truncation rewriting this segment)
        if not cx.rows(q.HOLDER_LOCK, {"session_id": owner}):
            continue
        refs = cx.rows(q.SEGMENTS_ON, {"owner": owner, "tree": root_id})
        if not refs:
            cx.run(q.DELETE_RANGE, {"owner": owner, "tree": root_id, "lo": -1, "hi": BEYOND})
            cx.run(q.DELETE_HOLDER, {"session_id": owner})
            continue
        shown = _merge((int(r[2]), int(r[3])) for r in refs)
        gone_count = gone_size = 0
        for a, b in _gaps((-1, BEYOND), shown):
            count, size = _stats(cx, root, owner, a, b)
            if count:
                cx.run(q.DELETE_RANGE, {"owner": owner, "tree": root_id, "lo": a, "hi": b})
                gone_count += count
                gone_size += size
        if gone_count:
            cx.run(
                q.BUMP_TOTALS,
                {"session_id": owner, "count_delta": -gone_count, "size_delta": -gone_size},
            )


def _drop_segment(cx: Executor, part: Part) -> None:
    cx.run(q.DELETE_SEGMENT, {"segment_id": part.segment_id})


def _set_segment(cx: Executor, part: Part) -> None:
    cx.run(
        q.UPDATE_SEGMENT,
        {
            "segment_id": part.segment_id,
            "owner": part.owner,
            "lo": part.lo,
            "hi": part.hi,
            "message_count": part.count,
            "size_bytes": part.size,
        },
    )


def cut_oldest(
    cx: Executor,
    session_id: str,
    root_id: str,
    upto_id: int,
    keep: int,
    when: datetime,
) -> tuple[int, int]:
    """Of the rows the session shows with ``id <= upto_id``, keep the newest ``keep``
    (a truncation). Returns the (count, size) it stopped showing."""
    root = root_id
    link = link_of(cx, root, session_id)
    lo = link.own_lo
    boundary = _at(cx, root, session_id, lo, upto_id, keep, True)
    if boundary is not None:
        # the cut falls in the session's own rows: every segment goes too
        cut_id = boundary
        count, size = _span(cx, root, session_id, lo, cut_id)
        parts = segments(cx, root, session_id) if link.segmented else []
        release(cx, root, session_id)
        detach(cx, session_id, root_id, lo, cut_id, when)
        listed = [p for p in parts if p.listed_by == session_id]
        for part in listed:
            _drop_segment(cx, part)
        if link.inherit_id:
            _unlink(cx, session_id)
        reclaim(cx, (p.owner for p in listed), root_id)
        return count + sum(p.count for p in parts), size + sum(p.size for p in parts)
    left = keep - _span(cx, root, session_id, lo, upto_id)[0]
    if not link.segmented:
        return 0, 0
    parts = segments(cx, root, session_id)
    copies: list[Part] = []  # inherited parts it keeps: copied into its own list
    cut: Part | None = None  # the part it keeps the newest rows of
    gone_count = gone_size = 0
    touched: list[Part] = []  # parts of its own list dropped or cut
    for part in reversed(parts):
        mine = part.listed_by == session_id
        if left >= part.count:
            left -= part.count
            if not mine:
                copies.append(part)
            continue
        if left > 0:
            boundary_id = _nth(cx, root, part, part.count - left)
            size = _span(cx, root, part.owner, boundary_id, part.hi)[1]
            gone_count += part.count - left
            gone_size += part.size - size
            cut = Part(
                part.owner, boundary_id, part.hi, left, size, part.segment_id, part.listed_by
            )
            left = 0
        else:
            gone_count += part.count
            gone_size += part.size
        if mine:
            touched.append(part)
    if not gone_count and not touched:
        return 0, 0
    release(cx, root, session_id)
    for part in touched:
        if cut is None or part.segment_id != cut.segment_id:
            _drop_segment(cx, part)
    if cut is not None:
        if cut.listed_by == session_id:
            _set_segment(cx, cut)
        else:
            _insert_segment(cx, root, session_id, cut)
    for part in copies:
        _insert_segment(cx, root, session_id, part)
    if link.inherit_id:
        _unlink(cx, session_id)
    reclaim(cx, (p.owner for p in touched), root_id)
    return gone_count, gone_size


def drop_newest(
    cx: Executor, session_id: str, root_id: str, n: int, when: datetime
) -> list[MessageRecord]:
    """Stop showing the newest ``n`` rows of the session (fewer if it shows fewer);
    returns them, oldest first. The caller adjusts the totals by their count and size."""
    root = root_id
    link = link_of(cx, root, session_id)
    rows = list(
        cx.rows(
            q.RANGE_DESC,
            {"owner": session_id, "tree": root_id, "lo": link.own_lo, "hi": BEYOND, "n": n},
        )
    )
    own = len(rows)
    touched: list[Part] = []
    if own < n and link.segmented:
        parts = tail_parts(cx, root, session_id, n - own)
        oldest: Part | None = None
        partial: Part | None = None
        for part in reversed(parts):
            want = n - len(rows)
            if want <= 0:
                break
            if part.count <= 0:
                continue
            taken = list(cx.rows(q.RANGE_DESC, {**_range(part, root), "n": want}))
            if len(taken) < min(want, part.count):
                raise damaged(session_id, f"a segment's count ({part.count}) is more than its rows")
            rows.extend(taken)
            oldest = part
            if len(taken) < part.count:
                partial = Part(
                    part.owner,
                    part.lo,
                    int(taken[-1][0]) - 1,
                    part.count - len(taken),
                    part.size - sum(int(r[6]) for r in taken),
                    part.segment_id,
                    part.listed_by,
                )
            if part.listed_by == session_id:
                touched.append(part)
        if oldest is not None:
            release(cx, root, session_id)
            if oldest.listed_by == session_id:
                # only its own list changes
                for part in touched:
                    if partial is not None and part.segment_id == partial.segment_id:
                        _set_segment(cx, partial)
                    else:
                        _drop_segment(cx, part)
            else:
                # into what it inherits: its own list goes, the link stops before the
                # oldest part it no longer shows whole (no segment reaches across a lo)
                cx.run(q.DELETE_SEGMENTS_OF, {"session_id": session_id})
                gone = [p for p in parts if p.hi >= oldest.hi and p.listed_by != session_id]
                _link(
                    cx,
                    session_id,
                    link.inherit_id,
                    min(link.upto or 0, oldest.lo),
                    link.count - sum(p.count for p in gone),
                    link.size - sum(p.size for p in gone),
                )
                if partial is not None:
                    _insert_segment(cx, root, session_id, partial)
    if own:
        detach(cx, session_id, root_id, int(rows[own - 1][0]) - 1, BEYOND, when)
    reclaim(cx, (p.owner for p in touched), root_id)
    return [message_of(r) for r in reversed(rows)]


def span(cx: Executor, root: str, owner: str, lo: int, hi: int) -> tuple[int, int]:
    """(count, size) of a range of rows a session shows whole (see :func:`_span`)."""
    return _span(cx, root, owner, lo, hi)


def nth_from_end(cx: Executor, root: str, owner: str, lo: int, hi: int, k: int) -> int | None:
    """The id of the range's ``k``-th row from its newest (0: the newest), or None."""
    return _at(cx, root, owner, lo, hi, k, True)


def span_upto(cx: Executor, root: str, owner: str, lo: int, last: int) -> tuple[int, int] | None:
    """(count, size) of ``owner``'s rows in ``lo < id <= last`` (a range it shows whole)
    when message ``last`` is one of them, by places in one statement; None when it is
    not, or places cannot tell (the caller reads)."""
    ends = _ends(cx, root, owner, lo, last)
    if ends is None or ends[4] != last:
        return None
    _, first_ord, first_cum, first_size, _, last_ord, last_cum = ends
    count, size = last_ord - first_ord + 1, last_cum - first_cum + first_size
    if count <= 0 or size < 0:
        return None
    return count, size


def cut_from_end(cx: Executor, root: str, owner: str, lo: int, k: int) -> tuple[int, int] | None:
    """Where ``owner``'s rows above ``lo`` (a range it shows whole) lose their newest
    ``k`` (``k >= 1``): the id of the newest row kept and the size of the ``k`` left out,
    by place in one statement (what :func:`nth_from_end` then :func:`span` find in three);
    None when places cannot tell (fewer rows, or rows without places: the caller reads)."""
    found = cx.rows(q.RANGE_CUT, {"owner": owner, "tree": root, "lo": lo, "hi": BEYOND, "k": k})
    if not found or any(v is None for v in found[0]):
        return None
    _, first_ord, _, _, _, last_ord, last_cum, boundary, boundary_cum = (int(v) for v in found[0])
    out_size = last_cum - boundary_cum
    # the boundary's place is the last's minus k, at or after the first's: the k rows
    # after it are the range's newest (its rows are consecutive), and sizes only grow
    if boundary_cum < 0 or out_size < 0 or last_ord - k < first_ord:
        return None
    return boundary, out_size

"""Copy-on-write branches over SQL: a session's view is its segments, then its own rows.

A session shows, oldest first, the rows of each of its *segments* (the rows of another
session, its ``owner``, with ``lo < id <= hi``) and then its own rows (``session_id`` is
its id). Message ids ascend across the whole store, and every row a branch inherits is
older than the branch, so the view is in id order. A fork copies no row: it writes the
source's segments, cut at the fork point, plus one segment on the source's own rows.

Every session's own rows are exactly the own rows it shows. When a session stops showing
some of them (truncate, clear, drop the newest, delete) those that another session's
segment still shows move to a *holder* (a hidden ``sessions`` row of the same tree) and
the segments follow them; the others are deleted. A holder's rows that no segment shows
any more are deleted as soon as a segment stops showing them (:func:`reclaim`), and an
empty holder with them, so storage never keeps a row nothing shows.

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
one that read it before taking the lock.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ...models import MessageRecord
from ..base import not_shown
from . import statements as q
from .executors import Executor
from .rows import message_of

__all__ = [
    "BEYOND",
    "Part",
    "cut_oldest",
    "detach",
    "drop_newest",
    "fork_parts",
    "lock_tree",
    "new_holder",
    "own_lo",
    "own_part",
    "read_tail",
    "reclaim",
    "segments",
]

#: an upper bound above every message id
BEYOND = 2**62


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


def segments(cx: Executor, root: str, session_id: str) -> list[Part]:
    """The session's segments, oldest first."""
    params = {"session_id": session_id, "tree": root}
    return [
        Part(str(owner), int(lo), int(hi), int(count), int(size), int(seg))
        for owner, lo, hi, count, size, seg in cx.rows(q.SEGMENTS, params)
    ]


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


def _range(part: Part, root: str, lo: int | None = None, hi: int | None = None) -> dict[str, Any]:
    return {
        "owner": part.owner,
        "tree": root,
        "lo": part.lo if lo is None else lo,
        "hi": part.hi if hi is None else hi,
    }


def _stats(cx: Executor, root: str, owner: str, lo: int, hi: int) -> tuple[int, int]:
    params = {"owner": owner, "tree": root, "lo": lo, "hi": hi}
    count, size, _ = cx.rows(q.RANGE_STATS, params)[0]
    return int(count), int(size)


def _nth(cx: Executor, root: str, part: Part, k: int) -> int:
    """The id of the part's ``k``-th row (1-based, 1 <= k <= count), read from the nearer
    end (an OFFSET costs what it skips)."""
    if k <= part.count - k + 1:
        found = cx.rows(q.RANGE_NTH_ASC, {**_range(part, root), "k": k - 1})
    else:
        found = cx.rows(q.RANGE_NTH_DESC, {**_range(part, root), "k": part.count - k})
    return int(found[0][0])


def _head(cx: Executor, root: str, part: Part, boundary: int, count: int) -> Part:
    """The part's rows up to ``boundary`` (``count`` of them), sized from the nearer end."""
    if count <= part.count - count:
        size = _stats(cx, root, part.owner, part.lo, boundary)[1]
    else:
        size = part.size - _stats(cx, root, part.owner, boundary, part.hi)[1]
    return Part(part.owner, part.lo, boundary, count, size)


def read_tail(cx: Executor, root: str, parts: Sequence[Part], limit: int) -> list[Sequence[Any]]:
    """The newest ``limit`` rows of the parts, newest first."""
    out: list[Sequence[Any]] = []
    for part in reversed(parts):
        if len(out) >= limit:
            break
        if part.count <= 0 and part.segment_id is not None:
            continue
        out.extend(cx.rows(q.RANGE_DESC, {**_range(part, root), "n": limit - len(out)}))
    return out


def fork_parts(
    cx: Executor, root: str, parts: Sequence[Part], point: int | None, after_id: int | None
) -> list[Part]:
    """The parts a fork of a view made of ``parts`` starts with: its first ``point``
    messages, or those up to and including message ``after_id``, or all of them."""
    total = sum(p.count for p in parts)
    if after_id is not None:
        point = None
        seen = 0
        for part in parts:
            if part.lo < after_id <= part.hi and cx.rows(
                q.RANGE_HAS, {**_range(part, root), "message_id": after_id}
            ):
                count, _ = _stats(cx, root, part.owner, part.lo, after_id)
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
            out.append(Part(part.owner, part.lo, part.hi, part.count, part.size))
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


def detach(cx: Executor, session_id: str, root_id: str, lo: int, hi: int, when: datetime) -> None:
    """``session_id`` stops showing its own rows with ``lo < id <= hi``: those another
    session's segment shows move to a new holder (and the segments with them), the
    others are deleted. The session's totals are the caller's to adjust."""
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
    holder = new_holder(cx, root_id, when)
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
    if not moved_count:  # the segments showed none of the rows: nothing to hold
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
    gone_count = gone_size = 0
    parts = segments(cx, root_id, session_id)
    lo = own_lo(parts)
    boundary = cx.rows(
        q.RANGE_NTH_DESC,
        {"owner": session_id, "tree": root_id, "lo": lo, "hi": upto_id, "k": keep},
    )
    owners: list[str] = []
    if boundary:
        # the cut falls in the session's own rows: every segment goes too
        cut = int(boundary[0][0])
        count, size = _stats(cx, root, session_id, lo, cut)
        detach(cx, session_id, root_id, lo, cut, when)
        gone_count, gone_size = count, size
        for part in parts:
            _drop_segment(cx, part)
            owners.append(part.owner)
            gone_count += part.count
            gone_size += part.size
    else:
        left = keep - _stats(cx, root, session_id, lo, upto_id)[0]
        for part in reversed(parts):
            if left >= part.count:
                left -= part.count
                continue
            if left > 0:
                cut = _nth(cx, root, part, part.count - left)
                size = _stats(cx, root, part.owner, cut, part.hi)[1]
                gone_count += part.count - left
                gone_size += part.size - size
                part.lo, part.count, part.size = cut, left, size
                _set_segment(cx, part)
                left = 0
            else:
                _drop_segment(cx, part)
                gone_count += part.count
                gone_size += part.size
            owners.append(part.owner)
    reclaim(cx, owners, root_id)
    return gone_count, gone_size


def drop_newest(
    cx: Executor, session_id: str, root_id: str, n: int, when: datetime
) -> list[MessageRecord]:
    """Stop showing the newest ``n`` rows of the session (fewer if it shows fewer);
    returns them, oldest first. The caller adjusts the totals by their count and size."""
    root = root_id
    parts = segments(cx, root_id, session_id)
    rows = list(
        cx.rows(
            q.RANGE_DESC,
            {"owner": session_id, "tree": root_id, "lo": own_lo(parts), "hi": BEYOND, "n": n},
        )
    )
    own = len(rows)
    owners: list[str] = []
    if own < n:
        for part in reversed(parts):
            want = n - len(rows)
            if want <= 0:
                break
            taken = list(cx.rows(q.RANGE_DESC, {**_range(part, root), "n": want}))
            rows.extend(taken)
            if len(taken) >= part.count:
                _drop_segment(cx, part)
            else:
                part.hi = int(taken[-1][0]) - 1
                part.count -= len(taken)
                part.size -= sum(int(r[6]) for r in taken)
                _set_segment(cx, part)
            owners.append(part.owner)
    if own:
        detach(cx, session_id, root_id, int(rows[own - 1][0]) - 1, BEYOND, when)
    reclaim(cx, owners, root_id)
    return [message_of(r) for r in reversed(rows)]

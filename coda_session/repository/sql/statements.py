"""The SQL the repository runs, as SQLAlchemy Core, compiled once per dialect.

Every value is a bound parameter. Statements are plain module-level constructs so that
both executors (the one-trip SQLite path and the generic SQLAlchemy path) share them.
"""

from __future__ import annotations

from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from .tables import messages as m
from .tables import search_index as x
from .tables import segments as g
from .tables import sessions as s

__all__ = [
    "BUMP_TOTALS",
    "COPY_SEGMENTS",
    "DELETE_HOLDER",
    "DELETE_LOCK",
    "DELETE_RANGE",
    "DELETE_SEGMENT",
    "DELETE_SEGMENTS_OF",
    "DELETE_SESSION",
    "HOLDER_LOCK",
    "INDEX_VERSION_OF",
    "INHERIT_OF",
    "INSERT_MESSAGE",
    "INSERT_MESSAGE_RETURNING",
    "INSERT_SEGMENT",
    "INSERT_SESSION",
    "LAST_MESSAGE_ID",
    "LAST_ORD",
    "LINKED_WITHIN",
    "LIST_SESSIONS",
    "LIST_STATS",
    "LIST_TREE",
    "MARK_ALL_PENDING",
    "MARK_INDEXED",
    "MARK_WRITTEN",
    "MAX_MESSAGE_ID",
    "MESSAGES_FROM",
    "MESSAGES_NEWEST",
    "MOVE_RANGE",
    "OWNER_MAX_HI",
    "PENDING_BETWEEN",
    "PENDING_COUNT",
    "PENDING_FIRST",
    "PENDING_FIRST_LOCKED",
    "PENDING_NEWEST",
    "PENDING_UPTO",
    "PREVIOUS_SEGMENT",
    "RANGE_ALL",
    "RANGE_ASC",
    "RANGE_BOUNDS",
    "RANGE_BY_ORD",
    "RANGE_CUT",
    "RANGE_DESC",
    "RANGE_ENDS",
    "RANGE_HAS",
    "RANGE_NTH_ASC",
    "RANGE_NTH_DESC",
    "RANGE_STATS",
    "RANGE_TEXT",
    "REFERERS",
    "RESOLVED",
    "RESOLVED_ABOVE",
    "ROOT_OF",
    "SEGMENTS",
    "SEGMENTS_ON",
    "SESSION_BY_ID",
    "SESSION_BY_NAME",
    "SESSION_LOCK",
    "SESSION_METADATA",
    "SESSION_TO_FORK",
    "SET_INDEX_VERSION",
    "SET_INHERIT",
    "SET_LAST_MESSAGE_ID",
    "SET_SESSION_TOTALS",
    "TAIL_PARTS",
    "TAIL_ROWS",
    "TREE_LOCK",
    "TREE_SESSION_IDS",
    "UPDATE_SEGMENT",
    "UPDATE_SESSION",
    "UPDATE_SESSION_METADATA",
    "VIEW_ROWS",
    "TreeLock",
    "is_constant",
]


_SESSION_COLS = (
    s.c.id,
    s.c.name,
    s.c.created_at,
    s.c.updated_at,
    s.c["metadata"],
    s.c.message_count,
    s.c.size_bytes,
)
_MESSAGE_COLS = (
    m.c.id,
    m.c.role,
    m.c.content,
    m.c.timestamp,
    m.c["metadata"],
    m.c.content_zlib,
    m.c.size_bytes,
    m.c.char_count,
)

# -- the rules every statement keeps: build them with these, never by hand ---------------


def in_tree(table: sa.FromClause) -> sa.ColumnElement[bool]:
    """``table``'s rows of one branching tree. Every statement on a tree's sessions,
    segments or messages names the tree's key (``:tree``): it is the shard key (see the
    README), and the index every such statement reads leads with it."""
    return table.c.root_id == sa.bindparam("tree")


def tree_key(alias: str) -> str:
    """:func:`in_tree` in a text statement, for the table aliased ``alias`` (cast:
    PostgreSQL infers no parameter's type there)."""
    return f"{alias}.root_id = CAST(:tree AS TEXT)"


def visible(table: sa.FromClause = s) -> sa.ColumnElement[bool]:
    """Sessions a caller may see: never a holder (the hidden row that keeps the rows only
    other sessions' segments show)."""
    return table.c.holder == sa.false()


_TREE_COLS = (s.c.root_id, s.c.parent_id, s.c.fork_point)
_RECORD_COLS = (*_SESSION_COLS, s.c.metadata_version, s.c.last_message_id, *_TREE_COLS)
SESSION_BY_NAME = sa.select(*_RECORD_COLS).where(s.c.name == sa.bindparam("name"), visible())
SESSION_BY_ID = sa.select(*_RECORD_COLS).where(s.c.id == sa.bindparam("session_id"), visible())
LIST_SESSIONS = (
    sa.select(*_SESSION_COLS, *_TREE_COLS).where(visible()).order_by(s.c.created_at, s.c.name)
)
# every session of one tree (the tree's key names the shard)
LIST_TREE = (
    sa.select(*_SESSION_COLS, *_TREE_COLS)
    .where(in_tree(s), visible())
    .order_by(s.c.created_at, s.c.name)
)
ROOT_OF = sa.select(s.c.root_id).where(s.c.id == sa.bindparam("session_id"))
LAST_MESSAGE_ID = sa.select(sa.func.coalesce(sa.func.max(m.c.id), 0)).where(
    m.c.session_id == sa.bindparam("session_id")
)
SET_SESSION_TOTALS = (
    sa.update(s)
    .where(s.c.id == sa.bindparam("session_id"))
    .values(
        updated_at=sa.bindparam("updated_at", type_=s.c.updated_at.type),
        metadata=sa.bindparam("metadata", type_=s.c["metadata"].type),
        message_count=sa.bindparam("message_count"),
        size_bytes=sa.bindparam("size_bytes"),
        last_message_id=sa.bindparam("last_id"),
    )
)
INSERT_SESSION = sa.insert(s).values(
    id=sa.bindparam("id"),
    name=sa.bindparam("name"),
    created_at=sa.bindparam("created_at", type_=s.c.created_at.type),
    updated_at=sa.bindparam("updated_at", type_=s.c.updated_at.type),
    metadata=sa.bindparam("metadata", type_=s.c["metadata"].type),
    message_count=sa.bindparam("message_count"),
    size_bytes=sa.bindparam("size_bytes"),
    root_id=sa.bindparam("root_id"),
    parent_id=sa.bindparam("parent_id"),
    fork_point=sa.bindparam("fork_point", type_=sa.BigInteger),
    last_message_id=sa.bindparam("last_id", type_=sa.BigInteger),
    holder=sa.bindparam("holder", type_=sa.Boolean),
    inherit_id=sa.bindparam("inherit_id", type_=sa.Text),
    inherit_upto=sa.bindparam("inherit_upto", type_=sa.BigInteger),
    inherit_count=sa.bindparam("inherit_count", type_=sa.BigInteger),
    inherit_size=sa.bindparam("inherit_size", type_=sa.BigInteger),
)
_bump = {
    "updated_at": sa.bindparam("updated_at", type_=s.c.updated_at.type),
    "message_count": s.c.message_count + sa.bindparam("count_delta", type_=sa.BigInteger),
    "size_bytes": s.c.size_bytes + sa.bindparam("size_delta", type_=sa.BigInteger),
}
# One statement checks that the session exists, moves its counters and (as an UPDATE)
# holds the row: under READ COMMITTED it applies to, and returns, the newest committed
# version of the row, so its unchanged last_message_id is the newest id before this save.
# The metadata comes back only when its version is not the one the caller saw.
UPDATE_SESSION = (
    sa.update(s)
    .where(s.c.id == sa.bindparam("session_id"), in_tree(s))
    .values(**_bump)
    .returning(
        s.c.message_count,
        s.c.size_bytes,
        s.c.metadata_version,
        sa.case(
            (s.c.metadata_version == sa.bindparam("seen", type_=sa.BigInteger), sa.null()),
            else_=s.c["metadata"],
        ),
        s.c.last_message_id,
    )
)
UPDATE_SESSION_METADATA = (
    sa.update(s)
    .where(s.c.id == sa.bindparam("session_id"), in_tree(s))
    .values(
        **_bump,
        metadata=sa.bindparam("metadata", type_=s.c["metadata"].type),
        metadata_version=s.c.metadata_version + 1,
    )
    .returning(
        s.c.message_count,
        s.c.size_bytes,
        s.c.metadata_version,
        sa.null(),
        s.c.last_message_id,
    )
)
SET_LAST_MESSAGE_ID = (
    sa.update(s)
    .where(s.c.id == sa.bindparam("session_id"), in_tree(s))
    .values(last_message_id=sa.bindparam("last_id", type_=sa.BigInteger))
)
# lock the session row first on server databases (SQLite's write lock already does)
SESSION_METADATA = (
    sa.select(s.c["metadata"], s.c.metadata_version)
    .where(s.c.id == sa.bindparam("session_id"), in_tree(s))
    .with_for_update()
)
SESSION_LOCK = (
    sa.select(s.c.metadata_version)
    .where(s.c.id == sa.bindparam("session_id"), in_tree(s))
    .with_for_update()
)
INSERT_MESSAGE = sa.insert(m).values(
    session_id=sa.bindparam("session_id"),
    role=sa.bindparam("role"),
    content=sa.bindparam("content"),
    timestamp=sa.bindparam("timestamp", type_=m.c.timestamp.type),
    metadata=sa.bindparam("metadata", type_=m.c["metadata"].type),
    content_zlib=sa.bindparam("content_zlib", type_=m.c.content_zlib.type),
    size_bytes=sa.bindparam("size_bytes", type_=sa.BigInteger),
    char_count=sa.bindparam("char_count", type_=sa.BigInteger),
    root_id=sa.bindparam("root_id"),
    ord=sa.bindparam("ord", type_=sa.BigInteger),
    cum_size=sa.bindparam("cum_size", type_=sa.BigInteger),
)
INSERT_MESSAGE_RETURNING = INSERT_MESSAGE.returning(m.c.id, sort_by_parameter_order=True)
DELETE_SESSION = sa.delete(s).where(s.c.id == sa.bindparam("session_id"))
# a delete holds the session row before it removes the messages: a save that committed
# messages meanwhile is then seen (READ COMMITTED), not left to fail the foreign key
DELETE_LOCK = sa.select(s.c.id).where(s.c.id == sa.bindparam("session_id")).with_for_update()

# -- the branching tree (segments: see tables.SegmentRow) ------------------------------

# every statement of a branch's rows names the tree's key (the shard key, see the README)
_range = (
    in_tree(m),
    m.c.session_id == sa.bindparam("owner"),
    m.c.id > sa.bindparam("lo", type_=sa.BigInteger),
    m.c.id <= sa.bindparam("hi", type_=sa.BigInteger),
)
#: a session's segments, oldest first: by ``hi`` (a view's runs ascend in id, and their
#: ``hi`` strictly; ``lo`` may be 0 for several, a run of a session's own rows starts there)
SEGMENTS = (
    sa.select(g.c.owner_id, g.c.lo, g.c.hi, g.c.message_count, g.c.size_bytes, g.c.id)
    .where(in_tree(g), g.c.session_id == sa.bindparam("session_id"))
    .order_by(g.c.hi)
)
#: the segments that show rows of ``owner`` (other sessions' views of them)
SEGMENTS_ON = sa.select(
    g.c.id, g.c.session_id, g.c.lo, g.c.hi, g.c.message_count, g.c.size_bytes
).where(g.c.owner_id == sa.bindparam("owner"), in_tree(g))
INSERT_SEGMENT = sa.insert(g).values(
    root_id=sa.bindparam("root_id"),
    session_id=sa.bindparam("session_id"),
    owner_id=sa.bindparam("owner"),
    lo=sa.bindparam("lo", type_=sa.BigInteger),
    hi=sa.bindparam("hi", type_=sa.BigInteger),
    message_count=sa.bindparam("message_count", type_=sa.BigInteger),
    size_bytes=sa.bindparam("size_bytes", type_=sa.BigInteger),
)
UPDATE_SEGMENT = (
    sa.update(g)
    .where(g.c.id == sa.bindparam("segment_id"))
    .values(
        owner_id=sa.bindparam("owner"),
        lo=sa.bindparam("lo", type_=sa.BigInteger),
        hi=sa.bindparam("hi", type_=sa.BigInteger),
        message_count=sa.bindparam("message_count", type_=sa.BigInteger),
        size_bytes=sa.bindparam("size_bytes", type_=sa.BigInteger),
    )
)
_own_list = sa.select(
    sa.func.max(g.c.hi).label("hi"),
    sa.func.coalesce(sa.func.sum(g.c.message_count), 0).label("count"),
    sa.func.coalesce(sa.func.sum(g.c.size_bytes), 0).label("size"),
).where(g.c.session_id == sa.bindparam("session_id"), in_tree(g))
_own = _own_list.subquery()
#: a session's inheritance link (the session, the bound, what it shows through it), and
#: the newest ``hi`` and the totals of its own segments
INHERIT_OF = (
    sa.select(
        s.c.inherit_id,
        s.c.inherit_upto,
        s.c.inherit_count,
        s.c.inherit_size,
        _own.c.hi,
        _own.c.count,
        _own.c.size,
    )
    .select_from(s.join(_own, sa.true()))
    .where(s.c.id == sa.bindparam("session_id"))
)
#: a branch's source (its record's columns, then :data:`INHERIT_OF`'s: its link and its own
#: list), in one statement. Its row is held shared while the fork reads and writes: an
#: append takes no tree lock, and must not add rows above the counters the fork read
#: before it commits (the tree lock, taken first, keeps every other writer out; SQLite's
#: write lock already does both)
SESSION_TO_FORK = (
    sa.select(*_RECORD_COLS, *INHERIT_OF.selected_columns)
    .select_from(s.join(_own, sa.true()))
    .where(
        s.c.id == sa.bindparam("session_id"),
        visible(),
        in_tree(s),
    )
    .with_for_update(read=True, of=s)
)
#: (count, size) of ``session_id``'s own segments with ``hi <= upto``
LIST_STATS = sa.select(
    sa.func.coalesce(sa.func.sum(g.c.message_count), 0),
    sa.func.coalesce(sa.func.sum(g.c.size_bytes), 0),
).where(
    g.c.session_id == sa.bindparam("session_id"),
    g.c.hi <= sa.bindparam("upto", type_=sa.BigInteger),
)
#: the sessions whose views start with ``session_id``'s segments, and up to where
REFERERS = (
    sa.select(s.c.id, s.c.inherit_upto)
    .where(s.c.inherit_id == sa.bindparam("session_id"))
    .order_by(s.c.id)
)
SET_INHERIT = (
    sa.update(s)
    .where(s.c.id == sa.bindparam("session_id"))
    .values(
        inherit_id=sa.bindparam("inherit_id", type_=sa.Text),
        inherit_upto=sa.bindparam("inherit_upto", type_=sa.BigInteger),
        inherit_count=sa.bindparam("inherit_count", type_=sa.BigInteger),
        inherit_size=sa.bindparam("inherit_size", type_=sa.BigInteger),
    )
)
#: copies of ``session_id``'s own segments with ``hi <= upto`` into the list of ``to``
COPY_SEGMENTS = sa.insert(g).from_select(
    ["root_id", "session_id", "owner_id", "lo", "hi", "message_count", "size_bytes"],
    sa.select(
        g.c.root_id,
        sa.bindparam("to", type_=sa.Text),
        g.c.owner_id,
        g.c.lo,
        g.c.hi,
        g.c.message_count,
        g.c.size_bytes,
    ).where(
        g.c.session_id == sa.bindparam("session_id"),
        g.c.hi <= sa.bindparam("upto", type_=sa.BigInteger),
    ),
)
# The chain of inheritance links, walked by the database in one statement: (sid, cut) is
# one list and the bound its segments are taken up to. UNION, not UNION ALL: a cycle (a
# damaged link) repeats a pair and ends the walk; its segments then repeat, which the
# caller reports as damage. Every parameter is cast: PostgreSQL infers no type there.
_CHAIN = (
    "chain(sid, cut) AS (SELECT CAST(:session_id AS TEXT), CAST(:beyond AS BIGINT) "
    "UNION SELECT s.inherit_id, CASE WHEN s.inherit_upto < c.cut THEN s.inherit_upto "
    "ELSE c.cut END FROM chain c JOIN sessions s ON s.id = c.sid "
    "WHERE s.inherit_id IS NOT NULL)"
)
_PARTS = (
    "SELECT g.owner_id, g.lo, g.hi, g.message_count, g.size_bytes, g.id, g.session_id "  # noqa: S608
    "FROM chain c JOIN session_segments g ON g.session_id = c.sid "
    f"AND {tree_key('g')} AND g.hi <= c.cut ORDER BY g.hi"
)
#: a session's view's segments, inherited and its own, oldest first, with the session
#: whose list holds each (``session_id``)
RESOLVED = sa.text(f"WITH RECURSIVE {_CHAIN} {_PARTS}")
#: the same, only the segments with ``hi > floor``: the walk stops at the first list whose
#: bound is ``floor`` or less (all it and the lists below show is older), so a page of a
#: deep branch's newest messages reads only the links it needs
RESOLVED_ABOVE = sa.text(
    "WITH RECURSIVE chain(sid, cut) AS (SELECT CAST(:session_id AS TEXT), "  # noqa: S608
    "CAST(:beyond AS BIGINT) UNION SELECT s.inherit_id, CASE WHEN s.inherit_upto < c.cut "
    "THEN s.inherit_upto ELSE c.cut END FROM chain c JOIN sessions s ON s.id = c.sid "
    "WHERE s.inherit_id IS NOT NULL AND s.inherit_upto > CAST(:floor AS BIGINT)) "
    "SELECT g.owner_id, g.lo, g.hi, g.message_count, g.size_bytes, g.id, g.session_id "
    "FROM chain c JOIN session_segments g ON g.session_id = c.sid "
    f"AND {tree_key('g')} AND g.hi <= c.cut "
    "AND g.hi > CAST(:floor AS BIGINT) ORDER BY g.hi"
)
#: the same, only down the chain until the lists passed show ``need`` messages (one more
#: list than that at most): the segments of a view's newest ``need`` messages among them.
#: ``depth`` bounds a walk whose damaged counts never reach ``need``.
TAIL_PARTS = sa.text(
    "WITH RECURSIVE chain(sid, cut, acc, depth) AS (SELECT CAST(:session_id AS TEXT), "  # noqa: S608
    "CAST(:beyond AS BIGINT), CAST(0 AS BIGINT), 0 UNION ALL SELECT s.inherit_id, "
    "CASE WHEN s.inherit_upto < c.cut THEN s.inherit_upto ELSE c.cut END, c.acc + CAST(("
    "SELECT coalesce(sum(x.message_count), 0) FROM session_segments x "
    f"WHERE x.session_id = c.sid AND {tree_key('x')} AND x.hi <= c.cut) "
    "AS BIGINT), "
    "c.depth + 1 FROM chain c JOIN sessions s ON s.id = c.sid "
    "WHERE s.inherit_id IS NOT NULL AND c.acc < CAST(:need AS BIGINT) "
    f"AND c.depth < CAST(:depth AS INTEGER)) {_PARTS}"
)
#: the newest segment of ``session_id``'s own list with ``hi <= hi``
PREVIOUS_SEGMENT = (
    sa.select(g.c.id, g.c.owner_id, g.c.hi, g.c.message_count, g.c.size_bytes, g.c.lo)
    .where(
        g.c.session_id == sa.bindparam("session_id"),
        g.c.hi <= sa.bindparam("hi", type_=sa.BigInteger),
    )
    .order_by(g.c.hi.desc())
    .limit(1)
)
#: a session inheriting ``session_id``'s list up to a bound with ``lo <= bound < hi``
LINKED_WITHIN = (
    sa.select(s.c.id)
    .where(
        s.c.inherit_id == sa.bindparam("session_id"),
        s.c.inherit_upto >= sa.bindparam("lo", type_=sa.BigInteger),
        s.c.inherit_upto < sa.bindparam("hi", type_=sa.BigInteger),
    )
    .limit(1)
)
#: the newest ``hi`` of the segments on ``owner``'s rows
OWNER_MAX_HI = sa.select(sa.func.max(g.c.hi)).where(
    g.c.owner_id == sa.bindparam("owner"), in_tree(g)
)
#: the place and running size of a session's newest row (where its next rows continue)
# ordered by (session_id, id), the index's order: a server's planner may otherwise walk the
# id index through every other session's rows
LAST_ORD = (
    sa.select(m.c.ord, m.c.cum_size)
    .where(m.c.session_id == sa.bindparam("session_id"))
    .order_by(m.c.session_id.desc(), m.c.id.desc())
    .limit(1)
)
_first = (
    sa.select(m.c.id, m.c.ord, m.c.cum_size, m.c.size_bytes)
    .where(*_range)
    .order_by(m.c.session_id, m.c.id)
    .limit(1)
    .subquery()
)
_last = (
    sa.select(m.c.id, m.c.ord, m.c.cum_size)
    .where(*_range)
    .order_by(m.c.session_id.desc(), m.c.id.desc())
    .limit(1)
).subquery()
#: a range's first and last rows (id, ord, cum_size; the first's size too): no row when
#: the range is empty
RANGE_ENDS = sa.select(
    _first.c.id,
    _first.c.ord,
    _first.c.cum_size,
    _first.c.size_bytes,
    _last.c.id,
    _last.c.ord,
    _last.c.cum_size,
).select_from(_first.join(_last, sa.true()))
#: the id and running size of the range's row at place ``ord``
RANGE_BY_ORD = sa.select(m.c.id, m.c.cum_size).where(
    *_range, m.c.ord == sa.bindparam("ord", type_=sa.BigInteger)
)
_m = m.alias("k")
_kth_from_end = (
    in_tree(_m),
    _m.c.session_id == sa.bindparam("owner"),
    _m.c.id > sa.bindparam("lo", type_=sa.BigInteger),
    _m.c.id <= sa.bindparam("hi", type_=sa.BigInteger),
    _m.c.ord == _last.c.ord - sa.bindparam("k", type_=sa.BigInteger),
)
#: :data:`RANGE_ENDS`, then the id and running size of the row ``k`` places before the
#: last (NULL when there is none): where a fork inside a session's own rows cuts them,
#: and what it leaves out, in one round trip
RANGE_CUT = sa.select(
    *RANGE_ENDS.selected_columns,
    sa.select(_m.c.id).where(*_kth_from_end).scalar_subquery(),
    sa.select(_m.c.cum_size).where(*_kth_from_end).scalar_subquery(),
).select_from(_first.join(_last, sa.true()))
_ROW_COLS = (
    "m.id, m.role, m.content, m.timestamp, m.metadata, m.content_zlib, m.size_bytes, m.char_count"
)
#: every message of a session's view up to ``upto``, oldest first, in one statement: its
#: segments resolved down its links, then its own rows
VIEW_ROWS = sa.text(
    f"WITH RECURSIVE {_CHAIN}, parts(owner_id, lo, hi) AS (SELECT g.owner_id, g.lo, g.hi "  # noqa: S608
    "FROM chain c JOIN session_segments g ON g.session_id = c.sid "
    f"AND {tree_key('g')} AND g.hi <= c.cut UNION ALL "
    "SELECT CAST(:session_id AS TEXT), CAST(-1 AS BIGINT), CAST(:upto AS BIGINT)) "
    f"SELECT {_ROW_COLS} FROM parts p JOIN messages m ON {tree_key('m')} "
    "AND m.session_id = p.owner_id AND m.id > p.lo AND m.id <= p.hi ORDER BY m.id"
)
#: the newest ``need`` messages a session shows through its segments, newest first, in
#: one statement: down its links only as far as they go (``TAIL_PARTS``), and of each
#: segment only its newest rows still wanted (``newer``: what the newer ones show), the
#: first of them found by its place (``ord``) so no segment is read past them (a segment
#: wanted whole is read whole)
TAIL_ROWS = sa.text(
    "WITH RECURSIVE chain(sid, cut, acc, depth) AS (SELECT CAST(:session_id AS TEXT), "  # noqa: S608
    "CAST(:beyond AS BIGINT), CAST(0 AS BIGINT), 0 UNION ALL SELECT s.inherit_id, "
    "CASE WHEN s.inherit_upto < c.cut THEN s.inherit_upto ELSE c.cut END, c.acc + CAST(("
    "SELECT coalesce(sum(x.message_count), 0) FROM session_segments x "
    f"WHERE x.session_id = c.sid AND {tree_key('x')} AND x.hi <= c.cut) "
    "AS BIGINT), c.depth + 1 FROM chain c JOIN sessions s ON s.id = c.sid "
    "WHERE s.inherit_id IS NOT NULL AND c.acc < CAST(:need AS BIGINT) "
    "AND c.depth < CAST(:depth AS INTEGER)), "
    "parts(owner_id, lo, hi, n, newer) AS (SELECT g.owner_id, g.lo, g.hi, g.message_count, "
    "coalesce(sum(g.message_count) OVER (ORDER BY g.hi DESC ROWS BETWEEN UNBOUNDED "
    "PRECEDING AND 1 PRECEDING), 0) FROM chain c JOIN session_segments g "
    f"ON g.session_id = c.sid AND {tree_key('g')} AND g.hi <= c.cut), "
    "wanted(owner_id, lo, hi, floor) AS (SELECT p.owner_id, p.lo, p.hi, CASE WHEN "
    "p.n <= CAST(:need AS BIGINT) - p.newer THEN p.lo ELSE coalesce(("
    "SELECT x.id FROM messages x WHERE x.session_id = p.owner_id AND x.id > p.lo "
    "AND x.id <= p.hi AND x.ord = (SELECT y.ord FROM messages y WHERE y.session_id = "
    "p.owner_id AND y.id > p.lo AND y.id <= p.hi ORDER BY y.id DESC LIMIT 1) "
    "- (CAST(:need AS BIGINT) - p.newer) + 1), p.lo) END FROM parts p "
    "WHERE p.newer < CAST(:need AS BIGINT)) "
    f"SELECT {_ROW_COLS} FROM wanted w JOIN messages m ON {tree_key('m')} "
    "AND m.session_id = w.owner_id AND m.id >= w.floor AND m.id > w.lo AND m.id <= w.hi "
    "ORDER BY m.id DESC LIMIT CAST(:need AS BIGINT)"
)
DELETE_SEGMENT = sa.delete(g).where(g.c.id == sa.bindparam("segment_id"))
DELETE_SEGMENTS_OF = sa.delete(g).where(g.c.session_id == sa.bindparam("session_id"))
#: rows of ``owner`` with lo < id <= hi, newest first / oldest first (at most n)
RANGE_DESC = (
    sa.select(*_MESSAGE_COLS).where(*_range).order_by(m.c.id.desc()).limit(sa.bindparam("n"))
)
RANGE_ASC = sa.select(*_MESSAGE_COLS).where(*_range).order_by(m.c.id).limit(sa.bindparam("n"))
RANGE_ALL = sa.select(*_MESSAGE_COLS).where(*_range).order_by(m.c.id)
#: the id of the row ``k`` rows in from either end of a range (0: the first)
RANGE_NTH_ASC = sa.select(m.c.id).where(*_range).order_by(m.c.id).limit(1).offset(sa.bindparam("k"))
RANGE_NTH_DESC = (
    sa.select(m.c.id).where(*_range).order_by(m.c.id.desc()).limit(1).offset(sa.bindparam("k"))
)
#: (count, size, characters) of a range
RANGE_STATS = sa.select(
    sa.func.count(),
    sa.func.coalesce(sa.func.sum(m.c.size_bytes), 0),
    sa.func.coalesce(sa.func.sum(m.c.char_count), 0),
).where(*_range)
_range_tail = (
    sa.select(m.c.char_count).where(*_range).order_by(m.c.id.desc()).limit(sa.bindparam("n"))
).subquery()
#: (characters, count) of the newest n rows of a range
RANGE_TEXT = sa.select(sa.func.coalesce(sa.func.sum(_range_tail.c.char_count), 0), sa.func.count())
#: a message of a range, by id
RANGE_HAS = sa.select(m.c.id).where(*_range, m.c.id == sa.bindparam("message_id"))
MOVE_RANGE = sa.update(m).where(*_range).values(session_id=sa.bindparam("to", type_=sa.Text))
DELETE_RANGE = sa.delete(m).where(*_range)
#: the smallest and largest id of a range (what a DELETE_RANGE would remove)
RANGE_BOUNDS = sa.select(sa.func.min(m.c.id), sa.func.max(m.c.id)).where(*_range)
BUMP_TOTALS = (
    sa.update(s)
    .where(s.c.id == sa.bindparam("session_id"))
    .values(
        message_count=s.c.message_count + sa.bindparam("count_delta", type_=sa.BigInteger),
        size_bytes=s.c.size_bytes + sa.bindparam("size_delta", type_=sa.BigInteger),
    )
)
# a holder's row is held while its rows are reclaimed (and found: None when it is gone).
# Only a holder's: a session's row is not locked here (that deadlocked with its own
# truncation)
HOLDER_LOCK = (
    sa.select(s.c.id)
    .where(s.c.id == sa.bindparam("session_id"), s.c.holder == sa.true())
    .with_for_update()
)
DELETE_HOLDER = sa.delete(s).where(s.c.id == sa.bindparam("session_id"), s.c.holder == sa.true())


class TreeLock(sa.sql.functions.FunctionElement[Any]):
    """A transaction's lock on one branching tree, by its key (an integer): nothing by
    default, because SQLite's write transactions (BEGIN IMMEDIATE) already run one at a
    time; a dialect whose writers run side by side compiles it to a lock held until the
    transaction ends (PostgreSQL's advisory lock, registered in its package)."""

    name = "tree_lock"
    inherit_cache = True


@compiles(TreeLock)
def _no_tree_lock(element: TreeLock, compiler: SQLCompiler, **kw: Any) -> str:
    return "NULL"


#: the tree whose key is ``key`` held by this transaction until it ends (see
#: :func:`.branching.lock_tree`)
TREE_LOCK = sa.select(TreeLock(sa.bindparam("key", type_=sa.BigInteger)))


# -- search (see .search): the pending rows, the index's version --------------------------

_SEARCH_COLS = (*_MESSAGE_COLS, m.c.root_id, m.c.session_id, m.c.ord)
_pending = m.c.indexed.is_(None)
#: the oldest ``n`` pending rows (a write indexes them; ``ix_messages_pending``)
PENDING_FIRST = sa.select(*_SEARCH_COLS).where(_pending).order_by(m.c.id).limit(sa.bindparam("n"))
#: :data:`PENDING_FIRST` for a write that indexes them: on a server their rows are locked
#: until it commits (a concurrent delete waits, so no entry names a deleted message), and
#: rows another transaction holds are skipped, left pending (it may be deleting them, or
#: indexing them itself: waiting for it could deadlock); SQLite has no row locks
PENDING_FIRST_LOCKED = PENDING_FIRST.with_for_update(key_share=True, skip_locked=True)
#: the pending rows ``lo <= id <= hi``, by id (what a background indexer read, again, in
#: the transaction that writes their entries: see .search.index_entries)
PENDING_BETWEEN = (
    sa.select(*_SEARCH_COLS)
    .where(
        _pending,
        m.c.id >= sa.bindparam("lo", type_=sa.BigInteger),
        m.c.id <= sa.bindparam("hi", type_=sa.BigInteger),
    )
    .order_by(m.c.id)
    .with_for_update(key_share=True, skip_locked=True)  # as PENDING_FIRST_LOCKED
)
#: every pending row up to ``upto``, newest first (a search evaluates them in Python)
PENDING_NEWEST = (
    sa.select(*_SEARCH_COLS)
    .where(_pending, m.c.id <= sa.bindparam("upto", type_=sa.BigInteger))
    .order_by(m.c.id.desc())
)
#: every row up to ``upto``, newest first (a search on a database without an index)
MESSAGES_NEWEST = (
    sa.select(*_SEARCH_COLS)
    .where(m.c.id <= sa.bindparam("upto", type_=sa.BigInteger))
    .order_by(m.c.id.desc())
)
#: the listed sessions of a tree (where a hit is shown)
TREE_SESSION_IDS = sa.select(s.c.id).where(in_tree(s), visible()).order_by(s.c.created_at, s.c.id)
PENDING_COUNT = sa.select(sa.func.count()).select_from(m).where(_pending)
#: how many rows are pending, counting at most ``n`` (reads at most ``n`` index entries)
PENDING_UPTO = sa.select(sa.func.count()).select_from(
    sa.select(m.c.id).where(_pending).limit(sa.bindparam("n")).subquery()
)
#: the rows a save just inserted (ids ``lo`` to ``hi`` of the session) are indexed now;
#: every insert leaves its rows pending (NULL), so a small save writes nothing more (see
#: .search.DEFER_UNDER)
MARK_WRITTEN = (
    sa.update(m)
    .where(
        m.c.session_id == sa.bindparam("owner"),
        m.c.id >= sa.bindparam("lo", type_=sa.BigInteger),
        m.c.id <= sa.bindparam("hi", type_=sa.BigInteger),
    )
    .values(indexed=sa.literal_column("1"))
)
#: the pending rows ``lo <= id <= hi`` are indexed now (a run of consecutive ids PENDING_FIRST gave)
MARK_INDEXED = (
    sa.update(m)
    .where(
        _pending,
        m.c.id >= sa.bindparam("lo", type_=sa.BigInteger),
        m.c.id <= sa.bindparam("hi", type_=sa.BigInteger),
    )
    .values(indexed=sa.literal_column("1"))
)
MARK_ALL_PENDING = sa.update(m).where(m.c.indexed.is_not(None)).values(indexed=None)
#: every row after ``after``, oldest first, at most ``n`` (a rebuild and a check page by id)
MESSAGES_FROM = (
    sa.select(*_SEARCH_COLS, m.c.indexed)
    .where(m.c.id > sa.bindparam("after", type_=sa.BigInteger))
    .order_by(m.c.id)
    .limit(sa.bindparam("n"))
)
MAX_MESSAGE_ID = sa.select(sa.func.coalesce(sa.func.max(m.c.id), 0))
INDEX_VERSION_OF = sa.select(x.c.version).where(x.c.id == 1)
SET_INDEX_VERSION = (
    sa.update(x).where(x.c.id == 1).values(version=sa.bindparam("version", type_=sa.Integer))
)


# The compile cache of the SQLite fast path holds these and nothing else: they live as
# long as the process, so their ids are never reused. A statement built per call is not
# here, and is compiled per call.
_CONSTANTS: dict[int, object] = {
    id(value): value for name, value in list(globals().items()) if name in __all__
}


S = TypeVar("S")


def constant(stmt: S) -> S:
    """Register ``stmt`` (a statement that lives as long as the process, e.g. a dialect
    module's) with the compile cache, as this module's own constants are."""
    _CONSTANTS[id(stmt)] = stmt
    return stmt


def is_constant(stmt: object) -> bool:
    """True for the module's registered constant statements (the compile cache's keys)."""
    return _CONSTANTS.get(id(stmt)) is stmt

"""PostgreSQL's own statements: what the shared ones
(:mod:`coda_session.repository.sql.statements`) do in several round trips, done in one.
SQLAlchemy Core with named binds, compiled once (see :class:`Prepared`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.sql.compiler import SQLCompiler

from ..tables import messages, segments, sessions
from .search import with_tree_sql

__all__ = [
    "APPEND",
    "INSERT_FORK",
    "INSERT_MESSAGES",
    "LOAD_BY_ID",
    "LOAD_BY_NAME",
    "READ_ALL",
    "READ_PAGE",
    "READ_TAIL",
    "TEXT_LENGTH",
    "Prepared",
]

# asyncpg's ``$n`` parameters, as PgExecutor compiles its other statements: not the asyncpg
# dialect, which adds a cast to every parameter (``$1::VARCHAR``); the casts here are the
# statements' own, where the server could not type a parameter (``$n IS NULL``, unnest)
_DIALECT = PGDialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]


class Prepared:
    """A statement compiled once for asyncpg: :attr:`sql` with ``$n`` parameters and
    :meth:`args`, its parameters in that order from a mapping of bind names."""

    __slots__ = ("names", "sql")

    def __init__(self, stmt: sa.ClauseElement) -> None:
        compiled = cast(SQLCompiler, stmt.compile(dialect=_DIALECT))
        # every value is given by name at each call: a constant compiled as a parameter
        # would hide a value here and show the planner a LIMIT or a bound it cannot see
        fixed = sorted(repr(b.value) for b in compiled.binds.values() if not b.required)
        if fixed:
            raise ValueError(f"constants compiled as parameters: {fixed}")
        self.sql: str = str(compiled)
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        """The parameters in ``$n`` order (a missing name is a KeyError)."""
        return [params[n] for n in self.names]


_TEXT = sa.Text()
_BIG = sa.BigInteger()


def _num(value: int) -> sa.ColumnElement[Any]:
    """A number written into the statement (a bound one would be a parameter)."""
    return sa.literal_column(str(value), _BIG)


def _param(name: str, type_: sa.types.TypeEngine[Any]) -> sa.ColumnElement[Any]:
    """``$n::type``: a named parameter with the type the server gives it."""
    return sa.cast(sa.bindparam(name), type_)


def _xmin(table: sa.FromClause) -> sa.ColumnElement[Any]:
    """A row's ``xmin`` as text: a system column, which the table model does not declare."""
    return sa.cast(sa.literal_column(f"{table.name}.xmin"), _TEXT)  # type: ignore[attr-defined]


_ZERO = _num(0)
_BEYOND = _num(4611686018427387904)
_MAX_DEPTH = _num(1000000)

_SESSION_ID = _param("session_id", _TEXT)

_m = messages.c
#: the message columns a statement inserts, in :func:`_inserted`'s order
_INSERTED = (
    _m.session_id,
    _m.role,
    _m.content,
    _m.timestamp,
    _m["metadata"],
    _m.content_zlib,
    _m.size_bytes,
    _m.char_count,
    _m.root_id,
    _m.ord,
    _m.cum_size,
    _m.indexed,
)


def _last(session: sa.ColumnElement[Any]) -> sa.Subquery:
    """(ord, cum_size) of the session's newest row, and whether it has one, as a one-row
    relation ``lo``: its next rows continue from there (NULL after a row another program
    inserted unnumbered). Read once, ordered by (session_id, id), the index's order (a
    scan of the id index for a new session's newest row would read the whole table)."""
    x = messages.alias("x")
    newest = (
        sa.select(x.c.ord, x.c.cum_size)
        .where(x.c.session_id == session)
        .order_by(x.c.session_id.desc(), x.c.id.desc())
        .limit(_num(1))
        .subquery("n")
    )
    u = sa.union_all(
        sa.select(newest.c.ord, newest.c.cum_size.label("cum"), sa.true().label("any")),
        sa.select(sa.cast(sa.null(), _BIG), sa.cast(sa.null(), _BIG), sa.false()),
    ).subquery("u")
    return (
        sa.select(u.c.ord, u.c.cum, u.c.any).order_by(u.c.any.desc()).limit(_num(1)).subquery("lo")
    )


def _unnest() -> Any:
    """The new messages, one array parameter per column, as rows ``r`` in the order given
    (``r.ord``, from 1)."""
    arrays = (
        _param("roles", sa.ARRAY(_TEXT)),
        _param("contents", sa.ARRAY(_TEXT)),
        _param("timestamps", sa.ARRAY(_TEXT)),
        _param("extras", sa.ARRAY(_TEXT)),
        _param("packed", sa.ARRAY(sa.LargeBinary())),
        _param("sizes", sa.ARRAY(_BIG)),
        _param("chars", sa.ARRAY(_BIG)),
    )
    columns = ("role", "content", "ts", "extra", "packed", "size", "chars")
    return (
        sa.func.unnest(*arrays)
        .table_valued(*columns, with_ordinality="ord")
        .render_derived(name="r")
    )


def _inserted(
    session: sa.ColumnElement[Any],
    tree: sa.ColumnElement[Any],
    lo: sa.Subquery,
    r: Any,
    indexed: bool = False,
) -> tuple[sa.ColumnElement[Any], ...]:
    """A new row's values in :data:`_INSERTED`'s order: its ord and cum_size continue
    ``lo`` (in the order ``r.ord``)."""
    ord_ = sa.case(
        (sa.and_(lo.c.any, lo.c.ord.is_(None)), sa.null()),
        else_=sa.func.coalesce(lo.c.ord, _ZERO) + r.c.ord,
    )
    cum = sa.case(
        (sa.and_(lo.c.any, lo.c.cum.is_(None)), sa.null()),
        else_=sa.func.coalesce(lo.c.cum, _ZERO) + sa.func.sum(r.c.size).over(order_by=r.c.ord),
    )
    return (
        session,
        r.c.role,
        r.c.content,
        r.c.ts,
        sa.cast(r.c.extra, sa.JSON),
        r.c.packed,
        r.c.size,
        r.c.chars,
        tree,
        ord_,
        cum,
        # 1: indexed by the same statement (APPEND); NULL: pending, until the transaction
        # (a save of many messages) or a later write indexes it (see ..search)
        sa.literal_column("1" if indexed else "NULL", sa.SmallInteger()),
    )


def _ids(ins: sa.CTE) -> sa.ColumnElement[Any]:
    return sa.func.array_agg(aggregate_order_by(ins.c.id, ins.c.id))


def _insert_messages() -> sa.Select[Any]:
    lo, r = _last(_SESSION_ID), _unnest()
    rows = (
        sa.select(*_inserted(_SESSION_ID, _param("root_id", _TEXT), lo, r))
        .select_from(lo, r)
        .order_by(r.c.ord)
    )
    ins = sa.insert(messages).from_select(_INSERTED, rows).returning(messages.c.id).cte("ins")
    return sa.select(_ids(ins))


#: Messages of one session in one statement (``session_id``, one array per column:
#: ``roles``, ``contents``, ``timestamps``, ``extras``, ``packed``, ``sizes``, ``chars``;
#: ``root_id`` the tree's key), in the order given; ``ids`` ascending (the sequence runs
#: in that order).
INSERT_MESSAGES = Prepared(_insert_messages())


#: the search index's table (see .search and migration 0012), as the statements write it
_search = sa.table(
    "message_search",
    sa.column("id"),
    sa.column("root_id"),
    sa.column("role"),
    sa.column("body"),
    sa.column("tsv"),
)


def _index_inserted(ins: sa.CTE) -> sa.CTE:
    """The index entries of the rows ``ins`` inserted (their ids ascending are the
    arrays' order): ``bodies`` and ``tsvs`` (``.search.tsvector_literal``), one each."""
    n = sa.select(
        ins.c.id,
        ins.c.root_id,
        ins.c.role,
        sa.func.row_number().over(order_by=ins.c.id).label("k"),
    ).subquery("n")
    u = (
        sa.func.unnest(_param("bodies", sa.ARRAY(_TEXT)), _param("tsvs", sa.ARRAY(_TEXT)))
        .table_valued("b", "t", with_ordinality="k")
        .render_derived(name="u")
    )
    rows = sa.select(
        n.c.id,
        n.c.root_id,
        sa.func.coalesce(n.c.role, sa.literal_column("''")),
        u.c.b,
        sa.literal_column(with_tree_sql("u.t", "n.root_id")),
    ).select_from(n.join(u, u.c.k == n.c.k))
    return sa.insert(_search).from_select(list(_search.c), rows).cte("indexed")


def _append(index: bool = True) -> sa.Select[Any]:
    s = sessions
    # UPDATE sessions AS s, as the hand-written statement named it (the same plan text)
    updated = cast(sa.Alias, sessions.alias("s"))
    tree = _param("root_id", _TEXT)
    max_bytes = _param("max_bytes", _BIG)
    delta = _param("size_delta", _BIG)
    cur = (
        sa.select(
            s.c.id,
            s.c.message_count,
            s.c.size_bytes,
            s.c.last_message_id,
            s.c.root_id,
            _xmin(s).label("version"),
        )
        .where(s.c.id == _SESSION_ID, s.c.root_id == sa.func.coalesce(tree, s.c.root_id))
        .with_for_update(key_share=True)
        .cte("cur")
    )
    v = sessions.alias("v")
    now = sa.select(_xmin(v)).where(v.c.id == _SESSION_ID).scalar_subquery()
    seen = sa.select(cur.c.version.is_distinct_from(now).label("stale")).cte("seen")
    fits = (
        sa.select(*cur.c)
        .select_from(cur, seen)
        .where(
            sa.not_(seen.c.stale),
            sa.or_(
                max_bytes.is_(None),
                delta <= _ZERO,
                cur.c.size_bytes + delta <= max_bytes,
            ),
        )
        .cte("fits")
    )
    lo, r = _last(_SESSION_ID), _unnest()
    rows = (
        sa.select(*_inserted(fits.c.id, sa.func.coalesce(fits.c.root_id, fits.c.id), lo, r, index))
        .select_from(fits, lo, r)
        .order_by(r.c.ord)
    )
    ins = (
        sa.insert(messages)
        .from_select(_INSERTED, rows)
        .returning(messages.c.id, messages.c.root_id, messages.c.role)
        .cte("ins")
    )
    newest = sa.func.coalesce(sa.select(sa.func.max(ins.c.id)).scalar_subquery(), _ZERO)
    metadata = sa.case(
        (updated.c.metadata_version == _param("metadata_version", _BIG), sa.null()),
        else_=sa.cast(updated.c["metadata"], _TEXT),
    )
    upd = (
        sa.update(updated)
        .values(
            updated_at=_param("updated_at", sa.TIMESTAMP(timezone=True)),
            message_count=fits.c.message_count
            + sa.func.cardinality(_param("roles", sa.ARRAY(_TEXT))),
            size_bytes=fits.c.size_bytes + delta,
            last_message_id=sa.func.greatest(fits.c.last_message_id, newest),
        )
        .where(updated.c.id == fits.c.id)
        .returning(
            updated.c.message_count,
            updated.c.size_bytes,
            updated.c.metadata_version,
            metadata.label("metadata"),
            updated.c.last_message_id,
        )
        .cte("upd")
    )
    stmt = sa.select(
        cur.c.last_message_id.label("previous"),
        cur.c.size_bytes.label("size_before"),
        sa.select(_ids(ins)).scalar_subquery().label("ids"),
        upd.c.message_count,
        upd.c.size_bytes,
        upd.c.metadata_version,
        upd.c.metadata,
        upd.c.last_message_id,
        seen.c.stale,
    ).select_from(cur.join(seen, sa.true()).outerjoin(upd, sa.true()))
    return stmt.add_cte(_index_inserted(ins)) if index else stmt


#: A plain append (new messages, no truncation, no metadata change) as ONE statement,
#: its own transaction. The session row is locked first (``cur``): after waiting for
#: the lock, READ COMMITTED gives the row's newest committed version, so its counters and
#: newest message id are current. Only that row: the rest of the statement (the newest
#: message row, where the new rows' places continue) reads the snapshot taken before the
#: wait, so when the locked version is not the one that snapshot sees (``stale``: another
#: writer of the session committed meanwhile) nothing is written and the caller runs the
#: statement again (appends queued on one session numbered their rows from the same
#: place). Nothing is written either when the session is gone (no row comes back) or
#: would pass ``max_bytes`` (``fits`` is empty: the row comes back with the ``upd``
#: columns NULL). ``metadata_version`` is the version the caller saw, ``size_delta`` the
#: new rows' bytes, ``root_id`` the tree's key (the shard key: see the README; NULL when
#: the caller does not know it); the arrays are :data:`INSERT_MESSAGES`'.
APPEND = Prepared(_append())
#: :data:`APPEND` leaving the new rows pending, without ``bodies`` and ``tsvs`` (the
#: background indexer writes their entries after the commit: see ..indexer)
APPEND_PENDING = Prepared(_append(index=False))


def _message_columns(t: sa.FromClause) -> tuple[sa.ColumnElement[Any], ...]:
    c = t.c
    return (
        c.id,
        c.role,
        c.content,
        c.timestamp,
        c["metadata"],
        c.content_zlib,
        c.size_bytes,
        c.char_count,
    )


def _row_columns(m: sa.FromClause) -> tuple[sa.ColumnElement[Any], ...]:
    """A message row as the reads return it (the metadata as the JSON text stored)."""
    c = m.c
    return (
        *_message_columns(m)[:4],
        sa.cast(c["metadata"], _TEXT).label("metadata"),
        *_message_columns(m)[5:],
    )


def _own_lo(
    session: sa.ColumnElement[Any], root: sa.ColumnElement[Any], *around: sa.FromClause
) -> Any:
    """Below every own row of the session: the newest id it inherits (0 for no branch),
    the larger of its own segments' newest ``hi`` and its link's bound. Bounding the own
    rows' id range there keeps a scan of the id index short for a branch with few rows
    of its own (the planner may prefer that index to the session's)."""
    o, r = segments.alias("o"), sessions.alias("r")
    segmented = (
        sa.select(sa.func.coalesce(sa.func.max(o.c.hi), _ZERO))
        .where(o.c.root_id == root, o.c.session_id == session)
        .correlate(*around)
    )
    linked = (
        sa.select(
            sa.func.coalesce(
                sa.case((r.c.inherit_id.is_(None), _ZERO), else_=r.c.inherit_upto), _ZERO
            )
        )
        .where(r.c.id == session)
        .correlate(*around)
    )
    return sa.func.greatest(segmented.scalar_subquery(), linked.scalar_subquery())


def _chain(session: sa.ColumnElement[Any], floor: sa.ColumnElement[Any]) -> sa.CTE:
    """The session's list and the lists it inherits (see statements.RESOLVED), as
    ``chain(sid, cut)``: UNION ends a damaged link cycle. Lists whose bound is ``floor``
    or less (all older than what the caller reads) are not walked."""
    chain = sa.select(session.label("sid"), _BEYOND.label("cut")).cte("chain", recursive=True)
    c, k = chain.alias("c"), sessions.alias("s")
    return chain.union(
        sa.select(k.c.inherit_id, sa.func.least(k.c.inherit_upto, c.c.cut))
        .select_from(c.join(k, k.c.id == c.c.sid))
        .where(k.c.inherit_id.is_not(None), k.c.inherit_upto > floor)
    )


def _parts(
    chain: sa.CTE,
    session: sa.ColumnElement[Any],
    upto: sa.ColumnElement[Any],
    root: sa.ColumnElement[Any],
) -> sa.Subquery:
    """A session's view as (owner_id, lo, hi) runs: its segments, resolved down its
    links (``chain``, :func:`_chain`), then its own rows."""
    w, g = chain.alias("w"), segments.alias("g")
    return sa.union_all(
        sa.select(g.c.owner_id, g.c.lo, g.c.hi).select_from(
            w.join(g, sa.and_(g.c.root_id == root, g.c.session_id == w.c.sid, g.c.hi <= w.c.cut))
        ),
        sa.select(session, _own_lo(session, root), upto),
    ).subquery("p")


def _rows(p: sa.FromClause, root: sa.ColumnElement[Any], m: sa.FromClause) -> sa.Select[Any]:
    """The rows ``m`` of one run ``p`` (every statement names the tree's key, the shard
    key)."""
    return sa.select(*_row_columns(m)).where(
        m.c.root_id == root,
        m.c.session_id == p.c.owner_id,
        m.c.id > p.c.lo,
        m.c.id <= p.c.hi,
    )


def _tail(
    session: sa.ColumnElement[Any],
    upto: sa.ColumnElement[Any],
    n: sa.ColumnElement[Any],
    root: sa.ColumnElement[Any],
    outer: sa.FromClause | None = None,
) -> sa.CompoundSelect[Any]:
    """The newest ``n`` rows of a session's view (NULL: all), newest first. Its own rows are
    its newest: the segments are read only when they are fewer than ``n``, down its links
    only until the lists passed show ``n`` (``acc``), each run newest first, at most
    ``n``. Ordered by (session_id, id), the order of the index they read. Its WITH is its
    own (``nesting``): a caller's lateral join gives it the session from ``outer``. In the
    walk, the linked sessions ``s`` hide a caller's ``s`` (LOAD's): the segment count then
    names the linked session's tree key, the same key (a link never leaves its tree), as
    the hand-written statement did; kept so that the plan is the same."""
    around = () if outer is None else (outer,)
    m = messages.alias("m")
    own = (
        sa.select(*_row_columns(m))
        .where(
            m.c.root_id == root,
            m.c.session_id == session,
            m.c.id > _own_lo(session, root, *around),
            m.c.id <= upto,
        )
        .order_by(m.c.session_id.desc(), m.c.id.desc())
        .limit(n)
        .correlate(*around)
        .cte("own", nesting=True)
    )
    owned = sa.select(sa.func.count()).select_from(own).scalar_subquery()
    want = sa.func.coalesce(n, _BEYOND)
    chain = (
        sa.select(
            session.label("sid"),
            _BEYOND.label("cut"),
            owned.label("acc"),
            sa.literal_column("0").label("depth"),
        )
        .correlate(*around)
        .cte("chain", recursive=True, nesting=True)
    )
    c, k, x = chain.alias("c"), sessions.alias("s"), segments.alias("x")
    listed = (
        sa.select(sa.func.coalesce(sa.func.sum(x.c.message_count), _ZERO))
        .where(x.c.root_id == root, x.c.session_id == c.c.sid, x.c.hi <= c.c.cut)
        .correlate(c, *around)
    )
    chain = chain.union_all(
        sa.select(
            k.c.inherit_id,
            sa.func.least(k.c.inherit_upto, c.c.cut),
            c.c.acc + sa.cast(listed.scalar_subquery(), _BIG),
            c.c.depth + sa.literal_column("1"),
        )
        .select_from(c.join(k, k.c.id == c.c.sid))
        .where(k.c.inherit_id.is_not(None), c.c.acc < want, c.c.depth < _MAX_DEPTH)
    )
    c, p = chain.alias("c"), segments.alias("p")
    r = messages.alias("m")
    t = sa.lateral(
        _rows(p, root, r)
        .order_by(r.c.session_id.desc(), r.c.id.desc())
        .limit(n)
        .correlate(p, *around),
        "t",
    )
    inherited = (
        sa.select(*_message_columns(t))
        .select_from(
            c.join(
                p, sa.and_(p.c.root_id == root, p.c.session_id == c.c.sid, p.c.hi <= c.c.cut)
            ).join(t, sa.true())
        )
        .where(owned < want)
    )
    tail = sa.union_all(sa.select(*own.c), inherited)
    return tail.order_by(tail.selected_columns.id.desc()).limit(n)


def _key(name: str) -> sa.ColumnElement[Any]:
    """Parameter ``name``, the tree's key, or the session's when it is NULL."""
    r = sessions.alias("r")
    of_session = sa.select(r.c.root_id).where(r.c.id == _SESSION_ID).scalar_subquery()
    return sa.func.coalesce(_param(name, _TEXT), of_session)


_UPTO = _param("upto_id", _BIG)
_LIMIT = _param("limit", _BIG)

#: The newest ``limit`` messages (NULL: all) of session ``session_id`` with id <=
#: ``upto_id`` (own rows; what it inherits is older), newest first, in one statement (one
#: snapshot); ``root_id`` the tree's key.
READ_TAIL = Prepared(_tail(_SESSION_ID, _UPTO, _LIMIT, _key("root_id")))


def _read_all() -> sa.Select[Any]:
    root = _key("root_id")
    p = _parts(_chain(_SESSION_ID, _num(-1)), _SESSION_ID, _UPTO, root)
    t = sa.lateral(_rows(p, root, messages.alias("m")), "t")
    return sa.select(*_message_columns(t)).select_from(p.join(t, sa.true())).order_by(t.c.id)


#: Every message of session ``session_id`` up to ``upto_id``, oldest first; ``root_id``
#: the tree's key.
READ_ALL = Prepared(_read_all())


def _read_page() -> sa.Select[Any]:
    root, after = _key("root_id"), _param("after_id", _BIG)
    p = _parts(_chain(_SESSION_ID, after), _SESSION_ID, _UPTO, root)
    m = messages.alias("m")
    t = sa.lateral(_rows(p, root, m).where(m.c.id > after).order_by(m.c.id).limit(_LIMIT), "t")
    return (
        sa.select(*_message_columns(t))
        .select_from(p.join(t, sa.true()))
        .order_by(t.c.id)
        .limit(_LIMIT)
    )


#: At most ``limit`` messages of session ``session_id`` with ``after_id`` < id <=
#: ``upto_id``, oldest first; ``root_id`` the tree's key.
READ_PAGE = Prepared(_read_page())


def _text_length() -> sa.Select[Any]:
    x = _tail(_SESSION_ID, _UPTO, _LIMIT, _key("root_id")).subquery("x")
    return sa.select(sa.func.coalesce(sa.func.sum(x.c.char_count), _ZERO), sa.func.count())


#: (characters, count) of the newest ``limit`` messages of session ``session_id`` up to
#: ``upto_id``; ``root_id`` the tree's key.
TEXT_LENGTH = Prepared(_text_length())


def _load(by: str) -> sa.Select[Any]:
    s = sessions.alias("s")
    t = sa.lateral(_tail(s.c.id, s.c.last_message_id, _param("tail", _BIG), s.c.root_id, s), "t")
    key = s.c.id == _SESSION_ID if by == "id" else s.c.name == _param("name", _TEXT)
    return (
        sa.select(
            s.c.id,
            s.c.name,
            s.c.created_at,
            s.c.updated_at,
            sa.cast(s.c["metadata"], _TEXT),
            s.c.message_count,
            s.c.size_bytes,
            s.c.metadata_version,
            s.c.last_message_id,
            s.c.root_id,
            s.c.parent_id,
            s.c.fork_point,
            *_message_columns(t),
        )
        .select_from(s.outerjoin(t, sa.true()))
        .where(sa.not_(s.c.holder), key)
        .order_by(t.c.id.desc())
    )


#: A session row (``name``, or ``session_id``) with its newest ``tail`` messages (newest
#: first), one snapshot, one trip.
LOAD_BY_NAME = Prepared(_load("name"))
LOAD_BY_ID = Prepared(_load("id"))


def _insert_fork() -> sa.Select[Any]:
    # statements.INSERT_SESSION's binds (ops.create gives both the same values)
    columns = (
        *("id", "name", "created_at", "updated_at", "metadata", "message_count", "size_bytes"),
        *("root_id", "parent_id", "fork_point", "last_message_id", "holder", "inherit_id"),
        *("inherit_upto", "inherit_count", "inherit_size"),
    )
    binds: dict[str, sa.BindParameter[Any]] = {
        c: sa.bindparam("last_id" if c == "last_message_id" else c) for c in columns
    }
    made = (
        sa.insert(sessions).values({sessions.c[c]: bind for c, bind in binds.items()}).cte("made")
    )
    units = (
        sa.func.unnest(
            _param("owners", sa.ARRAY(_TEXT)),
            _param("los", sa.ARRAY(_BIG)),
            _param("his", sa.ARRAY(_BIG)),
            _param("counts", sa.ARRAY(_BIG)),
            _param("sizes", sa.ARRAY(_BIG)),
        )
        .table_valued("owner", "lo", "hi", "n", "size")
        .render_derived(name="u")
    )
    tree = _param("root_id", _TEXT)
    g = segments.c
    listed = (
        sa.insert(segments)
        .from_select(
            (g.root_id, g.session_id, g.owner_id, g.lo, g.hi, g.message_count, g.size_bytes),
            sa.select(tree, sa.cast(sa.bindparam("id"), _TEXT), *units.c),
        )
        .cte("listed")
    )
    tail = _tail(
        _param("parent_id", _TEXT), _param("last_id", _BIG), _param("tail", _BIG), tree
    ).subquery("t")
    return sa.select(*tail.c).order_by(tail.c.id.desc()).add_cte(made, listed)


#: A branch's session row (:data:`.statements.INSERT_SESSION`'s binds: ``parent_id``
#: its source, ``last_id`` its newest id) and its own segments (one array each of
#: ``owners``, ``los``, ``his``, ``counts`` and ``sizes``) in one statement (the foreign
#: keys are checked at its end, when the session row is there), returning its newest
#: ``tail`` messages, newest first: its source's up to ``last_id``, which it shows (the
#: statement's own writes are not visible to it).
INSERT_FORK = Prepared(_insert_fork())

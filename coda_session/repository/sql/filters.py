"""A filtered, ordered, keyset-paged listing in one SELECT (SQLAlchemy Core, every dialect).

The metadata and tag filters look up the side tables migration 0011 keeps in step with
``sessions.metadata`` (``session_fields``, ``session_tags``): each condition is an
``id IN (indexed lookup)``, so the stored metadata is never parsed by a listing and never
rewritten. Every value is a bound parameter. Names are compared and ordered in code-point
order on every database (PostgreSQL's ``COLLATE "C"``; SQLite's default BINARY), as the
Python path (:func:`..filters.page_of`) orders them.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from ...escaping import escape
from ..filters import FieldCondition, SessionFilter, SessionPage, name_upper_bound
from . import statements as q
from .executors import Executor
from .operations import one_statement
from .rows import infos_of
from .tables import session_fields, session_tags, sessions

__all__ = ["KEY_CHARS", "find_page", "page_statement"]

#: the characters of a path or string the ``session_fields`` indexes hold (migration 0011)
KEY_CHARS = 200

s = sessions
f = session_fields
t = session_tags


class code_points(FunctionElement[str]):
    """A text column compared and ordered by code point (BINARY / ``COLLATE "C"``)."""

    type = sa.Text()
    inherit_cache = True
    name = "code_points"


@compiles(code_points)
def _plain(element: code_points, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite's default collation (BINARY) already compares UTF-8 bytes: code-point order
    return str(compiler.process(next(iter(element.clauses)), **kw))


@compiles(code_points, "postgresql")
def _collate_c(element: code_points, compiler: SQLCompiler, **kw: Any) -> str:
    return f'({compiler.process(next(iter(element.clauses)), **kw)} COLLATE "C")'


class _Binds:
    """Bound parameters named in order (values go in the params, never in the SQL)."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def __call__(self, value: Any, type_: Any = None) -> sa.BindParameter[Any]:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return sa.bindparam(name, type_=type_)


def _number(bind: _Binds, text: str) -> sa.ColumnElement[Any]:
    # the number travels as text and the database reads it as its own numeric: exact on
    # PostgreSQL, the integer or double SQLite's json_each gave the stored one
    return sa.cast(sa.cast(bind(text), sa.Text), sa.Numeric)


def _field_lookup(
    c: FieldCondition, bind: _Binds, table: sa.FromClause
) -> list[sa.ColumnElement[bool]]:
    looked = [table.c.path_key == bind(c.path[:KEY_CHARS]), table.c.kind == bind(c.kind)]
    if len(c.path) > KEY_CHARS:
        looked.append(table.c.path == bind(c.path))
    if c.txt is not None:
        looked.append(table.c.txt_key == bind(c.txt[:KEY_CHARS]))
        if len(c.txt) > KEY_CHARS:
            looked.append(table.c.txt == bind(c.txt))
    if c.num is not None:
        looked.append(table.c.num == _number(bind, c.num))
    return looked


def _conditions(
    flt: SessionFilter, bind: _Binds, *, skip_tag: int | None, skip_field: int | None
) -> list[sa.ColumnElement[bool]]:
    """Every filter as a condition on ``sessions`` (the one the driving table answers
    left out): the side-table lookups as correlated EXISTS on the session's own rows."""
    # (statements.LIST_SESSIONS, which the page extends, already leaves holders out)
    where: list[sa.ColumnElement[bool]] = []
    for index, c in enumerate(flt.conditions):
        if index != skip_field:
            probe = f.alias()
            looked = _field_lookup(c, bind, probe)
            where.append(sa.exists().where(probe.c.session_id == s.c.id, *looked))
    for index, tag in enumerate(flt.tags):
        if index != skip_tag:
            probe = t.alias()
            where.append(
                sa.exists().where(probe.c.session_id == s.c.id, probe.c.tag == bind(escape(tag)))
            )
    if flt.name_prefix is not None:
        prefix = escape(flt.name_prefix)
        where.append(code_points(s.c.name) >= bind(prefix))
        upper = name_upper_bound(prefix)
        if upper is not None:
            where.append(code_points(s.c.name) < bind(upper))
    stamp = s.c.created_at.type
    for column, after, before in (
        (s.c.created_at, flt.created_after, flt.created_before),
        (s.c.updated_at, flt.updated_after, flt.updated_before),
    ):
        if after is not None:
            where.append(column >= bind(after, stamp))
        if before is not None:
            where.append(column < bind(before, stamp))
    if flt.updated_upto is not None:
        where.append(s.c.updated_at <= bind(flt.updated_upto, stamp))
    if flt.roots_only:
        where.append(s.c.parent_id.is_(None))
    named = s.alias("named")
    if flt.parent is not None:
        parent = sa.select(named.c.id).where(
            named.c.name == bind(escape(flt.parent)), q.visible(named)
        )
        where.append(s.c.parent_id == parent.scalar_subquery())
    if flt.root is not None:
        tree = sa.select(named.c.root_id).where(
            named.c.name == bind(escape(flt.root)), q.visible(named)
        )
        where.append(s.c.root_id == tree.scalar_subquery())
    return where


def page_statement(flt: SessionFilter) -> tuple[sa.Select[Any], dict[str, Any]]:
    """The SELECT of ``flt``'s page (one more row than the limit: whether more follow)
    and its parameters; the columns of ``statements.LIST_SESSIONS``.

    In the default order with a tag or metadata filter, the page is read from one range
    of the driving side table's index ``(value, created_at, name)`` (a tag if there is
    one, else the first metadata condition), the other filters checked per row: the
    cost follows the page, not how many sessions match. Otherwise the sessions are read
    in their own order (``created_at, name`` and ``updated_at, name`` are indexed) with
    every filter checked per row.
    """
    bind = _Binds()
    stmt = q.LIST_SESSIONS
    keys: list[sa.ColumnElement[Any]]
    driving: list[sa.ColumnElement[bool]] = []
    skip_tag = skip_field = None
    if flt.order == "created" and (flt.tags or flt.conditions):
        # the driving rows carry their session's created_at and name (migration 0011)
        if flt.tags:
            skip_tag = 0
            drive = t.alias("drive")
            driving = [drive.c.tag == bind(escape(flt.tags[0]))]
        else:
            skip_field = 0
            drive = f.alias("drive")
            driving = _field_lookup(flt.conditions[0], bind, drive)
        stmt = stmt.select_from(drive.join(s, s.c.id == drive.c.session_id))
        keys = [drive.c.created_at, code_points(drive.c.name)]
    elif flt.order == "name":
        keys = [code_points(s.c.name)]
    else:
        column = s.c.created_at if flt.order == "created" else s.c.updated_at
        keys = [column, code_points(s.c.name)]
    where = driving + _conditions(flt, bind, skip_tag=skip_tag, skip_field=skip_field)
    if flt.after is not None:
        values: list[sa.ColumnElement[Any]] = [bind(flt.after[-1])]
        if len(keys) == 2:
            values.insert(0, bind(flt.after[0], s.c.created_at.type))
        if flt.descending:
            where.append(sa.tuple_(*keys) < sa.tuple_(*values))
        else:
            where.append(sa.tuple_(*keys) > sa.tuple_(*values))
    ordered = [k.desc() for k in keys] if flt.descending else keys
    stmt = stmt.where(*where).order_by(None).order_by(*ordered)
    if flt.limit is not None:
        stmt = stmt.limit(bind(flt.limit + 1, sa.Integer))
    return stmt, bind.params


@one_statement
def find_page(cx: Executor, flt: SessionFilter) -> SessionPage:
    """The page of sessions ``flt`` asks for, in one statement."""
    stmt, params = page_statement(flt)
    infos = infos_of(cx.rows(stmt, params))
    if flt.limit is not None and len(infos) > flt.limit:
        return SessionPage(infos[: flt.limit], more=True)
    return SessionPage(infos, more=False)

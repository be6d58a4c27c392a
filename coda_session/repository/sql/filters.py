"""A filtered, ordered, keyset-paged listing in one SELECT (SQLAlchemy Core, every dialect).

The metadata and tag filters look up the side tables migration 0011 keeps in step with
``sessions.metadata`` (``session_fields``, ``session_tags``), so the stored metadata is
never parsed by a listing and never rewritten. Every value is a bound parameter. Names are
compared and ordered in code-point order on every database (PostgreSQL's ``COLLATE "C"``;
SQLite's default BINARY), as the Python path (:func:`..filters.page_of`) orders them.

A filter is taken apart once per call (:func:`plan`) into its *shape*, everything the SQL
text depends on (which filters are given, the order, the lengths that need a second
comparison), and its values in bind order. Each shape's statement is built and registered
as a constant once (:func:`statement_of`), so the executors compile it once per process:
building and compiling it cost more than running it (0.4-0.8 ms against 0.05-0.2 ms
for a page at 100k sessions on SQLite).

Each filter other than the driving one is a probe of the session's own rows: a scalar
subquery whose WHERE names only ``session_id`` and the path (or the tag), so the one
index that fits is the session's own, whatever the statistics say; a per-row probe is
not turned into a join over every row of the value (PostgreSQL did, without fresh
statistics: 200 ms for a two-key filter at 100k sessions).
"""

from __future__ import annotations

from collections.abc import Hashable
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

__all__ = ["KEY_CHARS", "SHAPES", "find_page", "page_statement", "plan", "statement_of"]

#: the characters of a path or string the ``session_fields`` indexes hold (migration 0011)
KEY_CHARS = 200
#: how many statement shapes are kept (built and compiled once); past it, a new shape is
#: built per call. A shape is the set of filters given, not their values: a program uses
#: a handful.
SHAPES = 256

s = sessions
f = session_fields
t = session_tags

Shape = tuple[Hashable, ...]
_ONE: sa.ColumnClause[Any] = sa.literal_column("1")
_NONE: sa.ColumnClause[Any] = sa.literal_column("0")


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


# -- the plan: a filter's shape and its values ------------------------------------------


def _field(c: FieldCondition) -> tuple[tuple[bool, bool, bool, bool], list[Any]]:
    """A metadata condition's shape (a second comparison of the whole path, a string, a
    second comparison of the whole string, a number) and its values in bind order."""
    long_path = len(c.path) > KEY_CHARS
    values: list[Any] = [c.path[:KEY_CHARS], c.kind]
    if long_path:
        values.append(c.path)
    long_txt = False
    if c.txt is not None:
        values.append(c.txt[:KEY_CHARS])
        long_txt = len(c.txt) > KEY_CHARS
        if long_txt:
            values.append(c.txt)
    if c.num is not None:
        values.append(c.num)
    return (long_path, c.txt is not None, long_txt, c.num is not None), values


def _driving(flt: SessionFilter) -> tuple[str, int] | None:
    """The side-table condition a page in order ``created`` is read from: a tag if there
    is one, else the first string condition (values of a string key are usually many,
    each rare), else the first condition; None when the sessions are read in order."""
    if flt.order != "created":
        return None
    if flt.tags:
        return ("tag", 0)
    for index, c in enumerate(flt.conditions):
        if c.txt is not None:
            return ("field", index)
    return ("field", 0) if flt.conditions else None


def plan(flt: SessionFilter) -> tuple[Shape, list[Any]]:
    """``flt``'s statement shape (what :func:`statement_of` builds from) and its bound
    values, in the order the statement's binds are numbered."""
    shape: list[Hashable] = [flt.order, flt.descending]
    values: list[Any] = []
    drive = _driving(flt)
    shape.append(None if drive is None else drive[0])
    if drive == ("tag", 0):
        values.append(escape(flt.tags[0]))
    elif drive is not None:
        kinds, found = _field(flt.conditions[drive[1]])
        shape.append(kinds)
        values += found
    for index, c in enumerate(flt.conditions):
        if drive != ("field", index):
            kinds, found = _field(c)
            shape.append(("field", *kinds))
            values += found
    for index, tag in enumerate(flt.tags):
        if drive != ("tag", index):
            shape.append("tag")
            values.append(escape(tag))
    if flt.name_prefix is not None:
        prefix = escape(flt.name_prefix)
        upper = name_upper_bound(prefix)
        shape.append(("name", upper is not None))
        values.append(prefix)
        if upper is not None:
            values.append(upper)
    for token, value in (
        ("created_after", flt.created_after),
        ("created_before", flt.created_before),
        ("updated_after", flt.updated_after),
        ("updated_before", flt.updated_before),
        ("updated_upto", flt.updated_upto),
    ):
        if value is not None:
            shape.append(token)
            values.append(value)
    if flt.roots_only:
        shape.append("roots_only")
    if flt.parent is not None:
        shape.append("parent")
        values.append(escape(flt.parent))
    if flt.root is not None:
        shape.append("root")
        values.append(escape(flt.root))
    if flt.after is not None:
        shape.append(("after", len(flt.after)))
        values += flt.after
    if flt.limit is not None:
        shape.append("limit")
        values.append(flt.limit + 1)
    return tuple(shape), values


# -- the statement of a shape -------------------------------------------------------------


class _Binds:
    """The statement's bound parameters, named ``p0``, ``p1``, ... in the plan's order."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, type_: Any = None) -> sa.BindParameter[Any]:
        name = f"p{self.count}"
        self.count += 1
        return sa.bindparam(name, type_=type_)


def _number(bind: _Binds) -> sa.ColumnElement[Any]:
    # the number travels as text and the database reads it as its own numeric: exact on
    # PostgreSQL, the integer or double SQLite's json_each gave the stored one
    return sa.cast(sa.cast(bind(), sa.Text), sa.Numeric)


def _field_terms(
    kinds: tuple[bool, bool, bool, bool], bind: _Binds, table: sa.FromClause
) -> tuple[list[sa.ColumnElement[bool]], list[sa.ColumnElement[bool]]]:
    """A metadata condition on ``table``'s row as (the path's terms, the value's terms),
    its binds taken in :func:`_field`'s order."""
    long_path, has_txt, long_txt, has_num = kinds
    path = [table.c.path_key == bind()]
    value = [table.c.kind == bind()]
    if long_path:
        path.append(table.c.path == bind())
    if has_txt:
        value.append(table.c.txt_key == bind())
        if long_txt:
            value.append(table.c.txt == bind())
    if has_num:
        value.append(table.c.num == _number(bind))
    return path, value


def _field_probe(
    kinds: tuple[bool, bool, bool, bool], bind: _Binds, owner: sa.ColumnElement[Any]
) -> sa.ColumnElement[bool]:
    """True when the session ``owner`` holds the value: the session's row of that path
    (``ix_session_fields_session_id_path_key``), its value checked outside the WHERE so
    that no planner reads the value's index instead (SQLite did without ANALYZE: every
    row of the value per session) and no planner makes it a join."""
    probe = f.alias()
    path, value = _field_terms(kinds, bind, probe)
    found = sa.func.max(sa.case((sa.and_(*value), _ONE)))
    return sa.select(found).where(probe.c.session_id == owner, *path).scalar_subquery().is_not(None)


def _tag_probe(bind: _Binds, owner: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """True when the session ``owner`` has the tag (a lookup of the primary key)."""
    probe = t.alias()
    count = sa.select(sa.func.count()).where(probe.c.session_id == owner, probe.c.tag == bind())
    return count.scalar_subquery() > _NONE


def statement_of(shape: Shape) -> tuple[sa.Select[Any], int]:
    """The SELECT of a filter of ``shape`` (one more row than the limit: whether more
    follow) and how many binds it takes; the columns of ``statements.LIST_SESSIONS``.

    In order ``created`` with a tag or metadata filter, the page is read from one range
    of the driving side table's index ``(value, created_at, name)``, the other filters
    probed per row: the cost follows the page, not how many sessions match. Otherwise
    the sessions are read in their own order (``created_at, name`` and ``updated_at,
    name`` are indexed) with every filter checked per row.
    """
    bind = _Binds()
    order, descending, drive_kind = shape[0], shape[1], shape[2]
    rest = iter(shape[3:])
    stmt = q.LIST_SESSIONS
    where: list[sa.ColumnElement[bool]] = []
    keys: list[sa.ColumnElement[Any]]
    owner: sa.ColumnElement[Any] = s.c.id
    if drive_kind is not None:
        # the driving rows carry their session's created_at and name (migration 0011)
        if drive_kind == "tag":
            drive = t.alias("drive")
            where.append(drive.c.tag == bind())
        else:
            drive = f.alias("drive")
            path, value = _field_terms(next(rest), bind, drive)  # type: ignore[arg-type]
            where += path + value
        stmt = stmt.select_from(drive.join(s, s.c.id == drive.c.session_id))
        keys = [drive.c.created_at, code_points(drive.c.name)]
        owner = drive.c.session_id  # probed before the session's row is read
    elif order == "name":
        keys = [code_points(s.c.name)]
    else:
        column = s.c.created_at if order == "created" else s.c.updated_at
        keys = [column, code_points(s.c.name)]
    stamp = s.c.created_at.type
    named = s.alias("named")
    limit: sa.BindParameter[Any] | None = None
    for token in rest:
        kind = token[0] if isinstance(token, tuple) else token
        if kind == "field":
            assert isinstance(token, tuple)
            where.append(_field_probe(token[1:], bind, owner))
        elif kind == "tag":
            where.append(_tag_probe(bind, owner))
        elif kind == "name":
            assert isinstance(token, tuple)
            where.append(code_points(s.c.name) >= bind())
            if token[1]:
                where.append(code_points(s.c.name) < bind())
        elif kind in ("created_after", "updated_after"):
            column = s.c.created_at if kind == "created_after" else s.c.updated_at
            where.append(column >= bind(stamp))
        elif kind in ("created_before", "updated_before"):
            column = s.c.created_at if kind == "created_before" else s.c.updated_at
            where.append(column < bind(stamp))
        elif kind == "updated_upto":
            where.append(s.c.updated_at <= bind(stamp))
        elif kind == "roots_only":
            where.append(s.c.parent_id.is_(None))
        elif kind == "parent":
            parent = sa.select(named.c.id).where(named.c.name == bind(), q.visible(named))
            where.append(s.c.parent_id == parent.scalar_subquery())
        elif kind == "root":
            tree = sa.select(named.c.root_id).where(named.c.name == bind(), q.visible(named))
            where.append(s.c.root_id == tree.scalar_subquery())
        elif kind == "after":
            values: list[sa.ColumnElement[Any]] = (
                [bind(stamp), bind()] if len(keys) == 2 else [bind()]
            )
            if descending:
                where.append(sa.tuple_(*keys) < sa.tuple_(*values))
            else:
                where.append(sa.tuple_(*keys) > sa.tuple_(*values))
        elif kind == "limit":
            limit = bind(sa.Integer)
        else:  # pragma: no cover - plan() makes no other token
            raise AssertionError(f"unknown shape token {token!r}")
    ordered = [k.desc() for k in keys] if descending else keys
    stmt = stmt.where(*where).order_by(None).order_by(*ordered)
    if limit is not None:
        stmt = stmt.limit(limit)
    return stmt, bind.count


_statements: dict[Shape, sa.Select[Any]] = {}


def page_statement(flt: SessionFilter) -> tuple[sa.Select[Any], dict[str, Any]]:
    """The SELECT of ``flt``'s page and its parameters (see :func:`statement_of`): the
    statement of its shape, built once per process (and registered as a constant, so
    the executors compile it once); the values bound per call."""
    shape, values = plan(flt)
    stmt = _statements.get(shape)
    if stmt is None:
        stmt, count = statement_of(shape)
        if count != len(values):  # the plan and the statement must agree, bind for bind
            raise AssertionError(f"{shape!r}: {count} binds for {len(values)} values")
        if len(_statements) < SHAPES:
            _statements[shape] = q.constant(stmt)
    return stmt, {f"p{i}": v for i, v in enumerate(values)}


@one_statement
def find_page(cx: Executor, flt: SessionFilter) -> SessionPage:
    """The page of sessions ``flt`` asks for, in one statement."""
    stmt, params = page_statement(flt)
    infos = infos_of(cx.rows(stmt, params))
    if flt.limit is not None and len(infos) > flt.limit:
        return SessionPage(infos[: flt.limit], more=True)
    return SessionPage(infos, more=False)

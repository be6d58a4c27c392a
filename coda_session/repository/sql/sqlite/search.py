"""SQLite's search index: the FTS5 table ``message_fts`` (see migration 0012).

``body`` holds a message's index terms joined by spaces; ``scope`` one token of its tree
and one of its role: ``t`` and ``r`` followed by the UTF-8 bytes of the tree's key and the
role in hex (collision-free, and words of the ``ascii`` tokenizer, which splits only at
ASCII whitespace and punctuation, so it sees exactly the terms the library wrote). A
scoped lookup matches the scope tokens with the query, so FTS5 intersects the term's
rows with the tree's instead of ranking the whole store; it walks rowids newest first
and stops at the window.

A deleted message's entry stays (an *orphan*; deleting an FTS5 row re-reads and
re-tokenizes it, ~70 us a row): every lookup and count joins ``messages``, so it is never
shown nor counted; ``search_gone`` notes the id ranges the library's deletes emptied, and
:meth:`SqliteSearch.sweep` (a bounded batch per write of the library's) removes their
orphans.

Every statement binds its values; the match string is built only from
``search.query.to_fts5`` (each term a quoted literal) and the hex tokens here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from ....search.query import Query, to_fts5
from .. import statements as q
from ..branching import BEYOND
from ..executors import Executor
from ..search import MAX_ROOT_TOKENS, IndexRow, SearchScope
from .executor import RawExecutor

__all__ = ["SQLITE_SEARCH", "SqliteSearch"]

_ROW_COLS = (
    "m.id, m.role, m.content, m.timestamp, m.metadata, m.content_zlib, m.size_bytes, "
    "m.char_count, m.root_id, m.session_id, m.ord"
)

INDEX = q.constant(
    sa.text(
        "INSERT INTO message_fts (rowid, body, scope) SELECT json_extract(value, '$[0]'), "
        "json_extract(value, '$[1]'), json_extract(value, '$[2]') FROM json_each(:rows)"
    )
)
ENTRIES = q.constant(
    sa.text(
        "SELECT rowid, scope, body FROM message_fts WHERE rowid > :lo AND rowid <= :hi "
        "ORDER BY rowid"
    )
)
#: one entry, for ``sqlite3``'s executemany on the fast path (constant text, bound values)
INDEX_ROW = "INSERT INTO message_fts (rowid, body, scope) VALUES (?, ?, ?)"
CLEAR = q.constant(sa.text("DELETE FROM message_fts"))
CLEAR_GONE = q.constant(sa.text("DELETE FROM search_gone"))
NOTE_GONE = q.constant(
    sa.text(
        "INSERT INTO search_gone (lo, hi) SELECT json_extract(value, '$[0]'), "
        "json_extract(value, '$[1]') FROM json_each(:ranges)"
    )
)
OLDEST_GONE = q.constant(sa.text("SELECT id, lo, hi FROM search_gone ORDER BY id LIMIT :n"))
#: the entries of a range, oldest first, each with whether its message is gone
GONE_WALK = q.constant(
    sa.text(
        "SELECT f.rowid, NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = f.rowid) "
        "FROM message_fts f WHERE f.rowid > :lo AND f.rowid <= :hi ORDER BY f.rowid LIMIT :n"
    )
)
DROP_ENTRIES = q.constant(
    sa.text("DELETE FROM message_fts WHERE rowid IN (SELECT value FROM json_each(:ids))")
)
FORGET_GONE = q.constant(sa.text("DELETE FROM search_gone WHERE id = :id"))
NARROW_GONE = q.constant(sa.text("UPDATE search_gone SET lo = :lo WHERE id = :id"))
#: (id, tree) of the listed sessions among the ids (``SESSION_BY_ID``, many at once)
LISTED_SESSIONS = q.constant(
    sa.text(
        "SELECT s.id, coalesce(s.root_id, s.id) FROM sessions s "
        "WHERE s.id IN (SELECT value FROM json_each(:ids)) AND s.holder = 0"
    )
)
#: (id, tree, whether its view may hold segments) of every listed session of the trees,
#: in listing order (``TREE_SESSION_IDS``): a session that inherits nothing and whose list
#: holds no segment shows its own rows alone (its chain is itself)
TREE_SESSIONS = q.constant(
    sa.text(
        "SELECT s.id, s.root_id, s.inherit_id IS NOT NULL OR EXISTS (SELECT 1 FROM "
        "session_segments g WHERE g.session_id = s.id) FROM sessions s "
        "WHERE s.root_id IN (SELECT value FROM json_each(:trees)) AND s.holder = 0 "
        "ORDER BY s.created_at, s.id"
    )
)
#: each session's view's segments, oldest first: ``statements.RESOLVED`` for many
#: sessions at once, each chain walked from its own session (``origin``)
VIEWS = q.constant(
    sa.text(
        "WITH RECURSIVE chain(origin, tree, sid, cut) AS (SELECT json_extract(value, '$[0]'), "
        "json_extract(value, '$[1]'), json_extract(value, '$[0]'), :beyond "
        "FROM json_each(:sessions) UNION SELECT c.origin, c.tree, s.inherit_id, "
        "CASE WHEN s.inherit_upto < c.cut THEN s.inherit_upto ELSE c.cut END "
        "FROM chain c JOIN sessions s ON s.id = c.sid WHERE s.inherit_id IS NOT NULL) "
        "SELECT c.origin, g.owner_id, g.lo, g.hi, g.message_count, g.size_bytes, g.id, "
        "g.session_id FROM chain c JOIN session_segments g ON g.session_id = c.sid "
        "AND g.root_id = c.tree AND g.hi <= c.cut ORDER BY c.origin, g.hi"
    )
)
#: the place of each (tree, owner, lo)'s oldest row above ``lo``. For a session's own rows
#: (``lo`` < 0) that is its smallest place, read from the (session_id, ord) index alone:
#: a listed session's places grow with its ids (it only appends, and loses only its
#: oldest or newest rows), and a row without a place sorts first and answers None (the
#: caller then counts the rows, as before)
FIRST_PLACES = q.constant(
    sa.text(
        "SELECT CASE WHEN json_extract(r.value, '$[2]') < 0 THEN (SELECT m.ord "
        "FROM messages m WHERE m.session_id = json_extract(r.value, '$[1]') "
        "ORDER BY m.ord LIMIT 1) ELSE (SELECT m.ord FROM messages m "
        "WHERE m.session_id = json_extract(r.value, '$[1]') "
        "AND m.root_id = json_extract(r.value, '$[0]') "
        "AND m.id > json_extract(r.value, '$[2]') ORDER BY m.id LIMIT 1) END "
        "FROM json_each(:ranges) r ORDER BY r.key"
    )
)
#: the lookups' statements by their text: a few shapes (which conditions a scope has),
#: each compiled once per process
_SHAPES: dict[str, sa.TextClause] = {}


def _shape(sql: str) -> sa.TextClause:
    stmt = _SHAPES.get(sql)
    if stmt is None:
        stmt = _SHAPES[sql] = q.constant(sa.text(sql))
    return stmt


def token(kind: str, value: str) -> str:
    """A scope token: ``kind`` (``t`` tree, ``r`` role) and ``value``'s UTF-8 in hex."""
    return kind + value.encode("utf-8", "surrogatepass").hex()


def _value(tok: str) -> str:
    return bytes.fromhex(tok[1:]).decode("utf-8", "surrogatepass")


def _any_of(tokens: Sequence[str]) -> str:
    return "scope : (" + " OR ".join(f'"{t}"' for t in tokens) + ")"


class SqliteSearch:
    """:class:`~..search.SearchStatements` on FTS5."""

    def compile(self, query: Query) -> str | None:
        return to_fts5(query)

    def index(self, cx: Executor, rows: Sequence[IndexRow]) -> None:
        if not rows:
            return
        scopes: dict[tuple[str, str], str] = {}
        payload = []
        for r in rows:
            key = (r.root_id, r.role)
            scope = scopes.get(key)
            if scope is None:
                scope = scopes[key] = f"{token('t', r.root_id)} {token('r', r.role)}"
            payload.append((r.id, r.body, scope))
        if isinstance(cx, RawExecutor):  # the fast path: executemany is the quickest
            cx.connection.executemany(INDEX_ROW, payload)
        else:
            cx.run(INDEX, {"rows": json.dumps(payload, ensure_ascii=False)})

    def listed_sessions(self, cx: Executor, ids: Sequence[str]) -> list[tuple[str, str]]:
        if not ids:
            return []
        rows = cx.rows(LISTED_SESSIONS, {"ids": json.dumps(list(ids))})
        return [(str(sid), str(root)) for sid, root in rows]

    def tree_sessions(self, cx: Executor, trees: Sequence[str]) -> list[tuple[str, str, bool]]:
        if not trees:
            return []
        rows = cx.rows(TREE_SESSIONS, {"trees": json.dumps(list(trees))})
        return [(str(sid), str(root), bool(chained)) for sid, root, chained in rows]

    def views(
        self, cx: Executor, sessions: Sequence[tuple[str, str]]
    ) -> dict[str, list[Sequence[Any]]]:
        out: dict[str, list[Sequence[Any]]] = {}
        if not sessions:
            return out
        params = {"sessions": json.dumps([list(x) for x in sessions]), "beyond": BEYOND}
        for row in cx.rows(VIEWS, params):
            out.setdefault(str(row[0]), []).append(row[1:])
        return out

    def first_places(
        self, cx: Executor, ranges: Sequence[tuple[str, str, int]]
    ) -> list[int | None]:
        if not ranges:
            return []
        rows = cx.rows(FIRST_PLACES, {"ranges": json.dumps([list(r) for r in ranges])})
        return [int(r[0]) if isinstance(r[0], int) else None for r in rows]

    def _where(self, match: str | None, scope: SearchScope) -> tuple[list[str], dict[str, Any]]:
        """(conditions, parameters) of a lookup in ``scope``: the FTS5 match with the
        scope's tokens (``f``), and conditions on the message's row (``m``)."""
        params: dict[str, Any] = {"upto": scope.upto_id}
        conditions: list[str] = []
        roots = scope.roots
        if roots is not None and scope.parts is not None and len(roots) > MAX_ROOT_TOKENS:
            roots = None  # the views scope it alone
        if match is not None:
            expr = f"({match})"
            if roots is not None:
                expr += " AND " + _any_of([token("t", r) for r in roots])
            if scope.roles is not None:
                expr += " AND " + _any_of([token("r", r) for r in scope.roles])
            params["match"] = expr
            conditions += ["message_fts MATCH :match", "f.rowid <= :upto"]
        else:
            conditions += ["m.indexed IS NOT NULL", "m.id <= :upto"]
            if roots is not None:
                conditions.append("m.root_id IN (SELECT value FROM json_each(:roots))")
                params["roots"] = json.dumps(roots)
            if scope.roles is not None:
                conditions.append("m.role IN (SELECT value FROM json_each(:roles))")
                params["roles"] = json.dumps(scope.roles)
        if scope.after is not None:
            conditions.append("m.timestamp >= :after")
            params["after"] = scope.after
        if scope.before is not None:
            conditions.append("m.timestamp < :before")
            params["before"] = scope.before
        if scope.parts is not None:
            # a session's own rows (lo < 0, hi BEYOND) hold every range of the same owner:
            # a row of theirs is checked against one set of owners; only the rows of the
            # other owners walk the ranges (a few: the inherited history of branches whose
            # parent is not in the scope)
            whole = sorted({p[0] for p in scope.parts if p[1] < 0 and p[2] >= BEYOND})
            held = set(whole)
            ranges = sorted({p for p in scope.parts if p[0] not in held})
            alternatives = []
            if whole:
                alternatives.append("m.session_id IN (SELECT value FROM json_each(:owners))")
                params["owners"] = json.dumps(whole)
            if ranges:
                alternatives.append(
                    "(m.session_id IN (SELECT value FROM json_each(:p_owners)) "
                    "AND EXISTS (SELECT 1 FROM json_each(:parts) p WHERE "
                    "m.session_id = json_extract(p.value, '$[0]') "
                    "AND m.id > json_extract(p.value, '$[1]') "
                    "AND m.id <= json_extract(p.value, '$[2]')))"
                )
                params["p_owners"] = json.dumps(sorted({p[0] for p in ranges}))
                params["parts"] = json.dumps([list(p) for p in ranges])
            conditions.append("(" + " OR ".join(alternatives or ["0"]) + ")")
        return conditions, params

    def lookup(
        self, cx: Executor, match: str | None, scope: SearchScope, limit: int
    ) -> list[Sequence[Any]]:
        conditions, params = self._where(match, scope)
        where = " AND ".join(conditions)
        if match is not None:
            source, order = "message_fts f JOIN messages m ON m.id = f.rowid", "f.rowid"
        else:
            # CROSS JOIN keeps messages the outer loop (newest first by its key, stopping at
            # the limit): the planner would otherwise scan the whole index and sort
            source, order = "messages m CROSS JOIN message_fts f ON f.rowid = m.id", "m.id"
        stmt = _shape(
            f"SELECT {_ROW_COLS}, f.body FROM {source} "  # noqa: S608 - constant text
            f"WHERE {where} ORDER BY {order} DESC LIMIT :n"
        )
        return list(cx.rows(stmt, {**params, "n": limit}))

    def count(self, cx: Executor, match: str | None, scope: SearchScope, cap: int) -> int:
        conditions, params = self._where(match, scope)
        where = " AND ".join(conditions)
        # with a match, the join skips the orphans (entries of deleted messages)
        source = (
            "messages m" if match is None else "message_fts f JOIN messages m ON m.id = f.rowid"
        )
        stmt = _shape(
            f"SELECT count(*) FROM (SELECT 1 FROM {source} "  # noqa: S608 - constant text
            f"WHERE {where} LIMIT :cap)"
        )
        return int(cx.rows(stmt, {**params, "cap": cap})[0][0])

    def entries(self, cx: Executor, lo: int, hi: int) -> list[IndexRow]:
        out: list[IndexRow] = []
        for rowid, scope, body in cx.rows(ENTRIES, {"lo": lo, "hi": hi}):
            tree = role = ""
            for tok in str(scope).split():
                if tok[:1] == "t":
                    tree = _value(tok)
                elif tok[:1] == "r":
                    role = _value(tok)
            out.append(IndexRow(int(rowid), tree, role, str(body)))
        return out

    def clear(self, cx: Executor) -> None:
        cx.run(CLEAR, {})
        cx.run(CLEAR_GONE, {})

    def note_gone(self, cx: Executor, ranges: Sequence[tuple[int, int]]) -> None:
        if ranges:
            cx.run(NOTE_GONE, {"ranges": json.dumps([list(r) for r in ranges])})

    def sweep(self, cx: Executor, limit: int) -> int:
        removed = 0
        for gone_id, lo, hi in cx.rows(OLDEST_GONE, {"n": limit}):
            if limit <= 0:
                break
            walked = cx.rows(GONE_WALK, {"lo": int(lo), "hi": int(hi), "n": limit})
            limit -= len(walked)
            orphans = [int(r[0]) for r in walked if r[1]]
            if orphans:
                cx.run(DROP_ENTRIES, {"ids": json.dumps(orphans)})
                removed += len(orphans)
            if limit > 0:  # walked to the range's end
                cx.run(FORGET_GONE, {"id": gone_id})
            else:
                cx.run(NARROW_GONE, {"id": gone_id, "lo": int(walked[-1][0])})
        return removed


SQLITE_SEARCH = SqliteSearch()

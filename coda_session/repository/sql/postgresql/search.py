"""PostgreSQL's search index: the side table ``message_search`` (see migration 0012).

Each indexed message has one row: its id (the message's, ``ON DELETE CASCADE``), its
tree's key and role, its index body (the terms of ``search.analysis`` joined by spaces)
and ``tsv``, a ``tsvector`` of the same terms with their positions, written by
:func:`tsvector_literal` from the terms (never ``to_tsvector``: the server's parser and
dictionaries play no part), with a GIN index. A query is ``search.query.to_tsquery``'s
literal, always a bound parameter cast to ``tsquery``.

Besides the terms, ``tsv`` holds lexemes no term can be (terms have no ASCII
punctuation, these begin with ``~``):

* ``~r`` and the tree's key (a SHA-256 of it past :data:`MAX_KEY_BYTES`): a lookup in a
  few trees ANDs them with the query, so GIN intersects the term's rows with the tree's
  (its "fast scan" skips through a frequent term's list) instead of collecting every
  row of the term;
* ``~long`` on a message a ``tsvector`` cannot hold whole: more than
  :data:`MAX_POSITION` terms, or a term more than :data:`MAX_POSITIONS` times (PostgreSQL
  keeps no position past 16383 and at most 256 of a lexeme). Its positions are written
  up to those limits; every term is there, so a phrase with its positions dropped
  (``to_tsquery(positions=False)``) finds a superset of its rows, and each such row is
  checked against ``search.query.matches`` before it counts;
* ``~over`` on a message whose distinct terms pass a ``tsvector``'s size
  (:data:`MAX_LEXEME_BYTES`): the terms past it are left out, and the message is a
  candidate of every query in its scope, checked by ``matches`` (such messages are a
  few megabytes of distinct words: rare).

So a search on PostgreSQL finds exactly the messages ``matches`` accepts, at any length,
as on SQLite and in memory.

The lookup lets the planner choose between the GIN index (a rare term: a bitmap of its
rows, sorted) and a backward scan of the primary key that stops at the window (a
frequent term), by the statistics PostgreSQL keeps on ``tsv``'s lexemes; each lookup is
planned for its own query (``plan_cache_mode`` = ``force_custom_plan`` for the
transaction), as a generic plan of a prepared statement would choose one path for every
term.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from ....search.query import Query, matches, to_tsquery
from ..branching import BEYOND
from ..executors import Executor
from ..search import MAX_ROOT_TOKENS, IndexRow, SearchScope

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_LEXEME_BYTES",
    "MAX_POSITION",
    "MAX_POSITIONS",
    "PG_SEARCH",
    "PgSearch",
    "TsMatch",
    "tree_lexeme",
    "tree_lexeme_sql",
    "tsvector_literal",
    "with_tree_sql",
]

#: the largest position a ``tsvector`` keeps (larger ones become this one)
MAX_POSITION = 16383
#: the most positions a ``tsvector`` keeps of one lexeme
MAX_POSITIONS = 256
#: the lexemes' bytes written at most (a ``tsvector`` holds under 1 MiB of them)
MAX_LEXEME_BYTES = 1_000_000
#: a tree key longer than this (in UTF-8) is written as its SHA-256 (a lexeme holds
#: at most 2047 bytes)
MAX_KEY_BYTES = 512

LONG = "~long"
OVER = "~over"


def _quote(lexeme: str) -> str:
    """A lexeme as a quoted ``tsvector``/``tsquery`` literal (backslash escapes the next
    character even inside quotes; a quote is doubled)."""
    if "'" in lexeme or "\\" in lexeme:
        lexeme = lexeme.replace("\\", "\\\\").replace("'", "''")
    return "'" + lexeme + "'"


def tree_lexeme(root_id: str) -> str:
    """The lexeme of a tree's key in ``tsv``."""
    raw = root_id.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_KEY_BYTES:
        return "~h" + hashlib.sha256(raw).hexdigest()
    return "~r" + root_id


def tree_lexeme_sql(column: str) -> str:
    """SQL for :func:`tree_lexeme` of a text column (the same lexeme)."""
    return (
        f"CASE WHEN octet_length({column}) > {MAX_KEY_BYTES} "
        f"THEN '~h' || encode(sha256(convert_to({column}, 'UTF8')), 'hex') "
        f"ELSE '~r' || {column} END"
    )


def with_tree_sql(tsv: str, root: str) -> str:
    """SQL for a ``tsvector`` written by :func:`tsvector_literal` with its tree's lexeme
    added (a lexeme without position: positions are unchanged)."""
    return f"CAST({tsv} AS tsvector) || array_to_tsvector(ARRAY[{tree_lexeme_sql(root)}])"


def tsvector_literal(terms: Sequence[str]) -> str:
    """The ``tsvector`` literal of a message with these index terms (position = index +
    1), without its tree's lexeme (:func:`with_tree_sql` adds it): see the module's
    docstring for the limits and the marks ``~long`` and ``~over``."""
    if len(terms) <= MAX_POSITIONS:
        # the common case: no limit can be reached (256 terms of at most 100 characters)
        short: dict[str, str] = {}
        for i, term in enumerate(terms, 1):
            seen = short.get(term)
            short[term] = str(i) if seen is None else f"{seen},{i}"
        return " ".join([f"{_quote(t)}:{p}" for t, p in short.items()])
    positions: dict[str, list[int]] = {}
    dropped = False
    for i, term in enumerate(terms[:MAX_POSITION], 1):
        at = positions.setdefault(term, [])
        if len(at) < MAX_POSITIONS:
            at.append(i)
        else:
            dropped = True
    long = dropped or len(terms) > MAX_POSITION
    head: list[str] = []
    # (a tree's lexeme, added by the server, stays well within what is left)
    size = 0
    out: list[str] = []
    over = False
    # the terms past position 16383 (no position kept: present, for ``&``)
    extra = dict.fromkeys(t for t in terms[MAX_POSITION:] if t not in positions)
    for term in [*positions, *extra]:
        lexeme = _quote(term)
        size += len(lexeme.encode("utf-8", "surrogatepass"))
        if size > MAX_LEXEME_BYTES:
            over = True
            break
        kept = positions.get(term)
        out.append(lexeme + ":" + ",".join(map(str, kept)) if kept else lexeme)
    if long:
        head.append(_quote(LONG))
    if over:
        head.append(_quote(OVER))
    return " ".join(head + out)


class TsMatch(str):
    """A compiled query (the ``tsquery`` literal sent as a parameter) that keeps its
    parsed query, to check the messages ``tsv`` holds only in part (``~long``, ``~over``)."""

    __slots__ = ("query",)

    query: Query | None

    def __new__(cls, text: str, query: Query | None = None) -> TsMatch:
        made = super().__new__(cls, text)
        made.query = query
        return made


def _sql_string(text: str) -> str:
    """A constant of this module's as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


#: whether ``tsv`` holds a message only in part (``~long``, ``~over``)
_INEXACT = f"s.tsv @@ CAST({_sql_string(_quote(LONG) + ' | ' + _quote(OVER))} AS tsquery)"
#: a message's columns as .rows.message_of reads them, its tree, owner and place, the
#: entry's body and whether ``tsv`` holds it only in part
_ROW_COLS = (
    "m.id, m.role, m.content, m.timestamp, CAST(m.metadata AS TEXT), m.content_zlib, "
    f"m.size_bytes, m.char_count, m.root_id, m.session_id, m.ord, s.body, {_INEXACT}"
)
# The planner settings of a lookup, for its statements only (then restored): GIN is read
# through bitmap scans, which the library's connections turn off for their other reads
# (settings.py); each lookup is planned for its own tsquery, as a generic plan (a prepared
# statement's, after five runs) would take one path, index or key order, for every term;
# no parallel workers, whose start costs more than a lookup of the window.
PLANNING = sa.text(
    "SELECT current_setting('enable_bitmapscan'), current_setting('plan_cache_mode'), "
    "current_setting('max_parallel_workers_per_gather'), "
    "set_config('enable_bitmapscan', 'on', true), "
    "set_config('plan_cache_mode', 'force_custom_plan', true), "
    "set_config('max_parallel_workers_per_gather', '0', true)"
)
RESTORE = sa.text(
    "SELECT set_config('enable_bitmapscan', :bitmap, true), "
    "set_config('plan_cache_mode', :plans, true), "
    "set_config('max_parallel_workers_per_gather', :workers, true)"
)


@contextmanager
def _planned(cx: Executor) -> Iterator[None]:
    """The lookup's planner settings (:data:`PLANNING`) while the block runs."""
    bitmap, plans, workers = cx.rows(PLANNING, {})[0][:3]
    try:
        yield
    finally:
        cx.rows(RESTORE, {"bitmap": bitmap, "plans": plans, "workers": workers})


INDEX = sa.text(
    "INSERT INTO message_search (id, root_id, role, body, tsv) "  # noqa: S608 - constants
    f"SELECT i, r, o, b, {with_tree_sql('t', 'r')} FROM unnest(CAST(:ids AS BIGINT[]), "
    "CAST(:roots AS TEXT[]), CAST(:roles AS TEXT[]), CAST(:bodies AS TEXT[]), "
    "CAST(:tsvs AS TEXT[])) AS u (i, r, o, b, t) "
    # two writers may index the same pending rows at once (each write of ours indexes a
    # batch of them): the second finds the first's entries, made from the same stored text
    "ON CONFLICT (id) DO NOTHING"
)
ENTRIES = sa.text(
    "SELECT id, root_id, role, body FROM message_search WHERE id > :lo AND id <= :hi ORDER BY id"
)
CLEAR = sa.text("DELETE FROM message_search")


def index_arrays(rows: Sequence[IndexRow]) -> dict[str, list[Any]]:
    """:data:`INDEX`'s parameters: one array per column."""
    return {
        "ids": [r.id for r in rows],
        "roots": [r.root_id for r in rows],
        "roles": [r.role for r in rows],
        "bodies": [r.body for r in rows],
        "tsvs": [tsvector_literal(r.body.split()) for r in rows],
    }


_statements: dict[tuple[Any, ...], sa.TextClause] = {}


def _statement(key: tuple[Any, ...], sql: str) -> sa.TextClause:
    """One statement per shape of lookup (a few dozen at most), built once."""
    found = _statements.get(key)
    if found is None:
        found = _statements[key] = sa.text(sql)
    return found


class PgSearch:
    """:class:`~..search.SearchStatements` on a ``tsvector`` with a GIN index."""

    def compile(self, query: Query) -> str | None:
        exact = to_tsquery(query)
        if exact is None:
            return None
        loose = to_tsquery(query, positions=False)
        whole = f"({exact})"
        if loose != exact:
            whole += f" | (({loose}) & {_quote(LONG)})"
        return TsMatch(f"{whole} | {_quote(OVER)}", query)

    def index(self, cx: Executor, rows: Sequence[IndexRow]) -> None:
        if rows:
            cx.run(INDEX, index_arrays(rows))

    def _where(
        self, match: str | None, scope: SearchScope
    ) -> tuple[tuple[Any, ...], list[str], dict[str, Any], bool]:
        """(shape, conditions, parameters, whether a condition reads ``messages``) of a
        lookup in ``scope``: ``s`` is the index's row, ``m`` the message's."""
        params: dict[str, Any] = {"upto": scope.upto_id}
        conditions = ["s.id <= :upto"]
        roots = scope.roots
        tokens = roots is not None and len(roots) <= MAX_ROOT_TOKENS
        if match is not None:
            expr = str(match)
            if roots is not None and tokens:
                expr = f"({expr}) & (" + " | ".join(_quote(tree_lexeme(r)) for r in roots) + ")"
            conditions.insert(0, "s.tsv @@ CAST(:match AS tsquery)")
            params["match"] = expr
        if roots is not None and (scope.parts is None or tokens):
            conditions.append("s.root_id = ANY(CAST(:roots AS TEXT[]))")
            params["roots"] = list(roots)
        if scope.roles is not None:
            conditions.append("s.role = ANY(CAST(:roles AS TEXT[]))")
            params["roles"] = list(scope.roles)
        joined = False
        if scope.after is not None:
            conditions.append("m.timestamp >= :after")
            params["after"] = scope.after
            joined = True
        if scope.before is not None:
            conditions.append("m.timestamp < :before")
            params["before"] = scope.before
            joined = True
        whole: list[str] = []
        ranges: list[tuple[str, int, int]] = []
        if scope.parts is not None:
            joined = True
            for part in scope.parts:
                if part[1] < 0 and part[2] >= BEYOND:
                    whole.append(part[0])
                else:
                    ranges.append(part)
            alternatives = []
            if whole:
                alternatives.append("m.session_id = ANY(CAST(:owners AS TEXT[]))")
                params["owners"] = whole
            if ranges:
                alternatives.append(
                    "EXISTS (SELECT 1 FROM unnest(CAST(:p_owners AS TEXT[]), "
                    "CAST(:p_los AS BIGINT[]), CAST(:p_his AS BIGINT[])) AS p (o, lo, hi) "
                    "WHERE m.session_id = p.o AND m.id > p.lo AND m.id <= p.hi)"
                )
                params["p_owners"] = [p[0] for p in ranges]
                params["p_los"] = [p[1] for p in ranges]
                params["p_his"] = [p[2] for p in ranges]
            conditions.append("(" + " OR ".join(alternatives or ["false"]) + ")")
        shape = (tuple(sorted(params)), bool(whole), bool(ranges))
        return shape, conditions, params, joined

    def lookup(
        self, cx: Executor, match: str | None, scope: SearchScope, limit: int
    ) -> list[Sequence[Any]]:
        with _planned(cx):
            return self._lookup(cx, match, scope, limit)

    def _lookup(
        self, cx: Executor, match: str | None, scope: SearchScope, limit: int
    ) -> list[Sequence[Any]]:
        query = match.query if isinstance(match, TsMatch) else None
        out: list[Sequence[Any]] = []
        upto = scope.upto_id
        while len(out) < limit:
            shape, conditions, params, _ = self._where(match, _below(scope, upto))
            stmt = _statement(
                ("lookup", *shape),
                f"SELECT {_ROW_COLS} FROM message_search s JOIN messages m ON m.id = s.id "  # noqa: S608
                f"WHERE {' AND '.join(conditions)} ORDER BY s.id DESC LIMIT :n",
            )
            want = limit - len(out)
            rows = cx.rows(stmt, {**params, "n": want})
            for row in rows:
                if row[12] and query is not None and not matches(query, str(row[11]).split()):
                    continue
                out.append(row[:12])
            if len(rows) < want:
                break
            upto = int(rows[-1][0]) - 1
        return out

    def count(self, cx: Executor, match: str | None, scope: SearchScope, cap: int) -> int:
        with _planned(cx):
            return self._count(cx, match, scope, cap)

    def _count(self, cx: Executor, match: str | None, scope: SearchScope, cap: int) -> int:
        shape, conditions, params, joined = self._where(match, scope)
        source = "message_search s JOIN messages m ON m.id = s.id" if joined else "message_search s"
        where = " AND ".join(conditions)
        stmt = _statement(
            ("count", *shape, joined),
            f"SELECT count(*) FROM (SELECT 1 FROM {source} WHERE {where} LIMIT :cap) AS c",  # noqa: S608
        )
        counted = int(cx.rows(stmt, {**params, "cap": cap})[0][0])
        query = match.query if isinstance(match, TsMatch) else None
        if query is None or not counted:
            return counted
        # the messages tsv holds only in part: counted by the index's superset, kept by
        # matches() (they are few)
        partial = _statement(
            ("partial", *shape, joined),
            f"SELECT s.body FROM {source} WHERE {where} AND {_INEXACT} LIMIT :cap",  # noqa: S608
        )
        wrong = sum(
            not matches(query, str(r[0]).split()) for r in cx.rows(partial, {**params, "cap": cap})
        )
        if wrong and counted >= cap:
            again = int(cx.rows(stmt, {**params, "cap": cap + wrong})[0][0])
            return min(again - wrong, cap)
        return counted - wrong

    def entries(self, cx: Executor, lo: int, hi: int) -> list[IndexRow]:
        return [
            IndexRow(int(i), str(r), str(o), str(b))
            for i, r, o, b in cx.rows(ENTRIES, {"lo": lo, "hi": hi})
        ]

    def clear(self, cx: Executor) -> None:
        cx.run(CLEAR, {})


def _below(scope: SearchScope, upto: int) -> SearchScope:
    if upto == scope.upto_id:
        return scope
    return SearchScope(upto, scope.roots, scope.parts, scope.roles, scope.after, scope.before)


PG_SEARCH = PgSearch()

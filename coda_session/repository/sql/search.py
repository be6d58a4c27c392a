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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ...search.query import Query
    from .executors import Executor

__all__ = ["IndexRow", "IndexStats", "SearchScope", "SearchStatements"]


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


@dataclass(frozen=True, slots=True)
class IndexStats:
    """What :meth:`SearchStatements.stats` counts: index entries, and those whose
    message is gone (``orphaned``) or whose tree or role no longer agrees with the
    message's (``stale``)."""

    indexed: int
    orphaned: int
    stale: int


class SearchStatements(Protocol):
    """A dialect's full-text index (SQLite: FTS5; PostgreSQL: tsvector + GIN): the few
    statements only it can write. Everything else (which rows to index, the terms, the
    pending rows, the sessions' views, shown_in, counting what is pending) is the shared
    code's (:mod:`.search`), written once over the executor.

    The contract every implementation keeps:

    * A message is either *indexed* (an entry written by :meth:`index`, whose id is the
      message's id) or *pending* (``messages.indexed IS NULL``: written by another program,
      or changed by one): never both. Our inserts write ``indexed = 1`` and call
      :meth:`index` in the same transaction; an UPDATE of the message's content,
      ``content_zlib``, ``role`` or ``metadata`` by anyone sets ``indexed`` to NULL and
      removes the entry (a trigger), and a deleted message's entry goes with it (a
      trigger or ON DELETE CASCADE), so no statement of ours deletes entries but
      :meth:`clear`.
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
        self, cx: Executor, match: str, scope: SearchScope, limit: int
    ) -> list[tuple[int, str]]:
        """(id, body) of the newest ``limit`` indexed messages in ``scope`` that
        ``match`` matches, id descending."""
        ...

    def count(self, cx: Executor, match: str, scope: SearchScope, cap: int) -> int:
        """How many indexed messages in ``scope`` ``match`` matches, counting at most
        ``cap``."""
        ...

    def bodies(self, cx: Executor, ids: Sequence[int]) -> dict[int, str]:
        """The stored body of each of ``ids`` that has an entry."""
        ...

    def clear(self, cx: Executor) -> None:
        """Remove every entry (a rebuild then indexes every message again)."""
        ...

    def stats(self, cx: Executor) -> IndexStats:
        """Count the entries and the orphaned and stale ones (for the integrity check)."""
        ...

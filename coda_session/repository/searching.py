"""Search as a repository capability: what a backend that searches itself implements.

A repository that offers :class:`Searching` looks up candidates in its own index (SQL
backends: FTS5 or tsvector); one without it is searched by the Python fallback in this
module, which evaluates the same parsed query on the same index terms. Either way the
layer above ranks the candidate window in Python, so every backend returns the same hits
in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, TypeGuard

from ..models import MessageRecord
from ..search.query import Query
from .protocol import Repository

__all__ = [
    "Candidates",
    "IndexMaintenance",
    "SearchIndexReport",
    "SearchRequest",
    "Searching",
    "StoredHit",
    "can_maintain_index",
    "can_search",
]


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """One lookup of candidates, filters already resolved to ids and text bounds."""

    query: Query
    #: search what these sessions show (their inherited messages too); None: the whole store
    session_ids: frozenset[str] | None = None
    roles: frozenset[str] | None = None
    #: message timestamps compared as ISO-8601 text: ``after <= timestamp < before``
    after: str | None = None
    before: str | None = None
    #: only messages with ``id <= upto_id`` (pinned by the first page); None: all
    upto_id: int | None = None
    #: at most this many candidates, the newest matching ones
    window: int = 1000
    #: count matches up to this many; past it the count is "at least"
    count_cap: int = 10_000


@dataclass(frozen=True, slots=True)
class StoredHit:
    """One matching message and every listed session that shows it."""

    record: MessageRecord
    root_id: str
    #: (session id, 0-based position in that session) of each listed session showing it
    shown_in: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Candidates:
    """The newest matching messages (at most the request's window), newest first."""

    hits: list[StoredHit]
    #: the index body (``search.analysis.index_body``) of each hit, same order: ranked in Python
    bodies: list[str]
    #: matches counted: exact, or (``exact`` False) at least ``total``
    total: int
    exact: bool
    #: the largest message id the store had when the lookup ran (a cursor pins it)
    upto_id: int


@dataclass(frozen=True, slots=True)
class SearchIndexReport:
    """What :meth:`IndexMaintenance.check_search_index` found; ``ok`` when nothing."""

    indexed: int
    #: stored messages the index does not cover yet (written by another program): a
    #: search still finds them (evaluated in Python), the next write or a rebuild indexes them
    pending: int = 0
    #: index entries whose message is gone or whose text changed
    orphaned: int = 0
    stale: int = 0
    #: the analysis rules' version the index was built with, and the library's
    index_version: int | None = None
    current_version: int | None = None
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not (self.orphaned or self.stale or self.problems) and (
            self.index_version == self.current_version
        )


class Searching(Protocol):
    """Looks up search candidates in the repository's own index."""

    async def search_messages(self, request: SearchRequest) -> Candidates:
        """The newest messages matching ``request`` (at most its window), newest first."""
        ...


class IndexMaintenance(Protocol):
    """Rebuilds and checks a repository's search index."""

    async def rebuild_search_index(self) -> int:
        """Index every stored message again (in bulk); returns how many were indexed."""
        ...

    async def check_search_index(self) -> SearchIndexReport:
        """Compare the index with the stored messages, without changing either."""
        ...


def can_search(repo: Repository) -> TypeGuard[Searching]:
    """True when ``repo`` looks up search candidates itself (:class:`Searching`)."""
    return callable(getattr(repo, "search_messages", None))


def can_maintain_index(repo: Repository) -> TypeGuard[IndexMaintenance]:
    """True when ``repo`` keeps a search index (:class:`IndexMaintenance`)."""
    return callable(getattr(repo, "rebuild_search_index", None))

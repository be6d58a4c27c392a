"""Optional capabilities: what a repository may do beyond :class:`.Repository`.

Each capability is its own small protocol with a type guard (``can_X``). A backend opts
in by having the methods: the shipped ones inherit the protocols they implement (so mypy
checks the signatures), a user's repository may simply match one, or lack it. Code above
the repository never calls a capability's method on a bare :class:`.Repository`: it asks
the guard, and when the answer is no it takes a path every repository has. The helpers
below hold those paths, once; for the shipped backends they change nothing (memory and
custom storage computed exactly what the path computes, SQL keeps its single queries).

Searching and filtering come the same way: a ``Searching`` protocol with its method and
a ``can_search`` guard here; memory, custom storage and SQL implement it (every feature
works on every backend), and the layer above decides, through the guard, what a
repository without it does, so a user's repository is not forced to implement it.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Protocol, TypeGuard

from ..models import SessionInfo
from .base import parents_first
from .filters import SessionFilter, SessionPage, page_of
from .protocol import Repository, Snapshot

__all__ = [
    "RepositoryReads",
    "SessionFiltering",
    "Snapshots",
    "TextMeasuring",
    "TreeListing",
    "can_filter_sessions",
    "can_list_tree",
    "can_measure_text",
    "can_snapshot",
    "find_sessions",
    "list_tree",
    "snapshot",
    "text_length",
]


class TreeListing(Protocol):
    """Lists one branching tree without listing the whole store."""

    async def list_tree(self, root_id: str) -> list[SessionInfo]:
        """Every session of the branching tree whose ``root_id`` is given, oldest created
        first but each after the session it was forked from, in one query."""
        ...


class TextMeasuring(Protocol):
    """Sums the characters of messages without returning them."""

    async def text_length(
        self, session_id: str, *, upto_id: int, limit: int | None, root_id: str | None = None
    ) -> tuple[int, int]:
        """(characters of role + content + extra keys, message count) of the newest
        ``limit`` messages with ``id <= upto_id``, summed by the storage."""
        ...


class Snapshots(Protocol):
    """Reads of one committed state across many calls."""

    def snapshot(self) -> AbstractAsyncContextManager[Snapshot]:
        """``async with repo.snapshot() as snap:`` reads of one committed state: an export
        made through it never mixes two generations of a session another writer rewrites
        meanwhile (a read transaction spanning the pages, on SQL databases)."""
        ...


def _has(repo: Repository, method: str) -> bool:
    # what isinstance() with a one-method runtime-checkable protocol decides, without
    # collecting the protocol's members again at every call (microseconds each time)
    return callable(getattr(repo, method, None))


def can_list_tree(repo: Repository) -> TypeGuard[TreeListing]:
    """True when ``repo`` lists a tree itself (:class:`TreeListing`)."""
    return _has(repo, "list_tree")


def can_measure_text(repo: Repository) -> TypeGuard[TextMeasuring]:
    """True when ``repo`` sums message text itself (:class:`TextMeasuring`)."""
    return _has(repo, "text_length")


def can_snapshot(repo: Repository) -> TypeGuard[Snapshots]:
    """True when ``repo`` reads one committed state across calls (:class:`Snapshots`)."""
    return _has(repo, "snapshot")


async def list_tree(repo: Repository, root_id: str) -> list[SessionInfo]:
    """:meth:`TreeListing.list_tree`, or the tree picked out of the whole listing."""
    if can_list_tree(repo):
        return await repo.list_tree(root_id)
    return parents_first([i for i in await repo.list_sessions() if i.root_id == root_id])


async def text_length(
    repo: Repository,
    session_id: str,
    *,
    upto_id: int,
    limit: int | None,
    root_id: str | None = None,
) -> tuple[int, int]:
    """:meth:`TextMeasuring.text_length`, or the sum over the messages read."""
    if can_measure_text(repo):
        return await repo.text_length(session_id, upto_id=upto_id, limit=limit, root_id=root_id)
    rows = await repo.read_messages(session_id, upto_id=upto_id, limit=limit, root_id=root_id)
    return sum(r.text_length() for r in rows), len(rows)


def snapshot(repo: Repository) -> AbstractAsyncContextManager[Snapshot]:
    """:meth:`Snapshots.snapshot`, or the repository's own reads: each call is then its
    own transaction, so an export may mix two states of a session rewritten meanwhile."""
    if can_snapshot(repo):
        return repo.snapshot()
    # nothing says a message id names one message in the store: an export compares content
    return nullcontext(RepositoryReads(repo, global_ids=False))


class RepositoryReads:
    """A :class:`.Snapshot` made of a repository's own reads (of a frozen copy, or of a
    repository that takes no snapshots)."""

    def __init__(self, repo: Repository, *, global_ids: bool) -> None:
        self.global_ids = global_ids
        self.list_sessions = repo.list_sessions
        self.load_session = repo.load_session
        self.read_page = repo.read_page


class SessionFiltering(Protocol):
    """Filters, orders and pages the listing itself (the SQL backends: one query)."""

    async def find_sessions(self, flt: SessionFilter) -> SessionPage:
        """The page of sessions ``flt`` asks for, as :func:`.filters.page_of` defines it."""
        ...


def can_filter_sessions(repo: Repository) -> TypeGuard[SessionFiltering]:
    """True when ``repo`` filters listings itself (:class:`SessionFiltering`)."""
    return _has(repo, "find_sessions")


async def find_sessions(repo: Repository, flt: SessionFilter) -> SessionPage:
    """:meth:`SessionFiltering.find_sessions`, or the page picked out of the whole listing
    in Python (memory, custom storage): the same sessions in the same order."""
    if can_filter_sessions(repo):
        return await repo.find_sessions(flt)
    return page_of(flt, await repo.list_sessions())

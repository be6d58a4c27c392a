"""Search as a repository capability: what a backend that searches itself implements.

A repository that offers :class:`Searching` looks up candidates in its own index (SQL
backends: FTS5 or tsvector); one without it is searched by the Python fallback in this
module, which evaluates the same parsed query on the same index terms. Either way the
layer above ranks the candidate window in Python, so every backend returns the same hits
in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol, TypeGuard

from ..errors import DamagedDataError
from ..models import MessageRecord
from ..search import analysis
from ..search.query import Query, matches
from .protocol import Repository, SessionReads, Snapshot

__all__ = [
    "Candidates",
    "Evaluation",
    "IndexMaintenance",
    "Indexed",
    "SearchIndexReport",
    "SearchRequest",
    "Searching",
    "SessionView",
    "StoredHit",
    "can_maintain_index",
    "can_search",
    "record_terms",
    "scan_messages",
    "search_messages",
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
    #: the first page's time (ISO-8601 UTC) when ``upto_id`` is pinned: a store whose ids
    #: are per session (custom storage) also leaves out sessions created after it and, in
    #: sessions updated after it, messages stamped after it (global ids need no more)
    pinned_at: str | None = None


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
    #: index entries whose message is gone (harmless, not counted against ``ok``: a
    #: lookup joins the messages and ids are never reused, so none is ever shown; SQLite
    #: keeps a deleted message's entry, removed in batches by later writes or a rebuild)
    orphaned: int = 0
    #: index entries whose message's text, tree or role changed
    stale: int = 0
    #: the analysis rules' version the index was built with, and the library's
    index_version: int | None = None
    current_version: int | None = None
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not (self.stale or self.problems) and (self.index_version == self.current_version)


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


# the largest id a BigId column holds: "no pin" for a read bounded by id
_NO_PIN = 2**63 - 1
#: messages read per page by the fallback (bounded memory per read, few round trips)
_PAGE = 5000


class Indexed(NamedTuple):
    """A stored message's index terms, and (when kept between searches) their set."""

    terms: Sequence[str]
    #: the terms as a set: a query whose every term is missing from it is rejected
    #: without looking for its phrases (worth building only where it is kept)
    term_set: frozenset[str] | None = None


def record_terms(record: MessageRecord) -> Indexed | None:
    """The index terms of a stored message; None for a damaged one (never a hit: a search
    does not fail because one stored message cannot be read)."""
    try:
        return Indexed(analysis.terms(analysis.record_text(record)))
    except DamagedDataError:
        return None


@dataclass(frozen=True, slots=True)
class SessionView:
    """A listed session, as the fallback evaluates it."""

    session_id: str
    root_id: str
    created_at: datetime
    updated_at: datetime


class _Match:
    __slots__ = ("record", "root_id", "shown_in", "terms")

    def __init__(self, record: MessageRecord, root_id: str, terms: Sequence[str]) -> None:
        self.record = record
        self.root_id = root_id
        self.terms = terms
        self.shown_in: list[tuple[str, int]] = []


class Evaluation:
    """The Python evaluation of a :class:`SearchRequest` over the messages of listed
    sessions: what every backend without an index of its own (memory, custom storage)
    computes, and the reference the SQL backends' answers equal.

    Feed it each session (:meth:`wants`, then :meth:`add` each message with its position)
    and take :meth:`candidates`. With ``global_ids`` (a message id names one message in
    the whole store) a message several sessions show is one hit; without (custom storage
    numbers each session's messages) a message is the same one in two sessions of one
    tree when its id and stored form are equal (a branch holds copies of its parent's).
    """

    def __init__(
        self,
        request: SearchRequest,
        *,
        global_ids: bool,
        terms_of: Callable[[MessageRecord], Indexed | None] = record_terms,
    ) -> None:
        self.request = request
        self.global_ids = global_ids
        self.terms_of = terms_of
        self.upto_id = request.upto_id if request.upto_id is not None else _NO_PIN
        self.newest = 0
        self.found: dict[object, _Match | None] = {}
        pinned = request.pinned_at
        self._pinned_at = (
            datetime.fromisoformat(pinned) if pinned is not None and not global_ids else None
        )
        self._late: str | None = None  # the pin, for messages of sessions updated after it
        # per group without a prefix phrase: the term sets of its phrases (a message can
        # match the group only if it holds every term of one of them)
        self._needed = [
            tuple(frozenset(p.terms) for p in group)
            for group in request.query.groups
            if not any(p.prefix for p in group)
        ]

    def wants(self, view: SessionView) -> bool:
        """Whether ``view``'s messages are searched (its messages are then :meth:`add` ed)."""
        ids = self.request.session_ids
        if ids is not None and view.session_id not in ids:
            return False
        self._late = None
        pinned = self._pinned_at
        if pinned is not None and self.request.upto_id is not None:
            if view.created_at > pinned:
                return False  # made after the first page: not in this query's pages
            if view.updated_at > pinned:
                self._late = self.request.pinned_at
        return True

    def add(self, view: SessionView, position: int, record: MessageRecord) -> None:
        """One message of the session last :meth:`wants` accepted, at ``position``."""
        id_ = record.id or 0
        if id_ > self.upto_id:
            return
        if id_ > self.newest:
            self.newest = id_
        late = self._late
        if late is not None and record.timestamp > late:
            return
        key: object = (
            id_
            if self.global_ids
            else (
                view.root_id,
                id_,
                record.role,
                record.timestamp,
                record.content,
                record.extra,
                record.zcontent,
            )
        )
        found = self.found
        if key in found:
            match = found[key]
        else:
            match = found[key] = self._evaluate(record, view.root_id)
        if match is not None:
            match.shown_in.append((view.session_id, position))

    def _evaluate(self, record: MessageRecord, root_id: str) -> _Match | None:
        request = self.request
        if request.roles is not None and record.role not in request.roles:
            return None
        stamp = record.timestamp
        if (request.after is not None and stamp < request.after) or (
            request.before is not None and stamp >= request.before
        ):
            return None
        indexed = self.terms_of(record)
        if indexed is None:
            return None
        held = indexed.term_set
        if held is not None and not all(
            any(need <= held for need in group) for group in self._needed
        ):
            return None
        if not matches(request.query, indexed.terms):
            return None
        return _Match(record, root_id, indexed.terms)

    def candidates(self) -> Candidates:
        """The newest ``window`` matches, newest first, and how many matched."""
        found = [m for m in self.found.values() if m is not None]
        # newest first; equal ids (per-session ids) in a fixed order of their sessions
        found.sort(key=lambda m: (m.record.id or 0, m.shown_in[0][0]), reverse=True)
        request = self.request
        window = found[: request.window]
        return Candidates(
            hits=[StoredHit(m.record, m.root_id, tuple(m.shown_in)) for m in window],
            bodies=[analysis.index_body(m.terms) for m in window],
            total=min(len(found), request.count_cap),
            exact=len(found) <= request.count_cap,
            upto_id=request.upto_id if request.upto_id is not None else self.newest,
        )


async def scan_messages(repo: Repository, request: SearchRequest) -> Candidates:
    """The Python fallback of :meth:`Searching.search_messages`: reads every listed
    session's messages (of one committed state, where the repository takes snapshots)
    and evaluates ``request`` on them. Its cost grows with the store: a backend that
    keeps an index implements :class:`Searching` instead."""
    take = getattr(repo, "snapshot", None)
    if not callable(take):
        # nothing says a message id names one message in the store: compare content
        return await _scan(repo, request, global_ids=False)
    snap: Snapshot
    async with take() as snap:
        return await _scan(snap, request, global_ids=snap.global_ids)


async def _scan(reads: SessionReads, request: SearchRequest, *, global_ids: bool) -> Candidates:
    evaluation = Evaluation(request, global_ids=global_ids)
    upto = evaluation.upto_id
    for info in await reads.list_sessions():
        root = info.root_id or info.id
        view = SessionView(info.id, root, info.created_at, info.updated_at)
        if not evaluation.wants(view):
            continue
        position, after = 0, 0
        while True:
            rows = await reads.read_page(
                info.id, after_id=after, upto_id=upto, limit=_PAGE, root_id=root
            )
            for record in rows:
                evaluation.add(view, position, record)
                position += 1
            if len(rows) < _PAGE:
                break
            after = rows[-1].id or 0
    return evaluation.candidates()


async def search_messages(repo: Repository, request: SearchRequest) -> Candidates:
    """:meth:`Searching.search_messages`, or the Python fallback (:func:`scan_messages`)."""
    if can_search(repo):
        return await repo.search_messages(request)
    return await scan_messages(repo, request)

"""``manager.search``: its arguments checked, the candidates looked up, ranked and paged.

The repository answers with the newest matching messages (a bounded window, from its
index or from the Python evaluation); everything after that is computed here, in Python,
so every backend ranks, pages and cuts snippets alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time
from typing import Any

from .codec import check_name
from .errors import InvalidMessageError, InvalidQueryError, SessionNotFoundError
from .models import SessionInfo
from .repository import capabilities
from .repository.filters import make_filter
from .repository.protocol import Repository
from .repository.searching import (
    Candidates,
    SearchIndexReport,
    SearchRequest,
    can_maintain_index,
    search_messages,
)
from .search.analysis import INDEX_VERSION, record_text
from .search.query import Query, parse
from .search.ranking import score_bodies
from .search.results import Cursor, SearchHit, SearchResult, SessionRef, digest
from .search.snippet import make_snippet
from .timeutil import utcnow

__all__ = [
    "COUNT_CAP",
    "MAX_LIMIT",
    "MAX_WINDOW",
    "ORDERS",
    "SearchArgs",
    "check_index",
    "check_search",
    "rebuild_index",
    "run_search",
]

ORDERS = ("relevance", "newest")
#: matches are counted up to this many; past it a result says "at least"
COUNT_CAP = 10_000
MAX_LIMIT = 1000
MAX_WINDOW = 100_000


@dataclasses.dataclass(frozen=True, slots=True)
class SearchArgs:
    """A search's arguments, checked (:func:`check_search`)."""

    text: str
    query: Query
    session: str | None
    roles: frozenset[str] | None
    after: datetime | None
    before: datetime | None
    metadata: dict[str, Any] | None
    tags: tuple[str, ...]
    order: str
    limit: int
    cursor: Cursor | None
    per_session: bool
    markers: tuple[str, str]
    window: int
    made_for: str


def _bad(what: str, value: object, expected: str) -> InvalidQueryError:
    return InvalidQueryError(f"search {what} must be {expected}, not {value!r:.60}")


def _strings(value: object, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise _bad(what, value, "a string or a sequence of strings")
    items = tuple(value)
    if not items or any(type(v) is not str for v in items):
        raise _bad(what, value, "a string or a non-empty sequence of strings")
    return items


def _moment(value: object, what: str) -> datetime | None:
    """A time bound as an aware UTC datetime (a date is its midnight, UTC; a naive time
    is UTC, as the library's own timestamps are)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise _bad(what, value, "an ISO-8601 date or date-time") from None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0), UTC)
    raise _bad(what, value, "a datetime, a date or an ISO-8601 string")


def _stamp(moment: datetime) -> str:
    """A bound in the text form stored timestamps are compared with: UTC without its
    offset, so ``2024-05-01T10:00:00+00:00`` (stored) is at or after ``2024-05-01T10:00:00``
    and before nothing later; a midnight as the date alone."""
    plain = moment.astimezone(UTC).replace(tzinfo=None)
    return plain.date().isoformat() if plain.time() == time(0) else plain.isoformat()


def _count(value: object, what: str, top: int) -> int:
    if type(value) is not int or not 1 <= value <= top:
        raise _bad(what, value, f"an integer from 1 to {top}")
    return value


def check_search(
    query: object,
    *,
    session: object,
    role: object,
    after: object,
    before: object,
    metadata: object,
    tags: object,
    order: object,
    limit: object,
    cursor: object,
    per_session: object,
    markers: object,
    window: object,
) -> SearchArgs:
    """Every argument checked before anything is read (InvalidQueryError, or
    InvalidCursorError for a cursor that is bad or another search's). Any query string is
    valid."""
    if not isinstance(query, str):
        raise _bad("query", query, "a string")
    if session is not None:
        if type(session) is not str:
            raise _bad("session", session, "a session name")
        try:
            session = check_name(session, "session", lookup=True)
        except InvalidMessageError as exc:
            raise InvalidQueryError(f"search session: {exc}") from None
    roles = _strings(role, "role")
    start, end = _moment(after, "after"), _moment(before, "before")
    wanted: dict[str, Any] | None = None
    tag_list = _strings(tags, "tags") or ()
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise _bad("metadata", metadata, "a mapping of keys to values")
        # the listing's own check (a JSON value, nesting, keys): the same rules
        checked = make_filter(metadata=metadata, tags=tag_list or None).metadata
        wanted = None if checked is None else dict(checked)
    elif tag_list:
        make_filter(tags=tag_list)
    if order not in ORDERS:
        raise _bad("order", order, "'relevance' or 'newest'")
    size = _count(limit, "limit", MAX_LIMIT)
    if type(per_session) is not bool:
        raise _bad("per_session", per_session, "True or False")
    if (
        not isinstance(markers, (tuple, list))
        or len(markers) != 2
        or any(type(m) is not str for m in markers)
    ):
        raise _bad("markers", markers, "two strings (opening, closing)")
    span = _count(window, "window", MAX_WINDOW)
    if cursor is not None and type(cursor) is not str:
        raise _bad("cursor", cursor, "a string from a result's next_cursor")
    made_for = digest(
        [
            query,
            session,
            sorted(roles) if roles is not None else None,
            None if start is None else start.isoformat(),
            None if end is None else end.isoformat(),
            wanted,
            sorted(tag_list),
            order,
            per_session,
            span,
        ]
    )
    return SearchArgs(
        text=query,
        query=parse(query),
        session=session,
        roles=None if roles is None else frozenset(roles),
        after=start,
        before=end,
        metadata=wanted,
        tags=tag_list,
        order=str(order),
        limit=size,
        cursor=None if cursor is None else Cursor.decode(cursor, made_for),
        per_session=per_session,
        markers=(markers[0], markers[1]),
        window=span,
        made_for=made_for,
    )


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def _earlier(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def _sessions_with(
    repo: Repository, metadata: Mapping[str, Any] | None, tags: tuple[str, ...]
) -> set[str]:
    """The ids of the sessions whose metadata has these keys and values and these tags
    (``list_sessions``' filter: one query on SQL)."""
    try:
        flt = make_filter(metadata=metadata, tags=tags or None)
    except InvalidQueryError:
        return set()  # a query's tag: that no tag can be finds nothing (metadata was checked)
    return {i.id for i in (await capabilities.find_sessions(repo, flt)).sessions}


async def _named(repo: Repository, names: Iterable[str]) -> set[str]:
    """The ids of the sessions with these names (a name no session has finds nothing)."""
    ids = set()
    for name in set(names):
        try:
            name = check_name(name, "session", lookup=True)
        except InvalidMessageError:
            continue  # a query's session:x is never an error: no such session
        found = await repo.load_session(name=name)
        if found is not None:
            ids.add(found.id)
    return ids


async def _trees(
    repo: Repository, roots: Iterable[str]
) -> dict[str, tuple[tuple[datetime, str], SessionInfo]]:
    """session id -> (its place in the listing order, its info), for these trees."""
    infos: list[SessionInfo] = []
    if capabilities.can_list_tree(repo):
        # the trees' listings are asked for together: their round trips overlap
        for found in await asyncio.gather(*(repo.list_tree(r) for r in sorted(set(roots)))):
            infos.extend(found)
    else:
        infos = await repo.list_sessions()
    return {info.id: ((info.created_at, info.name), info) for info in infos}


def _empty(args: SearchArgs) -> SearchResult:
    return SearchResult((), 0, True, None, None, args.query)


async def run_search(repo: Repository, args: SearchArgs) -> SearchResult:
    """One page of hits for checked arguments (see ``AsyncSessionManager.search``)."""
    parsed = args.query
    scope: set[str] | None = None
    if args.session is not None:
        record = await repo.load_session(name=args.session)
        if record is None:
            raise SessionNotFoundError(f"no session with name {args.session!r}")
        scope = {record.id}
    if parsed.sessions:
        named = await _named(repo, parsed.sessions)
        scope = named if scope is None else scope & named
    tags = args.tags + tuple(t for t in parsed.tags if t not in args.tags)
    if args.metadata is not None or tags:
        chosen = await _sessions_with(repo, args.metadata, tags)
        scope = chosen if scope is None else scope & chosen
    roles = args.roles
    if parsed.roles:
        asked = frozenset(parsed.roles)
        roles = asked if roles is None else roles & asked
    after = _later(args.after, _utc(parsed.after))
    before = _earlier(args.before, _utc(parsed.before))
    if (scope is not None and not scope) or (roles is not None and not roles):
        return _empty(args)
    # the query the storage evaluates: its terms, the filters of both kinds together
    merged = dataclasses.replace(
        parsed,
        roles=() if roles is None else tuple(sorted(roles)),
        tags=tags,
        sessions=(),
        after=after,
        before=before,
    )
    cursor = args.cursor
    pinned_at = cursor.pinned_at if cursor is not None else utcnow().isoformat()
    request = SearchRequest(
        query=merged,
        session_ids=None if scope is None else frozenset(scope),
        roles=roles,
        after=None if after is None else _stamp(after),
        before=None if before is None else _stamp(before),
        upto_id=None if cursor is None else cursor.upto_id,
        window=args.window,
        count_cap=COUNT_CAP,
        pinned_at=pinned_at,
    )
    found = await search_messages(repo, request)
    return await _page(repo, args, merged, found, pinned_at, request.session_ids)


def _scores(args: SearchArgs, query: Query, found: Candidates) -> list[float]:
    n = len(found.hits)
    if args.order != "relevance" or not query.has_terms or not n:
        return [0.0] * n
    # each candidate's BM25 score over the window; the page's sort key orders them (ties
    # by id: newest first)
    return score_bodies(query, found.bodies)


async def _page(
    repo: Repository,
    args: SearchArgs,
    query: Query,
    found: Candidates,
    pinned_at: str,
    scope: frozenset[str] | None,
) -> SearchResult:
    scores = _scores(args, query, found)
    # the sessions searched that show each hit (a store may name others too)
    shown_in = [
        h.shown_in if scope is None else tuple(s for s in h.shown_in if s[0] in scope)
        for h in found.hits
    ]
    # (sort key, candidate index, the session the hit is reported for or None, position)
    entries: list[tuple[tuple[float, int, str], int, str | None, int]] = []
    for i, hit in enumerate(found.hits):
        if not shown_in[i]:
            continue
        key_id = hit.record.id or 0
        if args.per_session:
            entries.extend(((scores[i], key_id, sid), i, sid, pos) for sid, pos in shown_in[i])
        else:
            where = shown_in[i]
            first = where[0][0] if len(where) == 1 else min(s for s, _ in where)
            entries.append(((scores[i], key_id, first), i, None, 0))
    entries.sort(key=lambda e: e[0], reverse=True)
    if args.per_session:
        seen: set[str] = set()
        best = []
        for entry in entries:
            if entry[2] not in seen:
                seen.add(entry[2])  # type: ignore[arg-type]
                best.append(entry)
        entries = best
    if args.cursor is not None:
        last = args.cursor.last
        entries = [e for e in entries if e[0] < last]
    page, more = entries[: args.limit], len(entries) > args.limit
    trees = await _trees(repo, (found.hits[e[1]].root_id for e in page))
    hits = []
    for key, index, reported, position in page:
        stored = found.hits[index]
        shown = sorted(
            ((trees[sid][0], sid, pos) for sid, pos in shown_in[index] if sid in trees),
        )
        if not shown:
            continue  # every session showing it was deleted meanwhile
        refs = tuple(SessionRef(trees[sid][1].name, sid, pos) for _, sid, pos in shown)
        if reported is None or reported not in trees:
            owner = refs[0]
        else:
            owner = SessionRef(trees[reported][1].name, reported, position)
        record = stored.record
        hits.append(
            SearchHit(
                message=record.to_dict(),
                message_id=record.id or 0,
                session=owner.name,
                session_id=owner.id,
                position=owner.position,
                shown_in=refs,
                score=key[0],
                snippet=make_snippet(record_text(record), query, markers=args.markers),
            )
        )
    next_cursor = (
        Cursor(args.made_for, found.upto_id, pinned_at, page[-1][0]).encode()
        if more and page
        else None
    )
    return SearchResult(
        hits=tuple(hits),
        total=found.total,
        total_exact=found.exact,
        # the window was cut: more matches than it holds (counted, or past the count)
        window=args.window
        if found.total > args.window or (not found.exact and len(found.hits) >= args.window)
        else None,
        next_cursor=next_cursor,
        query=args.query,
    )


async def rebuild_index(repo: Repository) -> int:
    """The repository's search index rebuilt; 0 when it keeps none (memory, custom
    storage: they evaluate every search in Python)."""
    if can_maintain_index(repo):
        return await repo.rebuild_search_index()
    return 0


async def check_index(repo: Repository) -> SearchIndexReport:
    """The repository's search index checked; a repository without one reports nothing
    to check (ok)."""
    if can_maintain_index(repo):
        return await repo.check_search_index()
    return SearchIndexReport(indexed=0, index_version=INDEX_VERSION, current_version=INDEX_VERSION)

"""The same answers on every backend: the search corpus (``tests/search_corpus.py``) loaded
once per backend and module, then every query of its tables through the public API.

For each query: the exact hit set (each message once, mapped back to its corpus key by its
timestamp), the count, the newest-first order, and paging through all of it with a cursor;
with filters (role, session, tags, metadata, after/before, in the query and as keywords);
a message shared by branches once with every session that shows it; the adversarial
strings (never an error, never a wrong hit); the async API giving what the blocking one
gives. On stores of their own: a save is found by the next search, what a session stops
showing is not found any more, a cursor is pinned while messages are added, and a search
never changes the store.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coda_session import (
    AsyncSessionManager,
    InvalidCursorError,
    InvalidQueryError,
    SearchHit,
    SearchResult,
    SessionManager,
    SessionNotFoundError,
)
from tests.search_corpus import (
    ADVERSARIAL,
    ALL,
    CORPUS,
    ORDERED,
    QUERIES,
    Case,
    Conversation,
    Step,
)
from tests.support import BACKENDS, Store

KEY_OF_TIMESTAMP = {
    m["timestamp"]: key for c in CORPUS if isinstance(c, Conversation) for key, m in c.messages
}
MESSAGE_OF_KEY = {key: m for c in CORPUS if isinstance(c, Conversation) for key, m in c.messages}


def test_corpus_keys_are_unique() -> None:
    keys = [k for c in CORPUS if isinstance(c, Conversation) for k, _ in c.messages]
    assert len(keys) == len(set(keys)) == len(KEY_OF_TIMESTAMP)
    expected_keys = [k for case in (*QUERIES, *ADVERSARIAL, *ORDERED) for k in case.expected]
    assert set(expected_keys) <= ALL


# -- loading ------------------------------------------------------------------------------


def load(manager: SessionManager) -> None:
    """Run the corpus script on an empty store."""
    for step in CORPUS:
        if isinstance(step, Step):
            if step.op == "delete":
                manager.delete_session(step.name)
                continue
            session = manager.load_session(step.name)
            if step.op == "truncate":
                session.truncate_messages(step.n)
            elif step.op == "pop":
                session.pop_messages(step.n)
            elif step.op == "clear":
                session.clear_messages()
            else:
                raise AssertionError(step.op)
            manager.save_session(session)
            continue
        if step.branch_from is not None:
            session = manager.create_session(
                step.name, branch_from=step.branch_from, fork_point=step.fork_point
            )
        else:
            session = manager.create_session(step.name, exist_ok=False)
        if step.metadata:
            session.update_metadata(step.metadata)
        for _, message in step.messages:
            session.add_message(message)
        manager.save_session(session)


@dataclass
class Loaded:
    backend: str
    store: Store
    manager: SessionManager


@pytest.fixture(scope="module", params=BACKENDS)
def corpus(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Loaded]:
    backend = str(request.param)
    store = Store(backend, tmp_path_factory.mktemp(f"corpus-{backend}") / "sessions")
    manager = store.sync_manager()
    try:
        load(manager)
        yield Loaded(backend, store, manager)
    finally:
        manager.close()


# -- searching ----------------------------------------------------------------------------


def key(hit: SearchHit) -> str:
    return KEY_OF_TIMESTAMP[hit.message["timestamp"]]


def keys(hits: Sequence[SearchHit]) -> list[str]:
    return [key(h) for h in hits]


def newest_first(found: Sequence[str]) -> list[str]:
    # the corpus is saved in timestamp order: the newest message has the largest id
    return sorted(found, key=lambda k: MESSAGE_OF_KEY[k]["timestamp"], reverse=True)


def search_all(
    manager: SessionManager, query: str, *, limit: int = 100, **kwargs: Any
) -> tuple[list[SearchHit], SearchResult]:
    """Every hit of ``query``, page after page; returns them and the first page."""
    first = manager.search(query, limit=limit, **kwargs)
    hits = list(first.hits)
    page = first
    pages = 1
    while page.next_cursor is not None:
        assert len(page.hits) == limit, "a page before the last one is full"
        page = manager.search(query, limit=limit, cursor=page.next_cursor, **kwargs)
        hits.extend(page.hits)
        pages += 1
        assert pages < 1000
    # (custom storage numbers messages per session: an id is unique with its session)
    ids = [(h.session_id, h.message_id) for h in hits]
    assert len(ids) == len(set(ids)), f"a message twice in the pages of {query!r}"
    return hits, first


def ids(hits: Sequence[SearchHit]) -> list[tuple[str, int]]:
    return [(h.session_id, h.message_id) for h in hits]


def check_newest_order(backend: str, hits: Sequence[SearchHit]) -> None:
    """Newest first: in the order of writing where ids number the whole store; on custom
    storage, whose ids number each session's messages (README: "Where ranking may differ
    between backends"), newest first within each session."""
    if backend != "custom":
        found = keys(hits)
        assert found == newest_first(found), "order='newest' is newest first"
        return
    for session in {h.session for h in hits}:
        numbers = [h.message_id for h in hits if h.session == session]
        assert numbers == sorted(numbers, reverse=True), session


def check_case(loaded: Loaded, case: Case) -> None:
    manager = loaded.manager
    hits, first = search_all(manager, case.query, order="newest", **case.kwargs)
    found = keys(hits)
    assert len(found) == len(set(found)), "a message twice"
    missing, extra = case.expected - set(found), set(found) - case.expected
    assert not missing and not extra, f"missing {sorted(missing)}, unexpected {sorted(extra)}"
    assert (first.total, first.total_exact) == (len(case.expected), True)
    if case.expected and len(case.expected) < 20:
        # relevance finds the same messages (its order may differ; without a term to rank,
        # its order is newest's, checked by test_paging_covers_every_hit_once)
        ranked, _ = search_all(manager, case.query, **case.kwargs)
        assert sorted(keys(ranked)) == sorted(found)
    check_newest_order(loaded.backend, hits)


@pytest.mark.parametrize("case", QUERIES, ids=[c.id for c in QUERIES])
def test_query(corpus: Loaded, case: Case) -> None:
    check_case(corpus, case)


@pytest.mark.parametrize("case", ADVERSARIAL, ids=[c.id for c in ADVERSARIAL])
def test_adversarial_query(corpus: Loaded, case: Case) -> None:
    check_case(corpus, case)


def test_enough_adversarial_strings() -> None:
    assert len({c.query for c in ADVERSARIAL}) >= 60


@pytest.mark.parametrize("case", ORDERED, ids=[f"{c.id}-{c.relevance}" for c in ORDERED])
def test_order(corpus: Loaded, case: Case) -> None:
    order = "relevance" if case.relevance else "newest"
    result = corpus.manager.search(case.query, order=order, **case.kwargs)
    if case.relevance or corpus.backend != "custom":
        assert tuple(keys(result.hits)) == case.order
    else:
        assert set(keys(result.hits)) == case.expected
        check_newest_order(corpus.backend, result.hits)
    if case.relevance:
        scores = [h.score for h in result.hits]
        assert scores == sorted(scores, reverse=True)
        assert scores[0] > scores[-1]


# -- branches: a shared message once, with every session showing it -------------------------

SHOWN_IN = {
    # forked after mig.2: mig.0-2 are shown by both, at the same positions
    "mig.1": {"migration-bug": 1, "migration-bug-retry": 1},
    "mig.2": {"migration-bug": 2, "migration-bug-retry": 2},
    # refactor kept only its newest message after refactor-b took all three
    "ref.0": {"refactor-b": 0},
    "ref.1": {"refactor-b": 1},
    "ref.2": {"refactor": 0, "refactor-b": 2},
    "refb.0": {"refactor-b": 3},
    # draft-notes was deleted: only the branch shows what it shared
    "draft.0": {"draft-notes-final": 0},
    "draft.1": {"draft-notes-final": 1},
    "final.0": {"draft-notes-final": 2},
}


@pytest.mark.parametrize("query", ["run_shell", "parse_config", "quasar"])
def test_shared_messages_once_with_every_session(corpus: Loaded, query: str) -> None:
    hits, _ = search_all(corpus.manager, query)
    assert hits
    for hit in hits:
        k = key(hit)
        shown = {ref.name: ref.position for ref in hit.shown_in}
        assert shown == SHOWN_IN[k], k
        assert {ref.id for ref in hit.shown_in} == {
            corpus.manager.get_session_info(name).id  # type: ignore[union-attr]
            for name in shown
        }
        # the hit's own session is one that shows it, at that position
        assert hit.session in shown, k
        assert hit.position == shown[hit.session], k
        assert hit.session_id == corpus.manager.get_session_info(hit.session).id  # type: ignore[union-attr]
        if k.startswith("mig."):
            assert hit.session == "migration-bug"  # the session that holds it
        assert hit.message == MESSAGE_OF_KEY[k]
        assert isinstance(hit.message_id, int)


def test_session_position_of_every_hit(corpus: Loaded) -> None:
    """The position of a hit is where its session shows it (read back with the ids)."""
    hits, _ = search_all(corpus.manager, "", limit=100)
    assert set(keys(hits)) == ALL
    shown: dict[tuple[str, str], int] = {}  # (session name, message key) -> position
    message_ids: dict[tuple[str, str], int] = {}
    for info in corpus.manager.list_sessions():
        session = corpus.manager.load_session(info.name)
        for position, (message_id, message) in enumerate(session.get_messages_with_ids()):
            assert message_id is not None
            shown[(info.name, KEY_OF_TIMESTAMP[message["timestamp"]])] = position
            message_ids[(info.name, KEY_OF_TIMESTAMP[message["timestamp"]])] = message_id
    for hit in hits:
        k = key(hit)
        refs = {(ref.name, k): ref.position for ref in hit.shown_in}
        assert refs == {sk: p for sk, p in shown.items() if sk[1] == k}, k
        assert shown[(hit.session, k)] == hit.position, k
        assert message_ids[(hit.session, k)] == hit.message_id, k


# -- paging ---------------------------------------------------------------------------------

PAGED = [("", 9), ("quasar OR kiwifruit OR migration OR upgrade", 2), ("the", 5)]
"""Queries paged through, and the page size (the hits of the first: every message)."""


@pytest.mark.parametrize("order", ["relevance", "newest"])
@pytest.mark.parametrize(("query", "limit"), PAGED)
def test_paging_covers_every_hit_once(corpus: Loaded, query: str, limit: int, order: str) -> None:
    whole = corpus.manager.search(query, order=order, limit=500)
    assert whole.next_cursor is None
    paged, first = search_all(corpus.manager, query, order=order, limit=limit)
    assert ids(paged) == ids(whole.hits)
    assert first.total == whole.total == len(whole.hits) > limit


def test_paging_with_filters(corpus: Loaded) -> None:
    filters: dict[str, Any] = {"tags": "client-x", "role": ["user", "assistant"]}
    whole = corpus.manager.search("the", limit=500, **filters)
    paged, _ = search_all(corpus.manager, "the", limit=2, **filters)
    assert ids(paged) == ids(whole.hits)
    assert whole.hits
    assert all(h.message["role"] in ("user", "assistant") for h in whole.hits)


def test_cursor_of_another_query_is_refused(corpus: Loaded) -> None:
    first = corpus.manager.search("the", limit=2)
    assert first.next_cursor is not None
    with pytest.raises(InvalidCursorError):
        corpus.manager.search("quasar", limit=2, cursor=first.next_cursor)
    with pytest.raises(InvalidCursorError):
        corpus.manager.search("the", limit=2, cursor=first.next_cursor, role="user")
    with pytest.raises(InvalidCursorError):
        corpus.manager.search("the", limit=2, cursor="not a cursor")
    assert isinstance(InvalidCursorError("x"), ValueError)


def test_per_session_gives_one_hit_per_session(corpus: Loaded) -> None:
    every, _ = search_all(corpus.manager, "the")
    best = corpus.manager.search("the", per_session=True, limit=100)
    sessions = [h.session for h in best.hits]
    assert len(sessions) == len(set(sessions))
    assert set(keys(best.hits)) <= set(keys(every))


def test_a_session_keyword_naming_no_session_raises(corpus: Loaded) -> None:
    with pytest.raises(SessionNotFoundError):
        corpus.manager.search("quasar", session="draft-notes")  # deleted
    assert corpus.manager.search("session:draft-notes quasar").hits == ()


def test_window_says_when_only_the_newest_matches_were_ranked(corpus: Loaded) -> None:
    narrow = corpus.manager.search("quasar", window=2)
    assert (narrow.total, narrow.total_exact, narrow.window) == (3, True, 2)
    assert set(keys(narrow.hits)) <= {"final.0", "draft.1"}  # the newest two
    assert corpus.manager.search("quasar").window is None


@pytest.mark.parametrize(
    "kwargs",
    [{"order": "oldest"}, {"limit": 0}, {"limit": -1}, {"window": 0}, {"role": 3}],
    ids=["order", "limit-0", "limit-negative", "window-0", "role-int"],
)
def test_bad_arguments_raise_invalid_query(corpus: Loaded, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidQueryError):
        corpus.manager.search("quasar", **kwargs)


# -- what a hit carries ---------------------------------------------------------------------

_UNSAFE = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]} - {"\n", "\t"} | {
    chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
}


def test_snippets_are_safe_to_print(corpus: Loaded) -> None:
    for query in ("", "here\x00end", "שלום", "🚀", "zstandard_decompress_chunk", "\ud83d", "alert"):
        hits, _ = search_all(corpus.manager, query, limit=100, markers=("<<", ">>"))
        for hit in hits:
            text = str(hit.snippet)
            assert not _UNSAFE & set(text), (query, key(hit), text)
            text.encode("utf-8")  # printable: no lone surrogate left in it
            assert "<script" not in hit.snippet.html()
            if query:
                assert "<<" in text and ">>" in text, (query, key(hit), text)
                assert "<mark>" in hit.snippet.html()


def test_compressed_message_is_found(corpus: Loaded) -> None:
    if corpus.store.database is not None or corpus.store.url is not None:
        packed = corpus.store.execute(
            "SELECT count(*) FROM messages WHERE content_zlib IS NOT NULL AND timestamp = ?",
            MESSAGE_OF_KEY["perf.1"]["timestamp"],
        )
        assert packed == [(1,)], "the profiling report is stored compressed"
    hits, _ = search_all(corpus.manager, '"zstandard decompress chunk"')
    assert keys(hits) == ["perf.1"]
    assert hits[0].message == MESSAGE_OF_KEY["perf.1"]


# -- the async API ---------------------------------------------------------------------------


async def test_async_api_gives_the_same_answers(corpus: Loaded) -> None:
    manager = corpus.store.async_manager()
    failures: list[str] = []
    try:
        # every 11th case (the blocking API ran them all): the async path is the same code
        for case in (*QUERIES, *ADVERSARIAL)[::11]:
            result = await manager.search(case.query, order="newest", limit=500, **case.kwargs)
            found = keys(result.hits)
            if set(found) != case.expected or len(found) != len(set(found)):
                failures.append(f"{case.id}: expected {sorted(case.expected)}, got {found}")
            sync = corpus.manager.search(case.query, order="newest", limit=500, **case.kwargs)
            if ids(sync.hits) != ids(result.hits):
                failures.append(f"{case.id}: the blocking API differs")
    finally:
        await manager.close()
    assert not failures, "\n".join(failures)


# -- on stores of their own: writes are seen, removals are not, reads write nothing ----------


def m(text: str, role: str = "user") -> dict[str, Any]:
    return {"role": role, "content": text}


async def found(manager: AsyncSessionManager, query: str, **kwargs: Any) -> list[str]:
    result = await manager.search(query, order="newest", limit=500, **kwargs)
    return [h.message["content"] for h in result.hits]


async def test_a_save_is_found_and_a_removal_is_not(store: Store) -> None:
    async with store.async_manager() as manager:
        s = await manager.create_session("work")
        s.add_message(m("zircon one"))
        assert await found(manager, "zircon") == []  # not saved yet
        await manager.save_session(s)
        assert await found(manager, "zircon") == ["zircon one"]

        s.add_message(m("zircon two"))
        s.add_message(m("zircon three"))
        await manager.save_session(s)
        await s.pop_messages(1)
        assert await found(manager, "zircon") == ["zircon two", "zircon one"]

        await manager.create_session("work-b", branch_from="work")
        s.truncate_messages(1)
        await manager.save_session(s)
        assert await found(manager, "zircon", session="work") == ["zircon two"]
        # the branch still shows both
        assert await found(manager, "zircon") == ["zircon two", "zircon one"]
        result = await manager.search("zircon one")
        assert [(r.name, r.position) for r in result.hits[0].shown_in] == [("work-b", 0)]

        await manager.delete_session("work-b")
        assert await found(manager, "zircon") == ["zircon two"]
        s.clear_messages()
        await manager.save_session(s)
        assert await found(manager, "zircon") == []

        s.add_message(m("zircon four"))
        await manager.save_session(s)
        assert await found(manager, "zircon") == ["zircon four"]
        s.set_messages([m("garnet five")])
        await manager.save_session(s)
        assert await found(manager, "zircon") == []
        assert await found(manager, "garnet") == ["garnet five"]
        await manager.delete_session("work")
        assert await found(manager, "garnet") == []
        assert await found(manager, "") == []

    # another manager on the same store sees the same
    async with store.async_manager() as manager:
        s = await manager.create_session("again")
        s.add_message(m("zircon six"))
        await manager.save_session(s)
    async with store.async_manager() as manager:
        assert await found(manager, "zircon") == ["zircon six"]


def test_blocking_save_is_found(manager: SessionManager) -> None:
    s = manager.create_session("blocking")
    s.add_message(m("obsidian block"))
    manager.save_session(s)
    result = manager.search("obsidian")
    assert [h.message["content"] for h in result.hits] == ["obsidian block"]
    assert result.hits[0].session == "blocking"
    assert result.hits[0].position == 0


async def test_cursor_is_pinned_while_messages_are_added(store: Store) -> None:
    async with store.async_manager() as manager:
        s = await manager.create_session("pinned")
        for i in range(5):
            s.add_message(m(f"basalt {i}"))
        await manager.save_session(s)
        stored = [f"basalt {i}" for i in range(5)]
        for order in ("newest", "relevance"):
            first = await manager.search("basalt", order=order, limit=2)
            assert first.next_cursor is not None
            s.add_message(m(f"basalt later {order}"))
            await manager.save_session(s)
            seen = [h.message["content"] for h in first.hits]
            cursor: str | None = first.next_cursor
            while cursor is not None:
                page = await manager.search("basalt", order=order, limit=2, cursor=cursor)
                seen.extend(h.message["content"] for h in page.hits)
                cursor = page.next_cursor
            assert sorted(seen) == sorted(stored), order
            stored.append(f"basalt later {order}")
        assert len((await manager.search("basalt", limit=100)).hits) == 7


SQL_STORES = [p for p in BACKENDS if p.id in ("sqlite", "sqlite-core", "postgresql")]


@pytest.mark.parametrize("backend", SQL_STORES)
async def test_rows_another_program_inserts_are_found(store: Store) -> None:
    async with store.async_manager() as manager:
        s = await manager.create_session("shared-db")
        s.add_message(m("written by us: andesite"))
        await manager.save_session(s)
        sid = s.id
    # as another program would: a plain INSERT, no search index row
    store.execute(
        "INSERT INTO messages (session_id, role, content, timestamp, size_bytes, char_count,"
        " root_id) VALUES (?, 'user', ?, ?, 30, 30, ?)",
        sid,
        "written by another program: andesite rhyolite",
        "2026-02-01T00:00:00+00:00",
        sid,
    )
    store.execute(
        "UPDATE sessions SET message_count = message_count + 1, size_bytes = size_bytes + 30,"
        " last_message_id = (SELECT max(id) FROM messages) WHERE id = ?",
        sid,
    )
    before = snapshot(store)
    async with store.async_manager() as manager:
        assert await found(manager, "rhyolite") == ["written by another program: andesite rhyolite"]
        assert len(await found(manager, "andesite")) == 2
        assert await found(manager, "rhyolite", session="shared-db", role="user") != []
    assert snapshot(store) == before, "a search wrote to the store"
    async with store.async_manager() as manager:
        s = await manager.load_session("shared-db")
        s.add_message(m("a later write: rhyolite again"))
        await manager.save_session(s)
        assert len(await found(manager, "rhyolite")) == 2
        store.execute("DELETE FROM messages WHERE content LIKE ?", "written by another%")
        assert await found(manager, "rhyolite") == ["a later write: rhyolite again"]


def snapshot(store: Store) -> str:
    """A digest of everything the store holds (all tables' rows; the custom directory's
    files)."""
    digest = hashlib.sha256()
    if store.database is not None:
        conn = sqlite3.connect(store.database)
        try:
            for line in conn.iterdump():
                digest.update(line.encode("utf-8", "surrogatepass"))
        finally:
            conn.close()
    elif store.url is not None:
        tables = store.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ?"
            " AND table_type = 'BASE TABLE' ORDER BY table_name",
            "public",
        )
        for (table,) in tables:
            for row in sorted(repr(r) for r in store.execute(f'SELECT * FROM "{table}"')):
                digest.update(f"{table}:{row}".encode("utf-8", "surrogatepass"))
    elif store.backend == "custom":
        for path in sorted(Path(store.path).glob("*")):
            digest.update(path.name.encode() + path.read_bytes())
    else:
        raise AssertionError("memory: compared through the API instead")
    return digest.hexdigest()


async def test_a_search_never_changes_the_store(store: Store) -> None:
    async with store.async_manager() as manager:
        s = await manager.create_session("read-only")
        s.update_metadata({"tags": ["t"]})
        s.add_message(m("feldspar " * 300))  # long: stored compressed
        s.add_message(m("feldspar quartz"))
        await manager.save_session(s)
        await manager.create_session("read-only-b", branch_from="read-only")

    async def searches(manager: AsyncSessionManager) -> list[list[str]]:
        return [
            await found(manager, "feldspar"),
            await found(manager, "quartz", session="read-only-b"),
            await found(manager, "", tags="t", role="user"),
            await found(manager, "-quartz"),
            await found(manager, "'; DROP TABLE messages; --"),
        ]

    if store.backend == "memory":
        async with store.async_manager() as manager:
            infos = [await manager.get_session_info(n) for n in ("read-only", "read-only-b")]
            first = await searches(manager)
            again = [await manager.get_session_info(n) for n in ("read-only", "read-only-b")]
            assert infos == again
            assert await searches(manager) == first
        return
    async with store.async_manager():
        pass
    before = snapshot(store)
    async with store.async_manager() as manager:
        first = await searches(manager)
        assert first[0] and first[1] == ["feldspar quartz"]
    assert snapshot(store) == before
    async with store.async_manager() as manager:
        assert await searches(manager) == first
    assert snapshot(store) == before

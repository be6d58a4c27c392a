"""``manager.search``: the public API on every backend (memory, both SQLite paths, custom
storage, PostgreSQL), through the shared ``store`` fixtures.

What is found (saved messages, inherited ones in a branch, once however many sessions
show it), the filters, both orders, ``per_session``, paging with a cursor that stays put
while messages are added, cursors of other searches, argument errors raised before
anything is read, snippets, the blocking API, and a custom storage with a ``search`` of
its own. The text analysis and the grammar themselves are tested in their own files.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from coda_session import (
    AsyncSessionManager,
    InvalidCursorError,
    InvalidQueryError,
    SearchResult,
    SessionData,
    SessionManager,
    SessionNotFoundError,
)
from coda_session.repository.searching import SearchRequest
from coda_session.search.analysis import message_text, terms
from tests.support import DictStorage, Store, user


def reply(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


async def saved(m: AsyncSessionManager, name: str, *messages: dict[str, Any], **kw: Any) -> Any:
    session = await m.create_session(name, **kw)
    for message in messages:
        session.add_message(message)
    await m.save_session(session)
    return session


def texts(result: SearchResult) -> list[str]:
    return [h.message["content"] for h in result.hits]


async def test_a_saved_message_is_found_as_get_messages_shows_it(store: Store) -> None:
    async with store.async_manager() as m:
        s = await saved(
            m,
            "fix",
            user("the migration fails with sqlite3.OperationalError"),
            reply("I fixed the migration bug in src/app/main.py"),
            user("thanks"),
        )
        s.add_message(user("an unsaved migration note"))
        result = await m.search("migration")
        assert isinstance(result, SearchResult)
        with_ids = await s.get_messages_with_ids()
        saved_ids = {i: (pos, msg) for pos, (i, msg) in enumerate(with_ids) if i is not None}
        # what is stored is searched: the message not saved yet is not found
        assert sorted(texts(result)) == [
            "I fixed the migration bug in src/app/main.py",
            "the migration fails with sqlite3.OperationalError",
        ]
        assert result.total == 2 and result.total_exact and result.window is None
        assert result.next_cursor is None
        for hit in result:
            position, message = saved_ids[hit.message_id]
            assert hit.message == message
            assert (hit.session, hit.session_id, hit.position) == ("fix", s.id, position)
            assert [(r.name, r.id, r.position) for r in hit.shown_in] == [("fix", s.id, position)]
            assert "[migration]" in str(hit.snippet)
        # identifiers and paths as written, and by their parts
        assert texts(await m.search("src/app/main.py")) == [
            "I fixed the migration bug in src/app/main.py"
        ]
        assert len(await m.search("OperationalError")) == 1
        assert len(await m.search("operational")) == 1
        await m.save_session(s)
        assert len(await m.search("migration")) == 3


async def test_a_session_scoped_search_covers_what_it_shows(store: Store) -> None:
    async with store.async_manager() as m:
        parent = await saved(
            m, "parent", user("alpha needle"), reply("no match here"), user("delta needle")
        )
        branch = await m.fork_session("parent", 2, name="branch")
        branch.add_message(user("beta needle"))
        await m.save_session(branch)
        parent.add_message(user("gamma needle"))
        await m.save_session(parent)
        scoped = await m.search("needle", session="branch", order="newest")
        assert texts(scoped) == ["beta needle", "alpha needle"]
        assert [(h.session, h.position) for h in scoped] == [("branch", 2), ("branch", 0)]
        # inside the scope, the hit is reported for the session searched
        assert all(h.session_id == branch.id for h in scoped)
        in_query = await m.search("needle session:branch", order="newest")
        assert texts(in_query) == texts(scoped)
        assert texts(await m.search("needle", session="parent", order="newest")) == [
            "gamma needle",
            "delta needle",
            "alpha needle",
        ]
        # a query's session: naming no session finds nothing; the keyword raises
        assert len(await m.search("needle session:nobody")) == 0
        with pytest.raises(SessionNotFoundError):
            await m.search("needle", session="nobody")
        # both: the sessions named by both (none here)
        assert len(await m.search("needle session:parent", session="branch")) == 0


async def test_a_shared_message_is_one_hit_naming_every_session(store: Store) -> None:
    async with store.async_manager() as m:
        await saved(m, "root", user("shared needle"), reply("root answer"))
        first = await m.fork_session("root", 1, name="first")
        first.add_message(reply("first needle answer"))
        await m.save_session(first)
        await m.fork_session("root", 1, name="second")
        result = await m.search('"shared needle"')
        assert len(result) == 1 and result.total == 1
        hit = result.hits[0]
        assert [(r.name, r.position) for r in hit.shown_in] == [
            ("root", 0),
            ("first", 0),
            ("second", 0),
        ]
        assert hit.session == "root"  # the oldest session showing it: where it was written
        # per_session: each session's best hit once (a sidebar's list)
        best = await m.search("needle", per_session=True, order="newest")
        by_session = {h.session: h.message["content"] for h in best}
        assert by_session == {
            "root": "shared needle",
            "first": "first needle answer",
            "second": "shared needle",
        }
        assert len(best) == 3 and best.total == 2  # the total counts messages


async def test_structured_compressed_and_escaped_contents_are_found(store: Store) -> None:
    long_output = "log line without the word\n" * 200 + "finally: ERR_CONNECTION_REFUSED"
    async with store.async_manager() as m:
        await saved(
            m,
            "tools",
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "calling the weather tool"}],
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": long_output},
            user("escaped: a\x00b and ␛ and \udcff here"),
            {"role": "user", "content": "metadata is not text", "metadata": {"secret": "zebra"}},
        )
        (weather,) = await m.search("lisbon")
        assert weather.message["tool_calls"][0]["function"]["name"] == "get_weather"
        assert len(await m.search("get_weather")) == 1
        assert len(await m.search("call_1")) == 0  # ids are not text
        (refused,) = await m.search("ERR_CONNECTION_REFUSED")
        assert refused.message["content"] == long_output  # stored compressed, found, whole
        assert "REFUSED]" in str(refused.snippet)
        assert len(await m.search("a\x00b")) == 1  # NUL separates: found as written
        assert len(await m.search("␛")) == 1
        assert len(await m.search("\udcff")) == 1
        assert len(await m.search("zebra")) == 0  # metadata is filtered, not searched


async def test_relevance_and_newest_orders(store: Store) -> None:
    async with store.async_manager() as m:
        await saved(
            m,
            "ranked",
            user("kernel panic kernel panic kernel panic"),
            user("a long note that mentions the kernel once among many many other words"),
            user("nothing relevant"),
        )
        relevance = await m.search("kernel")
        assert texts(relevance)[0] == "kernel panic kernel panic kernel panic"
        assert [h.score for h in relevance] == sorted((h.score for h in relevance), reverse=True)
        assert relevance.hits[0].score > relevance.hits[1].score > 0
        newest = await m.search("kernel", order="newest")
        assert texts(newest)[0].startswith("a long note")
        assert [h.score for h in newest] == [0.0, 0.0]
        # a query without a positive term: the newest messages passing its filters
        assert texts(await m.search("")) == [
            "nothing relevant",
            "a long note that mentions the kernel once among many many other words",
            "kernel panic kernel panic kernel panic",
        ]
        assert texts(await m.search("-kernel")) == ["nothing relevant"]


async def test_filters_of_the_query_and_the_keywords_hold_together(store: Store) -> None:
    old = datetime(2024, 1, 10, 12, tzinfo=UTC)
    async with store.async_manager() as m:
        await saved(
            m,
            "work",
            {"role": "user", "content": "deploy the api", "timestamp": old.isoformat()},
            {
                "role": "assistant",
                "content": "deploy done",
                "timestamp": (old + timedelta(days=5)).isoformat(),
            },
        )
        await m.create_session("tagged")
        tagged = await m.load_session("tagged")
        tagged.update_metadata({"tags": ["client-x", "urgent"], "team": {"name": "ops"}})
        tagged.add_message(user("deploy the worker"))
        await m.save_session(tagged)
        assert texts(await m.search("deploy", role="assistant")) == ["deploy done"]
        assert texts(await m.search("deploy role:assistant")) == ["deploy done"]
        assert len(await m.search("deploy role:user", role="assistant")) == 0
        assert len(await m.search("deploy", role=["user", "assistant"])) == 3
        assert texts(await m.search("deploy", before="2024-01-11")) == ["deploy the api"]
        assert texts(await m.search("deploy before:2024-01-11")) == ["deploy the api"]
        # after: inclusive, before: exclusive; a datetime or a date
        assert texts(await m.search("deploy", after=old, before=old + timedelta(days=5))) == [
            "deploy the api"
        ]
        assert len(await m.search("deploy after:2024-01-11", before=old.date())) == 0
        assert texts(await m.search("deploy", tags="client-x")) == ["deploy the worker"]
        assert texts(await m.search("deploy tag:urgent")) == ["deploy the worker"]
        assert len(await m.search("deploy tag:other", tags="client-x")) == 0
        assert texts(await m.search("deploy", metadata={"team": {"name": "ops"}})) == [
            "deploy the worker"
        ]
        assert len(await m.search("deploy", metadata={"team": "ops"})) == 0


async def test_pages_stay_put_while_messages_are_added(store: Store) -> None:
    async with store.async_manager() as m:
        a = await saved(m, "a", *(user(f"needle {i}") for i in range(13)))
        b = await saved(m, "b", *(reply(f"needle again {i}") for i in range(12)))
        for order in ("relevance", "newest"):
            first = await m.search("needle", order=order, limit=10)
            expected = first.total
            assert expected >= 25 and first.next_cursor is not None
            seen = texts(first)
            # messages added meanwhile, to both sessions and to a new one
            a.add_message(user(f"needle late {order}"))
            await m.save_session(a)
            b.add_message(reply(f"needle also late {order}"))
            await m.save_session(b)
            await saved(m, f"new-{order}", user(f"needle fresh {order}"))
            cursor: str | None = first.next_cursor
            while cursor is not None:
                page = await m.search("needle", order=order, limit=10, cursor=cursor)
                assert page.total == expected
                seen += texts(page)
                cursor = page.next_cursor
            assert len(seen) == expected and len(set(seen)) == expected
            assert not any(t.endswith(f"late {order}") or f"fresh {order}" in t for t in seen)
            # a new search sees them
            assert (await m.search("needle", order=order)).total == expected + 3


async def test_cursors_of_other_searches_and_malformed_ones_raise(store: Store) -> None:
    async with store.async_manager() as m:
        await saved(m, "s", *(user(f"needle {i}") for i in range(5)))
        first = await m.search("needle", limit=2)
        cursor = first.next_cursor
        assert cursor is not None
        # another limit is the same search
        assert len(await m.search("needle", limit=3, cursor=cursor)) == 3
        others: list[tuple[str, dict[str, Any]]] = [
            ("needles", {}),
            ("needle", {"order": "newest"}),
            ("needle", {"role": "user"}),
            ("needle", {"per_session": True}),
        ]
        for query, other in others:
            with pytest.raises(InvalidCursorError):
                await m.search(query, cursor=cursor, **other)
        await saved(m, "t")
        listing = await m.list_sessions(limit=1)
        assert listing.next_cursor is not None
        for bad in ("", "not a cursor", cursor[:-3], "e30", cursor + "!!", listing.next_cursor):
            with pytest.raises(InvalidCursorError):
                await m.search("needle", cursor=bad)


BAD_ARGUMENTS: list[tuple[dict[str, Any], str]] = [
    ({"order": "best"}, "order"),
    ({"limit": 0}, "limit"),
    ({"limit": True}, "limit"),
    ({"limit": "5"}, "limit"),
    ({"window": 0}, "window"),
    ({"role": []}, "role"),
    ({"role": 5}, "role"),
    ({"role": b"user"}, "role"),
    ({"after": "yesterday"}, "after"),
    ({"before": 3.5}, "before"),
    ({"metadata": ["a"]}, "metadata"),
    ({"metadata": {"a": object()}}, "metadata"),
    ({"tags": [1]}, "tags"),
    ({"per_session": "yes"}, "per_session"),
    ({"markers": ("[",)}, "markers"),
    ({"cursor": 5}, "cursor"),
    ({"session": 5}, "session"),
    ({"session": ""}, "session"),
]


async def test_bad_arguments_raise_before_anything_is_read(store: Store) -> None:
    m = store.async_manager()
    try:
        for kwargs, what in BAD_ARGUMENTS:
            with pytest.raises(InvalidQueryError, match=what):
                await m.search("needle", **kwargs)
        with pytest.raises(InvalidQueryError, match="query"):
            await m.search(None)  # type: ignore[arg-type]
        with pytest.raises(InvalidCursorError):
            await m.search("needle", cursor="junk!")
        assert "state=not-opened-yet" in repr(m)  # storage was not even opened
    finally:
        await m.close()


async def test_any_query_string_is_valid(store: Store) -> None:
    async with store.async_manager() as m:
        await saved(m, "s", user('an "odd" message: AND NOT (x) -y col:z ^w * 会话 ␛ \x00 end'))
        for query in (
            '"',
            'ab"c',
            "-",
            "-x",
            "AND",
            "NOT",
            "NEAR",
            "*",
            "col:x",
            "(x",
            "^",
            "\x00",
            "\ud800",
            "🙂",
            "role:",
            "after:never",
            "x" * 10_000,
        ):
            result = await m.search(query)
            assert isinstance(result, SearchResult)
        assert len(await m.search("会话")) == 1


async def test_snippets_mark_the_matches_with_the_markers_asked(store: Store) -> None:
    async with store.async_manager() as m:
        await saved(m, "s", user("the <b>quick</b> fox " + "and more words " * 40 + "quick end"))
        (hit,) = await m.search("quick", markers=("<<", ">>"))
        assert "<<quick>>" in str(hit.snippet)
        assert "[quick]" in hit.snippet.render()
        html = hit.snippet.html()
        assert "<mark>quick</mark>" in html and "<b>" not in html
        assert len(str(hit.snippet)) < len(hit.message["content"])


async def test_the_window_bounds_ranking_and_says_so(store: Store) -> None:
    async with store.async_manager() as m:
        await saved(m, "s", *(user(f"needle {i}") for i in range(6)))
        result = await m.search("needle", window=4, limit=3)
        assert result.window == 4 and result.total == 6
        rest = await m.search("needle", window=4, limit=3, cursor=result.next_cursor)
        assert rest.next_cursor is None
        assert len(texts(result) + texts(rest)) == 4
        # the newest four were ranked
        assert set(texts(result) + texts(rest)) == {f"needle {i}" for i in range(2, 6)}
        assert (await m.search("needle", window=6)).window is None


async def test_deleted_and_dropped_messages_are_not_found(store: Store) -> None:
    async with store.async_manager() as m:
        s = await saved(m, "s", user("needle one"), user("needle two"), user("needle three"))
        await saved(m, "gone", user("needle gone"))
        s.truncate_messages(1)
        await m.save_session(s)
        await m.delete_session("gone")
        assert texts(await m.search("needle")) == ["needle three"]
        # a deleted session's messages a branch still shows are found, in the branch
        await saved(m, "parent", user("haystack kept"), user("haystack dropped"))
        await m.fork_session("parent", 1, name="child")
        await m.delete_session("parent")
        (hit,) = await m.search("haystack")
        assert (hit.message["content"], hit.session, hit.position) == ("haystack kept", "child", 0)
        assert [r.name for r in hit.shown_in] == ["child"]


async def test_rebuild_and_check_the_index(store: Store) -> None:
    async with store.async_manager() as m:
        await saved(m, "s", user("needle"), reply("another"))
        indexed = await m.rebuild_search_index()
        assert indexed in (0, 2)  # memory and custom storage keep no index
        report = await m.check_search_index()
        assert report.ok, report
        assert len(await m.search("needle")) == 1


def test_the_blocking_api(manager: SessionManager) -> None:
    s = manager.create_session("sync")
    for i in range(5):
        s.add_message(user(f"needle {i}"))
    manager.save_session(s)
    first = manager.search("needle", limit=3, order="newest")
    assert texts(first) == ["needle 4", "needle 3", "needle 2"]
    rest = manager.search("needle", limit=3, order="newest", cursor=first.next_cursor)
    assert texts(rest) == ["needle 1", "needle 0"] and rest.next_cursor is None
    with pytest.raises(InvalidQueryError):
        manager.search("needle", limit=0)
    assert manager.rebuild_search_index() >= 0
    assert manager.check_search_index().ok


class IndexedStorage(DictStorage):
    """A user's storage with a search of its own: a word index kept on save, in which a
    query's first terms are looked up (a coarse prefilter: the library checks the rest)."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.index: dict[str, set[tuple[str, int]]] = {}

    def save(self, session: SessionData) -> None:
        super().save(session)
        keys = session.message_ids or list(range(1, len(session.messages) + 1))
        for entries in self.index.values():
            entries -= {e for e in entries if e[0] == session.name}
        for key, message in zip(keys, session.messages, strict=True):
            for term in terms(message_text(message)):
                self.index.setdefault(term, set()).add((session.name, key))

    def load(self, name: str) -> SessionData | None:
        self.loads.append(name)
        return super().load(name)

    def search(self, request: SearchRequest) -> list[tuple[str, int]]:
        if not request.query.groups:
            return [
                (name, k)
                for name, data in self.data.items()
                for k in data.message_ids or range(1, len(data.messages) + 1)
            ]
        # any term of the first group's phrases (a superset: prefixes count every term)
        found: set[tuple[str, int]] = set()
        for phrase in request.query.groups[0]:
            if phrase.prefix:
                for term, entries in self.index.items():
                    if term.startswith(phrase.terms[-1]):
                        found |= entries
            else:
                found |= self.index.get(phrase.terms[0], set())
        return sorted(found)


async def test_a_custom_storage_with_its_own_search() -> None:
    indexed, plain = IndexedStorage(), DictStorage()
    answers = []
    for storage in (indexed, plain):
        async with AsyncSessionManager({"session": {"backend": "memory"}}, storage) as m:
            await saved(m, "one", user("alpha needle"), reply("beta"), user("needle gamma"))
            await m.fork_session("one", 2, name="fork")
            await saved(m, "other", user("unrelated words"), user("still nothing"))
            results = [
                await m.search(q, order=o)
                for q in ("needle", "need*", "beta", "-needle", "", "needle role:user")
                for o in ("relevance", "newest")
            ]
            # the same hits in the same order; which of two sessions' messages numbered
            # alike comes first depends on their (random) ids
            answers.append(
                [
                    (
                        [(h.message_id, h.score) for h in r],
                        sorted((h.message_id, h.session, [s.name for s in h.shown_in]) for h in r),
                    )
                    for r in results
                ]
            )
            if storage is indexed:
                indexed.loads.clear()
                assert len(await m.search("gamma")) == 1
                # only the session the index named was loaded
                assert indexed.loads == ["one"]
    assert answers[0] == answers[1]
    assert (1, "one", ["one", "fork"]) in answers[0][0][1]  # "alpha needle", shared


async def test_a_custom_storage_search_that_returns_junk_is_a_storage_error() -> None:
    from coda_session import StorageError

    class Broken(DictStorage):
        def search(self, request: SearchRequest) -> list[Any]:
            return ["not a pair"]

    async with AsyncSessionManager({"session": {"backend": "memory"}}, Broken()) as m:
        await saved(m, "s", user("needle"))
        with pytest.raises(StorageError, match="search"):
            await m.search("needle")

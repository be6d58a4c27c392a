"""PostgreSQL's search index (issue 18): the tsvector literals the library writes, read
back by the real server, and what a search finds in messages a tsvector cannot hold whole
or that another program wrote.

Every case runs on the test server (its own database, ``tests.support.Store``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from coda_session import AsyncSessionManager
from coda_session.repository.searching import SearchRequest
from coda_session.repository.sql import SqlRepository
from coda_session.repository.sql.postgresql.search import (
    MAX_KEY_BYTES,
    MAX_POSITION,
    MAX_POSITIONS,
    PG_SEARCH,
    tree_lexeme,
    tree_lexeme_sql,
    tsvector_literal,
)
from coda_session.search.analysis import MAX_TERM_LENGTH, terms
from coda_session.search.query import matches, parse
from tests.support import Store, user

pytestmark = pytest.mark.postgresql


class Env:
    """A manager on a fresh PostgreSQL database and the repository under it."""

    def __init__(self, store: Store) -> None:
        # what these tests count is written by the writes themselves (the background
        # indexer is tested in test_search_background.py)
        store.config = store.config.model_copy(update={"index_in_background": False})
        self.store = store
        repo = store.repository()
        assert isinstance(repo, SqlRepository)
        self.repo = repo
        self.manager = AsyncSessionManager(store.config, repo)

    async def find(self, text: str, **request: Any) -> tuple[list[str], int, bool]:
        """(contents newest first, total, exact) of a lookup."""
        found = await self.repo.search_messages(SearchRequest(parse(text), **request))
        return [str(h.record.to_dict()["content"]) for h in found.hits], found.total, found.exact

    def parsed(self, literal: str) -> dict[str, list[int]]:
        """The server's reading of a tsvector literal: lexeme -> positions."""
        rows = self.store.execute(
            "SELECT lexeme, positions FROM unnest(CAST(? AS tsvector))", literal
        )
        return {str(lexeme): list(positions or ()) for lexeme, positions in rows}


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(Store("postgresql", tmp_path / "sessions"))
    try:
        yield e
    finally:
        await e.manager.close()


def _expected(ts: Sequence[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, t in enumerate(ts, 1):
        out.setdefault(t, []).append(i)
    return out


AWKWARD = [
    ["it's", "back\\slash", "a:b", "x'y\\z", "''", "\\\\"],
    ["会话", "话管", "管理"],
    ["🙂", "␛", "e501", "sqlite3"],
    ["ÿ" * MAX_TERM_LENGTH, "\U0001d518" * MAX_TERM_LENGTH],  # 100 characters of 2 and 4 bytes
    terms("lone \ud800 surrogate \udfff and NUL \x00 between"),
    ["repeat"] * 5 + ["other"],
]


@pytest.mark.parametrize("ts", AWKWARD, ids=range(len(AWKWARD)))
async def test_literals_read_back_as_the_terms(env: Env, ts: list[str]) -> None:
    await env.manager.list_sessions()  # the database is made and migrated
    assert env.parsed(tsvector_literal(ts)) == _expected(ts)


async def test_a_tsvector_past_its_limits_is_marked(env: Env) -> None:
    await env.manager.list_sessions()
    # more terms than positions: every term is there, positions stop at 16383
    many = [f"w{i % 1000}" for i in range(MAX_POSITION + 500)] + ["tail"]
    parsed = env.parsed(tsvector_literal(many))
    assert "~long" in parsed and parsed["~long"] == []
    assert parsed["tail"] == []  # present (for AND), no position kept
    assert max(max(p, default=0) for p in parsed.values()) <= MAX_POSITION
    assert set(parsed) - {"~long"} == set(many)
    # one lexeme more often than a tsvector keeps its positions
    repeated = ["the"] * (MAX_POSITIONS + 10)
    parsed = env.parsed(tsvector_literal(repeated))
    assert parsed["the"] == list(range(1, MAX_POSITIONS + 1)) and "~long" in parsed
    exactly = ["the"] * MAX_POSITIONS + ["end"]
    assert "~long" not in env.parsed(tsvector_literal(exactly))
    # more distinct lexemes than a tsvector holds: the rest are left out, and it says so
    distinct = [f"{i:06d}" + "x" * (MAX_TERM_LENGTH - 6) for i in range(11_000)]
    parsed = env.parsed(tsvector_literal(distinct))
    assert "~over" in parsed
    assert distinct[0] in parsed and distinct[-1] not in parsed


async def test_tree_lexeme_is_the_same_in_sql(env: Env) -> None:
    await env.manager.list_sessions()
    for key in ["abc", "it's \\ odd", "会话" * 200, "k" * (MAX_KEY_BYTES + 1), "k" * MAX_KEY_BYTES]:
        sql = f"SELECT {tree_lexeme_sql('CAST(x AS TEXT)')} FROM (SELECT CAST($1 AS TEXT) AS x) t"
        rows = env.store.execute(sql.replace("$1", "?"), key)
        assert rows[0][0] == tree_lexeme(key)


QUERIES = [
    "migration bug",
    '"migration bug"',
    '"the migration"',
    "migr*",
    '"bug fix*"',
    "-bug migration",
    '-"migration bug" fix',
    "bug OR fix",
    "it's",
    "会话",
]
TEXTS = [
    "the migration bug was fixed",
    "a bug in the migration; fix it",
    "fixing the migrator, bug fixed",
    "it's the 会话管理 migration",
]


async def test_the_index_matches_exactly_what_matches_accepts(env: Env) -> None:
    await env.manager.list_sessions()
    cases = [(text, query) for text in TEXTS for query in QUERIES]
    literals = [tsvector_literal(terms(text)) for text, _ in cases]
    compiled = [PG_SEARCH.compile(parse(query)) for _, query in cases]
    assert None not in compiled
    got = env.store.execute(
        "SELECT CAST(l AS tsvector) @@ CAST(q AS tsquery) FROM unnest(CAST(? AS TEXT[]), "
        "CAST(? AS TEXT[])) WITH ORDINALITY AS u (l, q, n) ORDER BY n",
        literals,
        [str(c) for c in compiled],
    )
    want = [matches(parse(query), terms(text)) for text, query in cases]
    assert [r[0] for r in got] == want
    assert any(want) and not all(want)


async def test_long_messages_are_found_as_in_memory(env: Env) -> None:
    s = await env.manager.create_session("long")
    filler = " ".join(f"w{i % 700}" for i in range(MAX_POSITION + 100))
    # the phrase lies past position 16383
    s.add_message(user(filler + " migration bug at the end"))
    # "the" is repeated past its 256 kept positions; the phrase is at its last one
    s.add_message(user("the " * (MAX_POSITIONS + 40) + "needle"))
    # both words, never next to each other, past the limits: no match for the phrase
    s.add_message(user(filler + " bug here and migration there"))
    s.add_message(user("a short migration bug"))
    await env.manager.save_session(s)
    contents, total, exact = await env.find('"migration bug"')
    assert [c[-24:] for c in contents] == ["a short migration bug", "migration bug at the end"]
    assert (total, exact) == (2, True)
    contents, total, _ = await env.find('"the needle"')
    assert total == 1 and contents[0].endswith("the needle")
    # an excluded phrase is decided on the whole message too
    contents, total, _ = await env.find('bug -"migration bug"')
    assert total == 1 and contents[0].endswith("bug here and migration there")
    report = await env.repo.check_search_index()
    assert report.ok, report


async def test_rows_another_program_writes_and_deletes(env: Env) -> None:
    s = await env.manager.create_session("a")
    s.add_message(user("ours first"))
    s.add_message(user("ours second"))
    await env.manager.save_session(s)
    assert env.store.execute("SELECT count(*) FROM message_search")[0][0] == 2
    sid = s.id
    env.store.execute(
        "INSERT INTO messages (session_id, role, content, timestamp, root_id) "
        "VALUES (?, 'user', 'theirs inserted', '2024-01-01T00:00:00', ?)",
        sid,
        sid,
    )
    env.store.execute("UPDATE messages SET content = 'ours changed' WHERE content = 'ours first'")
    env.store.execute("DELETE FROM messages WHERE content = 'ours second'")
    # the change took the entry out (trigger), the delete too (ON DELETE CASCADE)
    assert env.store.execute("SELECT count(*) FROM message_search")[0][0] == 0
    assert (await env.find("theirs"))[0] == ["theirs inserted"]
    assert (await env.find("first"))[0] == []
    assert (await env.find("second"))[0] == []
    assert (await env.find("changed"))[0] == ["ours changed"]
    report = await env.repo.check_search_index()
    assert report.ok and report.pending == 2, report
    assert await env.repo.rebuild_search_index() == 2
    report = await env.repo.check_search_index()
    assert report.ok and report.pending == 0 and report.indexed == 2, report
    assert (await env.find("theirs"))[0] == ["theirs inserted"]


async def test_the_sqlalchemy_path_writes_the_same_index(tmp_path: Path) -> None:
    store = Store("postgresql", tmp_path / "sessions")
    store.config = store.config.model_copy(update={"index_in_background": False})
    repo = SqlRepository(store.config, fast_path=False)
    manager = AsyncSessionManager(store.config, repo)
    try:
        s = await manager.create_session("a")
        for i in range(20):  # a save this big indexes its own messages
            s.add_message(user(f"it's the migration bug {i}"))
        await manager.save_session(s)
        s.add_message(user("one more migration"))  # a small one leaves it pending
        await manager.save_session(s)
        found = await repo.search_messages(SearchRequest(parse('"migration bug"')))
        assert (len(found.hits), found.total, found.exact) == (20, 20, True)
        scoped = SearchRequest(parse("migration"), session_ids=frozenset({s.id}))
        found = await repo.search_messages(scoped)
        assert found.total == 21 and found.hits[0].record.content == "one more migration"
        report = await repo.check_search_index()
        assert report.ok and (report.indexed, report.pending) == (20, 1), report
        literals = store.execute("SELECT tsv::text FROM message_search ORDER BY id LIMIT 1")
        assert literals[0][0] == f"'0':6 'bug':5 'it':1 'migration':4 's':2 'the':3 '~r{s.id}'"
    finally:
        await manager.close()

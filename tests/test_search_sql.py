"""The SQL backends' search index stays in step with every write (issue 18).

Through the real repository (``SqlRepository.search_messages``) on real databases: a
SQLite file on the one-trip path and through SQLAlchemy (``sqlite-core``), and PostgreSQL.
What is found after each write path (save, pop, truncate, clear, delete, import, forks),
rows another program inserts, changes and deletes, the migration and adoption of stored
rows, and the rebuild and integrity check.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from coda_session import AsyncSessionManager
from coda_session.repository.searching import SearchRequest
from coda_session.repository.sql import SqlRepository
from coda_session.repository.sql import search as sql_search
from coda_session.repository.sql.registry import dialect_for
from coda_session.repository.sql.search import DEFER_UNDER, FLUSH_AT
from coda_session.search.query import parse
from tests.support import SPEC_SCHEMA, Store, alembic, user

SQL_BACKENDS = [
    pytest.param("sqlite", marks=pytest.mark.sqlite),
    pytest.param("sqlite-core", marks=[pytest.mark.sqlite, pytest.mark.sqlite_core]),
    pytest.param("postgresql", marks=pytest.mark.postgresql),
]


class Env:
    """A manager and the repository under it, on one SQL backend."""

    def __init__(self, store: Store) -> None:
        # what these tests count is written by the writes themselves (a background
        # indexer's runs are tested on their own below)
        store.config = store.config.model_copy(update={"index_in_background": False})
        self.store = store
        repo = store.repository()
        assert isinstance(repo, SqlRepository)
        self.repo = repo
        self.manager = AsyncSessionManager(store.config, repo)

    async def find(self, text: str, **request: Any) -> list[Any]:
        """The contents of the candidates, newest first."""
        found = await self.repo.search_messages(SearchRequest(parse(text), **request))
        return [h.record.to_dict()["content"] for h in found.hits]

    async def session_ids(self, *names: str) -> frozenset[str]:
        ids = []
        for name in names:
            info = await self.manager.get_session_info(name)
            assert info is not None
            ids.append(info.id)
        return frozenset(ids)

    async def check_ok(self) -> None:
        report = await self.repo.check_search_index()
        assert report.ok, report

    def pending(self) -> int:
        return int(self.store.execute("SELECT count(*) FROM messages WHERE indexed IS NULL")[0][0])

    def indexes(self) -> bool:
        """Whether the backend's dialect keeps a full-text index (else every message is
        evaluated in Python: nothing to count or corrupt)."""
        return dialect_for(self.repo.url.get_backend_name()).search is not None

    def fts_rows(self) -> int:
        table = "message_search" if self.store.backend == "postgresql" else "message_fts"
        return int(self.store.execute(f"SELECT count(*) FROM {table}")[0][0])


@pytest.fixture(params=SQL_BACKENDS)
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return Store(str(request.param), tmp_path / "sessions")


@pytest_asyncio.fixture
async def env(sql_store: Store) -> AsyncIterator[Env]:
    e = Env(sql_store)
    try:
        yield e
    finally:
        await e.manager.close()


async def test_a_save_is_found_and_what_a_session_drops_is_not(env: Env) -> None:
    s = await env.manager.create_session("notes")
    for text in ["alpha one", "beta two", "alpha three", "gamma four", "alpha five"]:
        s.add_message(user(text))
    await env.manager.save_session(s)
    assert await env.find("alpha") == ["alpha five", "alpha three", "alpha one"]
    await env.check_ok()

    assert [m["content"] for m in await s.pop_messages(1)] == ["alpha five"]
    assert await env.find("alpha") == ["alpha three", "alpha one"]

    s.truncate_messages(3)  # keeps the newest three: beta two, alpha three, gamma four
    await env.manager.save_session(s)
    assert await env.find("alpha") == ["alpha three"]
    assert await env.find("beta") == ["beta two"]

    s.add_message(user("delta alpha"))
    s.clear_messages()
    await env.manager.save_session(s)
    assert await env.find("alpha") == []
    s.add_message(user("epsilon after the clear"))
    await env.manager.save_session(s)
    assert await env.find("epsilon") == ["epsilon after the clear"]
    await env.check_ok()

    await env.manager.delete_session("notes")
    assert await env.find("epsilon") == []
    await env.check_ok()


async def test_a_branch_reindexes_nothing_and_shows_what_it_inherits(env: Env) -> None:
    if not env.indexes():
        pytest.skip("this dialect keeps no full-text index")
    s = await env.manager.create_session("main")
    for i in range(6):
        s.add_message(user(f"shared word{i}"))
    await env.manager.save_session(s)
    assert await env.repo.rebuild_search_index() == 6
    assert (env.fts_rows(), env.pending()) == (6, 0)
    b = await env.manager.fork_session("main", 4, name="branch")
    assert (env.fts_rows(), env.pending()) == (6, 0)  # shared history is indexed once
    b.add_message(user("branch only"))
    await env.manager.save_session(b)
    # a small save leaves its message to a later write (see DEFER_UNDER); found meanwhile.
    # PostgreSQL's append indexes its rows in its one statement (an append writes nothing
    # else that could index them later)
    deferred = (7, 0) if env.store.backend == "postgresql" else (6, 1)
    assert (env.fts_rows(), env.pending()) == deferred

    branch = await env.session_ids("branch")
    main = await env.session_ids("main")
    assert await env.find("shared", session_ids=branch) == [f"shared word{i}" for i in (3, 2, 1, 0)]
    assert await env.find("shared", session_ids=main) == [
        f"shared word{i}" for i in (5, 4, 3, 2, 1, 0)
    ]
    assert await env.find("branch", session_ids=main) == []

    found = await env.repo.search_messages(SearchRequest(parse("word2")))
    assert len(found.hits) == 1  # one message shown by two sessions: found once
    (main_id,), (branch_id,) = main, branch
    assert sorted(found.hits[0].shown_in) == sorted([(main_id, 2), (branch_id, 2)])
    own = await env.repo.search_messages(SearchRequest(parse("branch"), session_ids=branch))
    assert own.hits[0].shown_in == ((branch_id, 4),)

    # the branch's parent pops what the branch shows: the branch still finds it
    await s.pop_messages(3)
    assert await env.find("word3", session_ids=branch) == ["shared word3"]
    assert await env.find("word3", session_ids=main) == []
    assert await env.find("word5") == []
    await env.manager.delete_session("main")
    assert await env.find("shared", session_ids=branch) == [f"shared word{i}" for i in (3, 2, 1, 0)]
    await env.check_ok()


async def test_filters_window_count_and_pinning(env: Env) -> None:
    s = await env.manager.create_session("f")
    for i in range(10):
        s.add_message(
            {
                "role": "user" if i % 2 else "assistant",
                "content": f"term n{i}",
                "timestamp": f"2024-01-{i + 1:02d}T00:00:00",
            }
        )
    await env.manager.save_session(s)
    found = await env.repo.search_messages(SearchRequest(parse("term"), window=3, count_cap=5))
    assert [h.record.content for h in found.hits] == ["term n9", "term n8", "term n7"]
    assert (found.total, found.exact) == (5, False)
    found = await env.repo.search_messages(SearchRequest(parse("term"), count_cap=100))
    assert (found.total, found.exact) == (10, True)
    assert found.bodies[0].split() == ["term", "n9"]
    pin = found.upto_id
    assert await env.find("term", roles=frozenset({"assistant"}), window=2) == [
        "term n8",
        "term n6",
    ]
    assert await env.find("term", after="2024-01-03", before="2024-01-05") == [
        "term n3",
        "term n2",
    ]
    s.add_message(user("term later"))
    await env.manager.save_session(s)
    assert "term later" not in await env.find("term", upto_id=pin)
    assert (await env.find("term"))[0] == "term later"
    # no positive term: the newest messages, minus the excluded ones
    assert await env.find("-n9 -later", window=2) == ["term n8", "term n7"]
    assert await env.find("", window=1) == ["term later"]
    nothing = await env.repo.search_messages(SearchRequest(parse("term"), session_ids=frozenset()))
    assert (nothing.hits, nothing.total) == ([], 0)


async def test_import_and_export_index_what_they_write(env: Env, tmp_path: Path) -> None:
    s = await env.manager.create_session("src")
    s.add_message(user("exported needle"))
    s.add_message({"role": "tool", "content": [{"type": "text", "text": "structured haystack"}]})
    s.add_message(user("compressed " + "padding " * 400))
    await env.manager.save_session(s)
    await env.manager.export_session("src", tmp_path / "src.jsonl")
    await env.manager.import_session(tmp_path / "src.jsonl", name="copy")
    assert len(await env.find("needle")) == 2
    assert len(await env.find("haystack")) == 2
    assert len(await env.find("padding")) == 2
    copy = await env.session_ids("copy")
    assert await env.find("needle", session_ids=copy) == ["exported needle"]
    await env.check_ok()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_rows_another_program_writes(tmp_path: Path, backend: str) -> None:
    store = Store(backend, tmp_path / "sessions")
    env = Env(store)
    try:
        s = await env.manager.create_session("a")
        s.add_message(user("ours first"))
        await env.manager.save_session(s)
        sid = s.id
        db = store.database
        assert db is not None
        with sqlite3.connect(db) as conn:
            conn.execute(
                "INSERT INTO messages (session_id, role, content, timestamp, root_id) "
                "VALUES (?, 'user', 'theirs inserted', '2024-01-01T00:00:00', ?)",
                (sid, sid),
            )
            conn.execute(
                "UPDATE sessions SET message_count = message_count + 1 WHERE id = ?", (sid,)
            )
            conn.execute(
                "UPDATE messages SET content = 'ours changed' WHERE content = 'ours first'"
            )
        conn.close()
        # pending rows are found (evaluated in Python); the old text no longer is
        assert await env.find("theirs") == ["theirs inserted"]
        assert await env.find("first") == []
        assert await env.find("changed") == ["ours changed"]
        report = await env.repo.check_search_index()
        assert report.ok and report.pending == 2, report

        # a save of DEFER_UNDER messages indexes its own; the pending rows wait until there
        # are FLUSH_AT of them, then the next write indexes them all
        for i in range(DEFER_UNDER):
            s.add_message(user(f"ours bulk{i}"))
        await env.manager.save_session(s)
        assert env.pending() == 2
        for i in range(FLUSH_AT - 3):
            s.add_message(user(f"ours small{i}"))
            await env.manager.save_session(s)
        assert env.pending() == FLUSH_AT - 1
        s.add_message(user("ours the last small one"))
        await env.manager.save_session(s)
        assert env.pending() == 0
        await env.check_ok()
        assert await env.find("theirs") == ["theirs inserted"]
        assert await env.find("small5") == ["ours small5"]

        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM messages WHERE content = 'theirs inserted'")
        conn.close()
        assert await env.find("theirs") == []
        await env.check_ok()
    finally:
        await env.manager.close()


async def test_rebuild_and_check(env: Env) -> None:
    if not env.indexes():
        pytest.skip("this dialect keeps no full-text index")
    s = await env.manager.create_session("r")
    for i in range(DEFER_UNDER):  # a save this big indexes its messages at once
        s.add_message(user(f"rebuilt m{i}"))
    await env.manager.save_session(s)
    assert (env.fts_rows(), env.pending()) == (DEFER_UNDER, 0)
    await env.check_ok()
    if env.store.backend != "postgresql":
        env.store.execute(
            "DELETE FROM message_fts WHERE rowid = (SELECT min(rowid) FROM message_fts)"
        )
    else:
        env.store.execute(
            "DELETE FROM message_search WHERE id = (SELECT min(id) FROM message_search)"
        )
    report = await env.repo.check_search_index()
    assert not report.ok and report.problems
    assert await env.repo.rebuild_search_index() == DEFER_UNDER
    await env.check_ok()
    assert len(await env.find("rebuilt")) == DEFER_UNDER
    assert (env.fts_rows(), env.pending()) == (DEFER_UNDER, 0)


def _spec_database(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path / "sessions.db")
    conn.executescript(SPEC_SCHEMA)
    conn.execute(
        "INSERT INTO sessions (id, name, created_at, updated_at, metadata) VALUES "
        "('s1', 'old', '2024-01-01 00:00:00', '2024-01-01 00:00:00', '{}')"
    )
    for i in range(30):
        conn.execute(
            "INSERT INTO messages (session_id, role, content, timestamp) VALUES "
            "('s1', 'user', ?, '2024-01-01T00:00:00')",
            (f"stored before search r{i}",),
        )
    conn.commit()
    conn.close()


async def test_adoption_and_migration_index_stored_rows(tmp_path: Path) -> None:
    # a database made with the spec's raw schema, adopted on open
    adopted = Store("sqlite", tmp_path / "adopted")
    _spec_database(adopted.path)
    env = Env(adopted)
    try:
        assert len(await env.find("stored")) == 30
        assert await env.find("r7") == ["stored before search r7"]
        await env.check_ok()
    finally:
        await env.manager.close()

    # a database at the revision before search, with rows: the upgrade leaves them pending,
    # the first open indexes them
    migrated = Store("sqlite", tmp_path / "migrated")
    _spec_database(migrated.path)
    assert alembic("stamp", "0001", storage=migrated.path).returncode == 0
    up = alembic("upgrade", "0010", storage=migrated.path)
    assert up.returncode == 0, up.stderr
    up = alembic("upgrade", "head", storage=migrated.path)
    assert up.returncode == 0, up.stderr
    assert migrated.execute("SELECT count(*) FROM messages WHERE indexed IS NULL") == [(30,)]
    env = Env(migrated)
    try:
        assert await env.find("r29") == ["stored before search r29"]
        await env.check_ok()
        assert env.fts_rows() == 30
    finally:
        await env.manager.close()


async def test_an_indexed_lookup_with_every_scope_at_once(env: Env) -> None:
    s = await env.manager.create_session("scoped")
    for i in range(DEFER_UNDER * 2):  # saved at once: in the index, not pending
        role = "assistant" if i % 2 else "user"
        words = "alpha beta" if i % 3 else "alpha gamma"
        stamp = f"2024-01-01T00:{i:02d}:00"
        s.add_message({"role": role, "content": f"{words} n{i}", "timestamp": stamp})
    await env.manager.save_session(s)
    other = await env.manager.create_session("other")
    other.add_message({"role": "assistant", "content": "alpha beta elsewhere"})
    await env.manager.save_session(other)
    found = await env.find(
        '"alpha beta" OR gamma -n7',  # a phrase, an alternative and an exclusion
        session_ids=await env.session_ids("scoped"),
        roles=frozenset({"assistant"}),
        after="2024-01-01T00:04",
        before="2024-01-01T00:12",
    )
    # the assistant's (odd) rows of minutes 4 to 11, but n7
    assert found == ["alpha beta n11", "alpha gamma n9", "alpha beta n5"]
    assert "alpha beta elsewhere" in await env.find('"alpha beta"', window=100)


# -- deletes leave no trace in what a search shows or counts ---------------------------------


async def _counted(env: Env, text: str, **request: Any) -> tuple[list[Any], int, bool]:
    """(the window's contents, the count, whether it is exact) of a lookup."""
    found = await env.repo.search_messages(SearchRequest(parse(text), **request))
    return [h.record.to_dict()["content"] for h in found.hits], found.total, found.exact


def _orphan_rows(env: Env) -> int:
    """Entries whose message is gone (SQLite keeps them: see sqlite.search)."""
    return int(
        env.store.execute(
            "SELECT count(*) FROM message_fts f WHERE NOT EXISTS "
            "(SELECT 1 FROM messages m WHERE m.id = f.rowid)"
        )[0][0]
    )


async def test_deleted_and_truncated_messages_are_neither_found_nor_counted(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_search, "ORPHANS_PER_WRITE", 1)  # SQLite: orphans stay around
    kept = await env.manager.create_session("kept")
    for i in range(3):
        kept.add_message(user(f"needle kept{i}"))
    await env.manager.save_session(kept)
    gone = await env.manager.create_session("gone")
    cut = await env.manager.create_session("cut")
    for i in range(40):  # interleaved ids: a deleted and a truncated session, newest last
        gone.add_message(user(f"needle gone{i}"))
        cut.add_message(user(f"needle cut{i}"))
    await env.manager.save_session(gone)
    await env.manager.save_session(cut)
    await env.manager.delete_session("gone")
    cut.truncate_messages(2)  # keeps "needle cut38", "needle cut39"
    await env.manager.save_session(cut)
    if env.indexes() and env.store.backend != "postgresql":
        assert _orphan_rows(env) == 40 + 38 - 2

    live = ["needle cut39", "needle cut38", "needle kept2", "needle kept1", "needle kept0"]
    assert await _counted(env, "needle") == (live, 5, True)
    # the window is the newest live matches, however many newer entries are gone
    assert await _counted(env, "needle", window=2, count_cap=3) == (live[:2], 3, False)
    assert await _counted(env, "needle", count_cap=5) == (live, 5, True)
    # no positive term: the newest messages, and all but the excluded ones
    assert await _counted(env, "", window=3) == (live[:3], 5, True)
    assert await _counted(env, "-kept1") == ([m for m in live if m != "needle kept1"], 4, True)
    assert await _counted(env, "gone*") == ([], 0, True)
    scoped = await env.session_ids("cut")
    assert await _counted(env, "needle", session_ids=scoped) == (live[:2], 2, True)
    await env.check_ok()


# PostgreSQL removes a deleted message's entry itself (ON DELETE CASCADE): no orphans there
@pytest.mark.parametrize(
    "sql_store", [p for p in SQL_BACKENDS if p.values[0] != "postgresql"], indirect=True
)
async def test_orphans_are_removed_by_later_writes_in_bounded_batches(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not env.indexes():
        pytest.skip("this dialect keeps no full-text index")
    batch = 8
    monkeypatch.setattr(sql_search, "ORPHANS_PER_WRITE", batch)
    s = await env.manager.create_session("gone")
    for i in range(40):
        s.add_message(user(f"needle gone{i}"))
    await env.manager.save_session(s)
    c = await env.manager.create_session("cut")
    for i in range(20):
        c.add_message(user(f"needle cut{i}"))
    await env.manager.save_session(c)
    c.truncate_messages(5)
    await env.manager.save_session(c)  # notes 15 gone, walks `batch` of them
    await env.manager.delete_session("gone")  # notes 40 more, walks the next `batch`
    # one noted range per deletion statement, not one per message
    assert int(env.store.execute("SELECT count(*) FROM search_gone")[0][0]) <= 4
    orphans = _orphan_rows(env)
    assert orphans == 40 + 15 - 2 * batch
    report = await env.repo.check_search_index()
    assert report.orphaned == orphans and report.ok, report
    assert await _counted(env, "needle") == ([f"needle cut{i}" for i in range(19, 14, -1)], 5, True)

    other = await env.manager.create_session("writer")
    other.add_message(user("a small save"))  # pending: it changes no index, sweeps nothing
    await env.manager.save_session(other)
    assert _orphan_rows(env) == orphans
    writes = 0
    while orphans:
        for i in range(DEFER_UNDER):  # a save that indexes its messages sweeps a batch
            other.add_message(user(f"write {writes}.{i}"))
        await env.manager.save_session(other)
        writes += 1
        now = _orphan_rows(env)
        assert orphans - batch <= now < orphans  # each write removes some, at most a batch
        orphans = now
    assert writes == -(-(40 + 15 - 2 * batch) // batch)
    assert int(env.store.execute("SELECT count(*) FROM search_gone")[0][0]) == 0
    report = await env.repo.check_search_index()
    assert report.orphaned == 0 and report.ok, report


async def test_a_rebuild_removes_every_orphan(env: Env) -> None:
    if not env.indexes():
        pytest.skip("this dialect keeps no full-text index")
    s = await env.manager.create_session("gone")
    k = await env.manager.create_session("kept")
    for i in range(600):  # more than a write sweeps
        s.add_message(user(f"needle gone{i}"))
    for i in range(DEFER_UNDER):
        k.add_message(user(f"needle kept{i}"))
    await env.manager.save_session(s)
    await env.manager.save_session(k)
    await env.manager.delete_session("gone")
    if env.store.backend != "postgresql":
        assert _orphan_rows(env) == 600 - sql_search.ORPHANS_PER_WRITE
        assert (await env.repo.check_search_index()).orphaned == _orphan_rows(env)
    assert await env.repo.rebuild_search_index() == DEFER_UNDER
    if env.store.backend != "postgresql":
        assert _orphan_rows(env) == 0
        assert int(env.store.execute("SELECT count(*) FROM search_gone")[0][0]) == 0
    assert env.fts_rows() == DEFER_UNDER
    report = await env.repo.check_search_index()
    assert report.orphaned == 0 and report.ok, report
    assert (await _counted(env, "needle"))[1:] == (DEFER_UNDER, True)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_another_programs_deletes_are_never_shown_and_counted_by_check(
    tmp_path: Path, backend: str
) -> None:
    store = Store(backend, tmp_path / "sessions")
    env = Env(store)
    try:
        s = await env.manager.create_session("theirs")
        for i in range(30):
            s.add_message(user(f"needle theirs{i}"))
        await env.manager.save_session(s)
        k = await env.manager.create_session("kept")
        k.add_message(user("needle kept"))
        await env.manager.save_session(k)
        db = store.database
        assert db is not None
        with sqlite3.connect(db) as conn:  # no trigger, nothing noted: 30 orphans
            conn.execute("DELETE FROM messages WHERE session_id = ?", (s.id,))
        conn.close()
        assert await _counted(env, "needle") == (["needle kept"], 1, True)
        assert await _counted(env, "needle", window=1, count_cap=1) == (["needle kept"], 1, True)
        assert await _counted(env, "theirs*") == ([], 0, True)
        assert await _counted(env, "") == (["needle kept"], 1, True)
        report = await env.repo.check_search_index()
        assert report.orphaned == 30 and report.ok, report
        await env.manager.save_session(k)  # a write of ours sweeps only what it noted
        assert _orphan_rows(env) == 30
        await env.repo.rebuild_search_index()
        assert _orphan_rows(env) == 0
        assert (await env.repo.check_search_index()).orphaned == 0
    finally:
        await env.manager.close()

"""The background indexer (``index_in_background``, the default): saves leave their
messages pending and a thread of the manager's writes their index entries after the
commit (see ``coda_session/repository/sql/indexer.py``).

On real databases (a SQLite file on the one-trip path and through SQLAlchemy, and
PostgreSQL): searches find everything before the indexer ran and after; the indexer
indexes what the saves left, removes what deletes left, never indexes a row another
program changed after it was read, and finishes its work when the manager closes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from coda_session import AsyncSessionManager, SessionConfig
from coda_session.repository.searching import SearchRequest
from coda_session.repository.sql import SqlRepository
from coda_session.repository.sql.search import FLUSH_AT
from coda_session.search.query import parse
from tests.support import Store, user

SQL_BACKENDS = [
    pytest.param("sqlite", marks=pytest.mark.sqlite),
    pytest.param("sqlite-core", marks=[pytest.mark.sqlite, pytest.mark.sqlite_core]),
    pytest.param("postgresql", marks=pytest.mark.postgresql),
]


def indexer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "coda-session-indexer"]


class Env:
    """A manager with the background indexer on, and the repository under it."""

    def __init__(self, store: Store) -> None:
        assert store.config.index_in_background  # the default
        self.store = store
        repo = store.repository()
        assert isinstance(repo, SqlRepository)
        self.repo = repo
        self.manager = AsyncSessionManager(store.config, repo)

    async def find(self, text: str) -> list[Any]:
        found = await self.repo.search_messages(SearchRequest(parse(text)))
        return [h.record.to_dict()["content"] for h in found.hits]

    def pending(self) -> int:
        return int(self.store.execute("SELECT count(*) FROM messages WHERE indexed IS NULL")[0][0])

    def entries(self) -> int:
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


async def test_a_save_is_found_at_once_and_indexed_after(env: Env) -> None:
    s = await env.manager.create_session("bulk")
    for i in range(FLUSH_AT * 3):
        s.add_message(user(f"granite block {i}"))
    await env.manager.save_session(s)
    # found at once, whether the indexer has run yet or not
    assert len(await env.find("granite")) == FLUSH_AT * 3
    await env.repo.settle_search_index()
    assert (env.entries(), env.pending()) == (FLUSH_AT * 3, 0)
    assert len(await env.find("granite")) == FLUSH_AT * 3
    report = await env.manager.check_search_index()
    assert report.ok and report.indexed == FLUSH_AT * 3, report


async def test_small_saves_are_indexed_together(env: Env) -> None:
    s = await env.manager.create_session("chat")
    for i in range(5):
        s.add_message(user(f"basalt {i}"))
        await env.manager.save_session(s)
        assert len(await env.find("basalt")) == i + 1
    await env.repo.settle_search_index()  # without waiting for the idle time
    assert (env.entries(), env.pending()) == (5, 0)
    assert (await env.manager.check_search_index()).ok


async def test_pops_truncations_and_deletes_are_cleaned_up(env: Env) -> None:
    s = await env.manager.create_session("gone")
    for i in range(40):
        s.add_message(user(f"obsidian {i}"))
    await env.manager.save_session(s)
    await env.repo.settle_search_index()
    await s.pop_messages(5)
    s.truncate_messages(20)
    await env.manager.save_session(s)
    assert len(await env.find("obsidian")) == 20
    await env.manager.delete_session("gone")
    assert await env.find("obsidian") == []
    await env.repo.settle_search_index()
    report = await env.manager.check_search_index()
    assert report.ok and (report.indexed, report.orphaned, report.pending) == (0, 0, 0), report


async def test_close_finishes_what_the_saves_left(sql_store: Store) -> None:
    async with AsyncSessionManager(sql_store.config, sql_store.repository()) as manager:
        s = await manager.create_session("closing")
        for i in range(FLUSH_AT - 1):  # under the flush size: left for the idle time
            s.add_message(user(f"pumice {i}"))
        await manager.save_session(s)
    counted = "message_search" if sql_store.backend == "postgresql" else "message_fts"
    assert sql_store.execute("SELECT count(*) FROM messages WHERE indexed IS NULL")[0][0] == 0
    assert sql_store.execute(f"SELECT count(*) FROM {counted}")[0][0] == FLUSH_AT - 1
    assert indexer_threads() == []


async def test_the_blocking_manager_indexes_in_the_background(sql_store: Store) -> None:
    def work() -> list[str]:
        with sql_store.sync_manager() as manager:
            s = manager.create_session("blocking")
            for i in range(FLUSH_AT * 2):
                s.add_message(user(f"tuff {i}"))
            manager.save_session(s)
            hits = manager.search("tuff", limit=100).hits
            return [h.message["content"] for h in hits]

    found = await asyncio.to_thread(work)
    assert len(found) == FLUSH_AT * 2
    assert sql_store.execute("SELECT count(*) FROM messages WHERE indexed IS NULL")[0][0] == 0


async def test_racing_writers_leave_a_complete_index(env: Env) -> None:
    async def writer(k: int) -> None:
        s = await env.manager.create_session(f"writer-{k}")
        for round_ in range(6):
            for i in range(7 + k):
                s.add_message(user(f"scoria w{k} r{round_} m{i}"))
            await env.manager.save_session(s)
            if round_ == 3:
                await s.pop_messages(2)

    await asyncio.gather(*(writer(k) for k in range(4)))
    expected = sum(6 * (7 + k) - 2 for k in range(4))
    assert len(await env.find("scoria")) == expected
    await env.repo.settle_search_index()
    report = await env.manager.check_search_index()
    assert report.ok and report.pending == 0 and report.stale == 0, report
    assert len(await env.find("scoria")) == expected


@pytest.mark.sqlite
async def test_a_row_changed_after_the_indexer_read_it_is_not_indexed_stale(
    tmp_path: Path,
) -> None:
    # the indexer computes terms in a read transaction and writes them in a later write
    # transaction: a row another program changed in between is left for a later read
    config = SessionConfig(storage_path=tmp_path, index_in_background=False)
    store = Store("sqlite", tmp_path)
    store.config = config
    async with AsyncSessionManager(config) as manager:
        s = await manager.create_session("changed")
        s.add_message(user("before the change: andesite"))
        await manager.save_session(s)
    repo = SqlRepository(config)
    try:
        from coda_session.repository.sql import search as sql_search
        from coda_session.repository.sql.sqlite.executor import RawExecutor
        from coda_session.repository.sql.sqlite.search import SQLITE_SEARCH

        rows = await repo.run_on_connection(
            lambda conn: sql_search.pending_rows(RawExecutor(conn), 100)
        )
        read = (rows, sql_search.entries_of(rows))
        assert [e.body.split()[:3] for e in read[1]] == [["before", "the", "change"]]
        store.execute("UPDATE messages SET content = ? WHERE indexed IS NULL", "after: dacite")

        def write(conn: Any) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                return sql_search.index_entries(RawExecutor(conn), SQLITE_SEARCH, *read)
            finally:
                conn.execute("COMMIT")

        assert await repo.run_on_connection(write) == 0
        assert await repo.index_step(100) == 1
        assert await repo.index_step(100) == 0
        found = await repo.search_messages(SearchRequest(parse("dacite")))
        assert [h.record.to_dict()["content"] for h in found.hits] == ["after: dacite"]
        assert (await repo.search_messages(SearchRequest(parse("andesite")))).hits == []
        assert (await repo.check_search_index()).ok
    finally:
        await repo.aclose()


async def test_without_the_background_indexer_a_big_save_indexes_itself(
    sql_store: Store,
) -> None:
    config = sql_store.config.model_copy(update={"index_in_background": False})
    sql_store.config = config
    async with AsyncSessionManager(config, sql_store.repository()) as manager:
        s = await manager.create_session("inline")
        for i in range(FLUSH_AT):
            s.add_message(user(f"gneiss {i}"))
        await manager.save_session(s)
        # indexed by the save's own transaction, no thread started
        assert sql_store.execute("SELECT count(*) FROM messages WHERE indexed IS NULL")[0][0] == 0
        assert indexer_threads() == []

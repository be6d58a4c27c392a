"""SQLite specifics: the file, its modes, PRAGMAs, locking, and what it refuses."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coda_session import (
    AsyncSessionManager,
    SchemaVersionError,
    SessionManager,
    StorageError,
)
from coda_session.manager import repository_of
from coda_session.migrate import HEAD_REVISION
from coda_session.repository.sql import SqlRepository
from tests.support import db_of


async def test_file_and_directory_are_private(sqlite_config: Callable[..., dict[str, Any]]) -> None:
    config = sqlite_config()
    async with AsyncSessionManager(config) as m:
        s = await m.create_session("x")
        s.add_message({"role": "user", "content": "secret"})
        await m.save_session(s)
        directory = Path(config["session"]["storage_path"])
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        for f in directory.iterdir():  # the database and its -wal/-shm files
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert {f.name for f in directory.iterdir()} >= {"sessions.db"}


async def test_pragmas(sqlite_config: Callable[..., dict[str, Any]]) -> None:
    config = sqlite_config(busy_timeout=2.5)
    async with AsyncSessionManager(config) as m:
        await m.create_session("x")
        repo = repository_of(m)
        assert isinstance(repo, SqlRepository)

        def read(conn: sqlite3.Connection) -> tuple[Any, ...]:
            return tuple(
                conn.execute(f"PRAGMA {p}").fetchone()[0]
                for p in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            )

        assert await repo.run_on_connection(read) == ("wal", 1, 2500, 1)  # synchronous=NORMAL


async def test_schema_matches_spec_names(sqlite_config: Callable[..., dict[str, Any]]) -> None:
    config = sqlite_config()
    async with AsyncSessionManager(config) as m:
        await m.create_session("x")
    conn = sqlite3.connect(db_of(config))
    cols = {
        t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in ("sessions", "messages")
    }
    assert cols["sessions"][:5] == ["id", "name", "created_at", "updated_at", "metadata"]
    spec = ["id", "session_id", "role", "content", "timestamp", "metadata"]
    extra = ["content_zlib", "size_bytes", "char_count", "root_id", "ord", "cum_size", "indexed"]
    assert cols["messages"] == [*spec, *extra]
    fks = conn.execute("PRAGMA foreign_key_list(messages)").fetchall()
    assert [(f[2], f[3], f[4]) for f in fks] == [("sessions", "session_id", "id")]
    indexes = {r[1] for r in conn.execute("PRAGMA index_list(messages)")}
    assert "ix_messages_session_id_id" in indexes
    assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == HEAD_REVISION
    conn.close()


async def test_writes_wait_for_a_lock_then_fail_typed_and_leave_data(
    sqlite_config: Callable[..., dict[str, Any]],
) -> None:
    config = sqlite_config(busy_timeout=0.2)
    async with AsyncSessionManager(config) as m:
        s = await m.create_session("x")
        s.add_message({"role": "user", "content": "kept"})
        await m.save_session(s)
        blocker = sqlite3.connect(db_of(config), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            s.add_message({"role": "user", "content": "blocked"})
            with pytest.raises(StorageError, match="locked"):
                await m.save_session(s)
            assert s.has_unsaved_changes  # nothing is lost: the message waits for a retry
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await m.save_session(s)  # no lock was left held by the failed attempt
        got = await (await m.load_session("x")).get_messages()
        assert [x["content"] for x in got] == ["kept", "blocked"]


async def test_a_newer_schema_is_refused(sqlite_config: Callable[..., dict[str, Any]]) -> None:
    config = sqlite_config()
    async with AsyncSessionManager(config) as m:
        await m.create_session("x")
    conn = sqlite3.connect(db_of(config))
    conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    conn.commit()
    conn.close()
    m = AsyncSessionManager(config)
    with pytest.raises(SchemaVersionError, match="9999_from_the_future"):
        await m.list_sessions()
    await m.close()
    conn = sqlite3.connect(db_of(config))  # refused, not downgraded
    assert (
        conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        == "9999_from_the_future"
    )
    conn.close()


async def test_not_a_database(sqlite_config: Callable[..., dict[str, Any]]) -> None:
    config = sqlite_config()
    path = db_of(config)
    path.parent.mkdir(mode=0o700, parents=True)
    path.write_bytes(b"this is not a database" * 100)
    m = AsyncSessionManager(config)
    with pytest.raises(StorageError, match="not a database"):
        await m.list_sessions()
    await m.close()
    assert path.read_bytes().startswith(b"this is not a database")


def test_sync_shim_runs_sqlite_inline(sqlite_config: Callable[..., dict[str, Any]]) -> None:
    with SessionManager(sqlite_config()) as m:
        m.create_session("x")
        repo = repository_of(m._async)
        assert isinstance(repo, SqlRepository) and repo.uses_fast_path


async def test_existing_directory_modes_are_left_alone(
    sqlite_config: Callable[..., dict[str, Any]],
) -> None:
    config = sqlite_config()
    directory = Path(config["session"]["storage_path"])
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    async with AsyncSessionManager(config) as m:
        await m.create_session("x")
    # the user chose this directory's mode; the database inside is still private
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    assert stat.S_IMODE(db_of(config).stat().st_mode) == 0o600


async def test_two_managers_open_a_new_database_at_once(
    sqlite_config: Callable[..., dict[str, Any]],
) -> None:
    config = sqlite_config()
    managers = [AsyncSessionManager(config) for _ in range(4)]
    await asyncio.gather(*(m.open() for m in managers))
    for m in managers:
        assert await m.list_sessions() == []
        await m.close()


async def test_readers_run_beside_a_waiting_writer(
    sqlite_config: Callable[..., dict[str, Any]],
) -> None:
    """connection_pool_size > 1 gives reader connections: a read is not queued behind a
    write that waits for another process's lock (WAL lets them run side by side). The
    other process lets go of its lock only once the read is done, so the read can only
    finish first if it did not queue behind the write."""
    config = sqlite_config(connection_pool_size=3, busy_timeout=5, autosave_interval=0)
    async with AsyncSessionManager(config) as m:
        s = await m.create_session("x")
        blocker = sqlite3.connect(db_of(config), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        order: list[str] = []
        s.add_message({"role": "user", "content": "waits for the lock"})

        async def write() -> None:
            await m.save_session(s)
            order.append("write")

        async def read() -> None:
            await asyncio.sleep(0.2)  # the write is waiting on the lock by now
            try:
                assert [i.name for i in await m.list_sessions()] == ["x"]
                order.append("read")
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()

        await asyncio.gather(write(), read())
        assert order == ["read", "write"]
        assert [x["content"] for x in await (await m.load_session("x")).get_messages()] == [
            "waits for the lock"
        ]


async def test_fresh_stores_opened_at_once_in_one_process(tmp_path: Path) -> None:
    """Alembic's migration context is process-global: first opens of different
    databases must not run on each other's connections."""
    managers = [
        AsyncSessionManager({"session": {"storage_path": str(tmp_path / f"s{i}")}})
        for i in range(6)
    ]
    try:
        assert await asyncio.gather(*(m.list_sessions() for m in managers)) == [[]] * 6
    finally:
        for m in managers:
            await m.close()


def test_fresh_stores_opened_at_once_from_threads(tmp_path: Path) -> None:
    import threading

    errors: list[BaseException] = []

    def open_one(i: int) -> None:
        try:
            with SessionManager({"session": {"storage_path": str(tmp_path / f"t{i}")}}) as m:
                m.save_session(m.create_session("x"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


@pytest.mark.parametrize(("pool", "on_loop"), [(1, False), (2, True), (5, True)])
async def test_small_operations_run_on_the_loop_only_when_the_pool_allows_it(
    sqlite_config: Callable[..., dict[str, Any]], pool: int, on_loop: bool
) -> None:
    """The loop's connection counts towards connection_pool_size: 1 keeps everything on
    the one worker connection. Every operation works either way, big and small."""
    from coda_session.repository.sql import SqlRepository

    config = sqlite_config(connection_pool_size=pool, autosave_interval=0)
    async with AsyncSessionManager(config) as m:
        s = await m.create_session("x")
        repo = m._repository
        assert isinstance(repo, SqlRepository)
        assert repo.runs_small_operations_on_the_loop is on_loop
        for i in range(300):  # a big save
            s.add_message({"role": "user", "content": f"m{i}"})
        await m.save_session(s)
        s.add_message({"role": "user", "content": "small"})
        await m.save_session(s)
        branch = await m.create_session("y", branch_from="x")  # a copy: on the worker
        assert branch.message_count == 301
        again = await m.load_session("x")
        assert [x["content"] for x in await again.get_messages(limit=2)] == ["m299", "small"]
        assert len(await again.get_messages()) == 301  # unbounded read: on the worker
        assert [i.name for i in await m.list_sessions()] == ["x", "y"]
        await m.delete_session("y")


async def test_a_small_save_waits_for_a_lock_without_blocking_the_loop(
    sqlite_config: Callable[..., dict[str, Any]],
) -> None:
    """The loop's connection gives up on a held lock at once; the save then waits on the
    worker thread, and the loop keeps running (here: the coroutine that lets go of the
    lock, which could never run if the save blocked the loop)."""
    config = sqlite_config(busy_timeout=5, autosave_interval=0)
    async with AsyncSessionManager(config) as m:
        s = await m.create_session("x")
        blocker = sqlite3.connect(db_of(config), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        ticks: list[float] = []

        async def release_later() -> None:
            for _ in range(20):
                await asyncio.sleep(0.01)
                ticks.append(asyncio.get_running_loop().time())
            blocker.execute("ROLLBACK")
            blocker.close()

        s.add_message({"role": "user", "content": "waits"})
        releaser = asyncio.create_task(release_later())
        await m.save_session(s)
        await releaser
        assert len(ticks) == 20 and not s.has_unsaved_changes
        assert [x["content"] for x in await s.get_messages()] == ["waits"]


async def test_the_wal_stays_bounded_when_small_saves_run_on_the_loop(
    sqlite_config: Callable[..., dict[str, Any]],
) -> None:
    """The loop's connection never checkpoints; every few hundred of its pages a save goes
    to the worker, whose commit does. Without that the WAL would grow with every save
    (3,000 saves write ~12,000 pages, ~48 MB)."""
    config = sqlite_config(autosave_interval=0)
    async with AsyncSessionManager(config) as m:
        s = await m.create_session("x")
        for i in range(3000):
            s.add_message({"role": "user", "content": f"message {i}"})
            await m.save_session(s)
        wal = db_of(config).with_name("sessions.db-wal")
        assert wal.stat().st_size < 16 * 1024 * 1024
        assert s.message_count == 3000

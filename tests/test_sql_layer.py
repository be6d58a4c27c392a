"""The SQL layer's edges: errors classified by code at one edge, the busy retry on every
path, the compile cache, the driver's threads, opening without the write lock, exports
from one snapshot, cancelled reads, and one manager used from several event loops."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from coda_session import AsyncSessionManager, SessionConfig, SessionExistsError, StorageError
from coda_session.repository.sql import SqlRepository
from coda_session.repository.sql import statements as q
from coda_session.repository.sql.dialect import Failure
from coda_session.repository.sql.engine import create_engine
from coda_session.repository.sql.errors import translate
from coda_session.repository.sql.sqlite import SqliteDialect
from coda_session.repository.sql.sqlite.executor import RawExecutor
from tests.support import SQL_BACKENDS, Store

Config = Callable[..., dict[str, Any]]


def _real_error(sql: str, setup: str = "") -> sqlite3.Error:
    conn = sqlite3.connect(":memory:")
    try:
        if setup:
            conn.executescript(setup)
        conn.execute(sql)
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError(f"{sql!r} did not fail")


def test_errors_are_classified_by_code_not_text() -> None:
    dialect = SqliteDialect()
    unique = _real_error("INSERT INTO t VALUES (1), (1)", "CREATE TABLE t (x UNIQUE);")
    notnull = _real_error("INSERT INTO t VALUES (NULL)", "CREATE TABLE t (x NOT NULL);")
    primary = _real_error("INSERT INTO t VALUES (1), (1)", "CREATE TABLE t (x TEXT PRIMARY KEY);")
    assert dialect.classify(unique) is Failure.UNIQUE_NAME
    assert dialect.classify(notnull) is Failure.OTHER
    assert dialect.classify(primary) is Failure.OTHER
    # a message that reads like a lock, with no code behind it, is nothing special
    assert dialect.classify(sqlite3.OperationalError("database is locked")) is Failure.OTHER
    assert isinstance(translate(unique, "creating", dialect, name="n"), SessionExistsError)
    for other in (notnull, primary, sqlite3.OperationalError("UNIQUE constraint failed")):
        err = translate(other, "saving", dialect)
        assert type(err) is StorageError, other


def test_the_schemas_one_unique_constraint_is_the_session_name(tmp_path: Path) -> None:
    """The SQLite dialect maps SQLITE_CONSTRAINT_UNIQUE to SessionExistsError because
    ``sessions.name`` is the only UNIQUE constraint: keep it so."""
    from coda_session import SessionManager

    with SessionManager({"session": {"storage_path": str(tmp_path)}}) as m:
        m.create_session("x")
    conn = sqlite3.connect(tmp_path / "sessions.db")
    unique = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        for _seq, index, is_unique, origin, _partial in conn.execute(
            f"PRAGMA index_list('{table}')"
        ):
            if is_unique and origin != "pk":
                cols = [r[2] for r in conn.execute(f"PRAGMA index_info('{index}')")]
                unique.append((table, cols))
    conn.close()
    assert unique == [("sessions", ["name"])]


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_a_taken_name_is_session_exists_on_every_sql_path(store: Store) -> None:
    repo = store.repository()
    m = AsyncSessionManager(store.config, repo)
    try:
        await m.create_session("taken")
        other = AsyncSessionManager(store.config, store.repository())
        try:
            with pytest.raises(SessionExistsError, match="taken"):
                await other.create_session("taken", exist_ok=False)
        finally:
            await other.close()
    finally:
        await m.close()


def _hold_write_lock(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None, timeout=0)
    conn.execute("BEGIN IMMEDIATE")
    return conn


@pytest.mark.parametrize("backend", [p for p in SQL_BACKENDS if p.id != "postgresql"])
async def test_busy_retry_runs_on_every_path(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A transaction still busy after the busy timeout is run again, up to 3 attempts,
    on the fast path and on the generic SQLAlchemy path alike (PostgreSQL's lock timeout:
    tests/test_postgresql.py)."""
    assert store.database is not None
    config = store.config.model_copy(update={"busy_timeout": 0.05})
    repo = (
        SqlRepository(config, fast_path=False)
        if store.backend == "sqlite-core"
        else SqlRepository(config)
    )
    m = AsyncSessionManager(config, repo)
    try:
        s = await m.create_session("x")
        held = _hold_write_lock(store.database)
        try:
            s.add_message({"role": "user", "content": "waits"})
            with (
                caplog.at_level(logging.DEBUG, logger="coda_session"),
                pytest.raises(StorageError, match="locked"),
            ):
                await m.save_session(s)
        finally:
            held.rollback()
            held.close()
        retries = [r for r in caplog.records if "retrying" in r.getMessage()]
        assert len(retries) == 2, [r.getMessage() for r in caplog.records]
        await m.save_session(s)  # the lock is gone: the same changes go through
        assert len(await (await m.load_session("x")).get_messages()) == 1
    finally:
        await m.close()


def test_only_registered_constants_are_compiled_once(tmp_path: Path) -> None:
    assert q.is_constant(q.SESSION_BY_ID)
    assert not q.is_constant(sa.select(sa.literal(1)))
    conn = sqlite3.connect(":memory:")
    cx = RawExecutor(conn)
    # statements built per call come and go, and their ids are reused: each must still
    # run its own SQL
    for i in range(200):
        stmt: sa.Select[Any] = sa.select(sa.literal_column(str(i)))
        assert cx.rows(stmt, {})[0][0] == i
        del stmt
    conn.close()


async def test_sqlalchemy_path_connections_never_keep_the_interpreter_alive(
    tmp_path: Path,
) -> None:
    """The generic path's aiosqlite connections run on daemon threads (aiosqlite keeps
    its thread private; this fails if a new aiosqlite release moves it)."""
    config = SessionConfig.from_mapping({"session": {"storage_path": str(tmp_path)}})
    engine = create_engine(config)
    before = set(threading.enumerate())
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
            new = [t for t in threading.enumerate() if t not in before]
            assert new, "no driver thread was started"
            assert all(t.daemon for t in new), new
    finally:
        await engine.dispose()


async def test_opening_a_current_database_needs_no_write_lock(sqlite_config: Config) -> None:
    """Another process's long write holds the write lock: a store at the newest schema
    still opens and reads at once (WAL), and only the write waits."""
    config = sqlite_config(busy_timeout=0.2, autosave_interval=0)
    async with AsyncSessionManager(config) as m:
        s = await m.create_session("kept")
        s.add_message({"role": "user", "content": "hi"})
        await m.save_session(s)
    db = Path(config["session"]["storage_path"]) / "sessions.db"
    held = _hold_write_lock(db)
    try:
        for pool in (1, 5):
            cfg = {"session": {**config["session"], "connection_pool_size": pool}}
            async with AsyncSessionManager(cfg) as other:
                assert [i.name for i in await other.list_sessions()] == ["kept"]
                loaded = await other.load_session("kept")
                assert len(await loaded.get_messages()) == 1
                loaded.add_message({"role": "user", "content": "must wait"})
                with pytest.raises(StorageError, match="locked"):
                    await other.save_session(loaded)
                loaded.discard_changes()  # dropped on purpose: close() warns of nothing
    finally:
        held.rollback()
        held.close()


class _RewritingTarget:
    """A text target that, at its first write of messages, has another writer rewrite the
    session being exported (clear + new messages), as a concurrent agent would."""

    def __init__(self, rewrite: Callable[[], None]) -> None:
        self.parts: list[str] = []
        self._rewrite: Callable[[], None] | None = rewrite

    def write(self, text: str) -> int:
        self.parts.append(text)
        if self._rewrite is not None and '"role"' in text:
            rewrite, self._rewrite = self._rewrite, None
            rewrite()
        return len(text)

    def flush(self) -> None:
        pass


async def test_an_export_is_one_committed_state(store: Store) -> None:
    m = store.async_manager(autosave_interval=0)
    try:
        s = await m.create_session("busy")
        for i in range(2500):  # three export pages
            s.add_message({"role": "user", "content": f"old {i}"})
        await m.save_session(s)
        loop = asyncio.get_running_loop()

        async def rewrite() -> None:
            writer = await m.load_session("busy")
            writer.clear_messages()
            for i in range(2000):
                writer.add_message({"role": "user", "content": f"new {i}"})
            await m.save_session(writer)

        def from_the_export_thread() -> None:
            asyncio.run_coroutine_threadsafe(rewrite(), loop).result(timeout=60)

        for how in ("session", "store"):
            target = _RewritingTarget(from_the_export_thread)
            if how == "session":
                await m.export_session("busy", target)  # type: ignore[arg-type]
            else:
                await m.export_store(target)  # type: ignore[arg-type]
            text = "".join(target.parts)
            # the rewrite landed after the export had begun: the export is the state it
            # began in, whole, and none of the new generation
            assert (text.count('"old '), text.count('"new ')) == (2500, 0), how
            s2 = await m.load_session("busy")
            assert len(await s2.get_messages()) == 2000
            restore = await m.load_session("busy")
            restore.clear_messages()
            for i in range(2500):
                restore.add_message({"role": "user", "content": f"old {i}"})
            await m.save_session(restore)
    finally:
        await m.close()


async def test_a_cancelled_read_does_not_hold_up_the_next(sqlite_config: Config) -> None:
    config = sqlite_config(connection_pool_size=3, autosave_interval=0, compress_messages=False)
    async with AsyncSessionManager(config) as m:
        s = await m.create_session("long")
        for _ in range(20):
            for i in range(10_000):
                s.add_message({"role": "user", "content": f"message {i} " + "x" * 50})
            await m.save_session(s)
        reader = await m.load_session("long")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await reader.get_messages()
        full = loop.time() - t0
        slow = asyncio.create_task(reader.get_messages())
        await asyncio.sleep(full / 10)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        fresh = await m.load_session("long")  # its cache holds 50: this read goes to storage
        t0 = loop.time()
        assert len(await fresh.get_messages(limit=500)) == 500
        # interrupted on its thread: the next read does not wait for the cancelled one
        assert loop.time() - t0 < full / 2, (loop.time() - t0, full)


def test_one_async_manager_on_several_event_loops(store: Store) -> None:
    """An agent framework that runs each call in asyncio.run: every call works, nothing
    is bound to the first loop, close never hangs."""
    m = store.async_manager(connection_pool_size=4, autosave_interval=0.5)
    outcome: list[Any] = []

    def calls() -> None:
        async def first() -> None:
            s = await m.create_session("multi")
            for i in range(300):
                s.add_message({"role": "user", "content": f"m{i}"})
            await m.save_session(s)

        async def second() -> list[dict[str, Any]]:
            s = await m.load_session("multi")
            reads = await asyncio.gather(*(s.get_messages() for _ in range(5)))
            await m.list_sessions()
            return reads[0]

        asyncio.run(first())
        outcome.append(len(asyncio.run(second())))
        outcome.append(len(asyncio.run(second())))
        asyncio.run(m.close())
        outcome.append("closed")

    worker = threading.Thread(target=calls, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "a call hung"
    assert outcome == [300, 300, "closed"]

"""PostgreSQL's own promises, proven against a real server (``CODA_TEST_POSTGRES_URL``).

Lock waits bounded by ``busy_timeout``, no stale view after a concurrent save under READ
COMMITTED, consistent branches and deletes beside writers, one migration when several
processes open a new database, 64-bit ids and counters, adopting a spec-schema
database, the Alembic CLI up and down with data, many processes through pooled
connections, and typed errors (never a hang) for bad or lost connections.

Every test gets its own database (``pg_server()``): skipped cleanly without a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from coda_session import (
    AsyncSessionManager,
    SessionConfig,
    SessionExistsError,
    SessionNotFoundError,
    SessionTooLargeError,
    StorageError,
)
from coda_session.repository.sql import SqlRepository
from coda_session.repository.sql.schema import HEAD_REVISION
from tests.support import ROOT, SPEC_SCHEMA, pg_server, strip_ts, user
from tests.test_concurrency import check_writers

pytestmark = pytest.mark.postgresql


# -- helpers ---------------------------------------------------------------------------


def manager(url: str, **settings: Any) -> AsyncSessionManager:
    """A manager on ``url`` with the library's own PostgreSQL runner."""
    config = SessionConfig(database_url=url, autosave_interval=0, **settings)
    return AsyncSessionManager(config, SqlRepository(config))


@contextlib.asynccontextmanager
async def opened(url: str, **settings: Any) -> AsyncIterator[AsyncSessionManager]:
    m = manager(url, **settings)
    try:
        yield m
    finally:
        await m.close()


async def raw(url: str) -> asyncpg.Connection:
    """A plain asyncpg connection to the database of a SQLAlchemy URL."""
    args = make_url(url).translate_connect_args(username="user")
    conn: asyncpg.Connection = await asyncpg.connect(**args, timeout=10)
    return conn


@contextlib.asynccontextmanager
async def connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await raw(url)
    try:
        yield conn
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def row_lock(url: str, session_id: str) -> AsyncIterator[asyncpg.Connection]:
    """The session row held FOR UPDATE by another connection until the block ends."""
    async with connection(url) as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.fetch("SELECT id FROM sessions WHERE id = $1 FOR UPDATE", session_id)
            yield conn
        finally:
            await tx.rollback()


async def lock_waiters(admin: asyncpg.Connection, database: str) -> int:
    """The library's connections to ``database`` now waiting for a lock."""
    found = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
        "AND application_name = 'coda_session' AND wait_event_type = 'Lock'",
        database,
    )
    return int(found)


async def wait_for_lock_waiters(admin: asyncpg.Connection, database: str, n: int) -> None:
    deadline = time.monotonic() + 10
    while await lock_waiters(admin, database) < n:
        assert time.monotonic() < deadline, f"fewer than {n} connections waiting for the lock"
        await asyncio.sleep(0.01)


def database_of(url: str) -> str:
    name = make_url(url).database
    assert name is not None
    return name


async def stored(url: str, name: str) -> tuple[int, list[dict[str, Any]]]:
    """(message_count, messages) of a session as a fresh manager reads them."""
    async with opened(url, message_cache_size=0) as fresh:
        return await read_back(fresh, name)


async def read_back(fresh: AsyncSessionManager, name: str) -> tuple[int, list[dict[str, Any]]]:
    """(message_count, messages) of a session as ``fresh`` (no cache) reads them."""
    session = await fresh.load_session(name)
    messages = await session.get_messages()
    info = await fresh.get_session_info(name)
    assert info is not None
    assert info.message_count == len(messages) == session.message_count
    return info.message_count, messages


# -- 1. busy_timeout bounds lock waits --------------------------------------------------


async def test_busy_timeout_bounds_a_lock_wait_and_writes_nothing() -> None:
    url = pg_server().fresh_database()
    async with opened(url, busy_timeout=0.5) as m:
        session = await m.create_session("locked")
        session.add_message(user("first"))
        await m.save_session(session)
        session.add_message(user("second"))
        async with row_lock(url, session.id):
            started = time.monotonic()
            with pytest.raises(StorageError, match="locked") as info:
                await m.save_session(session)
            took = time.monotonic() - started
        assert "busy timeout" in str(info.value)
        assert took < 5, took
        assert took >= 0.5 * 2, took  # it waited, and retried
        # nothing half-written; the object keeps its unsaved message
        count, messages = await stored(url, "locked")
        assert (count, [x["content"] for x in messages]) == (1, ["first"])
        assert session.has_unsaved_changes
        assert [m_["content"] for m_ in await session.get_messages()] == ["first", "second"]
        await m.save_session(session)  # the lock is gone: the save lands
        count, messages = await stored(url, "locked")
        assert (count, [x["content"] for x in messages]) == (2, ["first", "second"])


async def test_busy_timeout_bounds_a_truncating_save_too() -> None:
    url = pg_server().fresh_database()
    async with opened(url, busy_timeout=0.5) as m:
        session = await m.create_session("locked")
        for i in range(3):
            session.add_message(user(f"m{i}"))
        await m.save_session(session)
        session.truncate_messages(1)
        session.update_metadata({"k": 1})
        async with row_lock(url, session.id):
            started = time.monotonic()
            with pytest.raises(StorageError, match="locked"):
                await m.save_session(session)
            assert time.monotonic() - started < 5
        count, messages = await stored(url, "locked")
        assert count == 3
        await m.save_session(session)
        count, messages = await stored(url, "locked")
        assert [x["content"] for x in messages] == ["m2"]


# -- 6. 64-bit ids and counters ---------------------------------------------------------


async def test_message_ids_past_two_to_the_31() -> None:
    url = pg_server().fresh_database()
    async with connection(url) as conn:
        await conn.execute(f"SELECT setval('messages_id_seq', {2**31 + 10})")
    async with opened(url) as m:
        session = await m.create_session("big-ids")
        session.add_message(user("one"))
        await m.save_session(session)
        session.add_message(user("two"))
        session.add_message(user("three"))
        await m.save_session(session)
        session.truncate_messages(2)
        session.add_message(user("four"))
        session.update_metadata({"x": 1})
        await m.save_session(session)
        branch = await m.create_session("branch", branch_from="big-ids")
        assert [x["content"] for x in await branch.get_messages()] == ["two", "three", "four"]
    async with connection(url) as conn:
        ids = [r[0] for r in await conn.fetch("SELECT id FROM messages ORDER BY id")]
        newest = await conn.fetchval("SELECT last_message_id FROM sessions WHERE name = 'big-ids'")
    # the branch shares the source's rows (copy-on-write): no copy was written
    assert len(ids) == 3 and all(i > 2**31 for i in ids), ids
    assert newest == ids[2]
    _, messages = await stored(url, "big-ids")
    assert [x["content"] for x in messages] == ["two", "three", "four"]


async def test_sizes_and_counters_past_two_to_the_31() -> None:
    url = pg_server().fresh_database()
    near = 2**31 - 10
    async with opened(url, max_session_size=3000) as m:  # 3 * 10**9 bytes
        session = await m.create_session("huge")
        session.add_message(user("a"))
        await m.save_session(session)
        async with connection(url) as conn:
            await conn.execute(
                "UPDATE sessions SET size_bytes = $1, message_count = message_count + $1 "
                "WHERE id = $2",
                near,
                session.id,
            )
        # past 2**31: stored (the columns are 64-bit)
        session.add_message(user("b" * 100))
        await m.save_session(session)
        assert session.info().size_bytes > 2**31
        assert session.message_count == near + 2
        session.add_message(user("c"))
        session.update_metadata({"k": "v"})  # the multi-statement save
        await m.save_session(session)
        assert session.message_count == near + 3
        async with connection(url) as conn:
            row = await conn.fetchrow(
                "SELECT size_bytes, message_count FROM sessions WHERE id = $1", session.id
            )
            assert row is not None
            assert row[0] > 2**31 and row[1] == near + 3
            # now just under the limit: the next save would pass it
            await conn.execute(
                "UPDATE sessions SET size_bytes = $1 WHERE id = $2", 3 * 10**9 - 50, session.id
            )
        session.add_message(user("d" * 100))  # the object still thinks there is room
        with pytest.raises(SessionTooLargeError):
            await m.save_session(session)
        session.update_metadata({"k": "w"})
        with pytest.raises(SessionTooLargeError):
            await m.save_session(session)  # the same through the multi-statement save
        session.discard_changes()  # the refused changes are dropped on purpose
        async with connection(url) as conn:
            row = await conn.fetchrow(
                "SELECT size_bytes, message_count FROM sessions WHERE id = $1", session.id
            )
            assert row is not None
            assert (row[0], row[1]) == (3 * 10**9 - 50, near + 3)
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM messages WHERE session_id = $1", session.id
                )
                == 3
            )


# -- 10. bad connections: typed errors, never a hang ------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _open_fails(url: str, match: str) -> StorageError:
    started = time.monotonic()
    m = manager(url, connect_timeout=1)
    try:
        with pytest.raises(StorageError, match=match) as info:
            await m.create_session("never")
    finally:
        await m.close()
    assert time.monotonic() - started < 10
    return info.value


async def test_bad_connections_are_typed_storage_errors() -> None:
    server = pg_server()
    good = make_url(server.fresh_database())
    refused = good.set(host="127.0.0.1", port=_free_port())
    await _open_fails(refused.render_as_string(hide_password=False), "connection to the database")
    wrong = good.set(password="not-the-password")
    await _open_fails(wrong.render_as_string(hide_password=False), "refused the credentials")
    missing = good.set(database="coda_no_such_database")
    await _open_fails(missing.render_as_string(hide_password=False), "does not exist")
    unresolvable = good.set(host="nonexistent.invalid")
    await _open_fails(
        unresolvable.render_as_string(hide_password=False), "connection to the database"
    )


async def test_a_server_that_never_answers_is_bounded_by_connect_timeout() -> None:
    url = make_url(pg_server().fresh_database())
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # accepts (the kernel does) and never replies
        port = silent.getsockname()[1]
        started = time.monotonic()
        await _open_fails(
            url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False),
            "did not answer in time",
        )
        assert time.monotonic() - started < 6


async def _terminate(admin: asyncpg.Connection, database: str, *, waiting: bool = False) -> int:
    where = " AND wait_event_type = 'Lock'" if waiting else ""
    rows = await admin.fetch(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 "
        f"AND application_name = 'coda_session'{where}",
        database,
    )
    return len(rows)


async def test_connections_terminated_between_operations() -> None:
    url = pg_server().fresh_database()
    database = database_of(url)
    async with opened(url, connection_pool_size=3) as m, connection(url) as admin:
        session = await m.create_session("survivor")
        session.add_message(user("before"))
        await m.save_session(session)
        # several idle connections in the pool
        await asyncio.gather(*(m.list_sessions() for _ in range(3)))
        for round_ in range(3):
            assert await _terminate(admin, database) >= 1
            await asyncio.sleep(0.05)
            session.add_message(user(f"r{round_}"))
            try:
                await asyncio.wait_for(m.save_session(session), 10)
            except StorageError as exc:
                assert "connection" in str(exc)
            # the next operation succeeds by itself
            await asyncio.wait_for(m.save_session(session), 10)
            assert not session.has_unsaved_changes
            await asyncio.wait_for(m.list_sessions(), 10)
        _, messages = await stored(url, "survivor")
        assert [x["content"] for x in messages] == ["before", "r0", "r1", "r2"]


async def test_connection_terminated_during_a_long_operation() -> None:
    url = pg_server().fresh_database()
    database = database_of(url)
    async with opened(url, busy_timeout=30) as m, connection(url) as admin:
        for plain in (True, False):
            name = f"survivor-{plain}"
            session = await m.create_session(name)
            session.add_message(user("before"))
            await m.save_session(session)
            session.add_message(user("during"))
            if not plain:
                session.update_metadata({"k": 1})  # the multi-statement save
            async with row_lock(url, session.id):
                save = asyncio.ensure_future(m.save_session(session))
                await wait_for_lock_waiters(admin, database, 1)
                assert await _terminate(admin, database, waiting=True) == 1
                with pytest.raises(StorageError, match="connection"):
                    await asyncio.wait_for(save, 10)
            _, messages = await stored(url, name)
            assert [x["content"] for x in messages] == ["before"]
            assert session.has_unsaved_changes
            await asyncio.wait_for(m.save_session(session), 10)
            _, messages = await stored(url, name)
            assert [x["content"] for x in messages] == ["before", "during"]


# -- 2. no stale view after a concurrent save (READ COMMITTED) ---------------------------


@pytest.mark.parametrize("plain", [True, False], ids=["append", "append-and-metadata"])
async def test_a_save_that_waited_for_another_writer_drops_its_stale_cache(plain: bool) -> None:
    """A caches m0..m4; B (another manager) removes m0 and appends b (the count adds up)
    while A's save waits for the row lock, and commits first: A must not show m0."""
    url = pg_server().fresh_database()
    database = database_of(url)
    async with opened(url) as ma, opened(url) as mb, connection(url) as admin:
        a = await ma.create_session("shared")
        for i in range(5):
            a.add_message(user(f"m{i}"))
        await ma.save_session(a)
        assert [x["content"] for x in await a.get_messages()] == [f"m{i}" for i in range(5)]
        b = await mb.load_session("shared")
        b.truncate_messages(4)
        b.add_message(user("b"))
        a.add_message(user("a"))
        if not plain:
            a.update_metadata({"k": 1})
        async with row_lock(url, a.id):
            b_save = asyncio.ensure_future(mb.save_session(b))
            await wait_for_lock_waiters(admin, database, 1)
            a_save = asyncio.ensure_future(ma.save_session(a))
            await wait_for_lock_waiters(admin, database, 2)
        await asyncio.wait_for(asyncio.gather(b_save, a_save), 10)
        expected = ["m1", "m2", "m3", "m4", "b", "a"]
        count, messages = await stored(url, "shared")
        assert [x["content"] for x in messages] == expected
        assert a.message_count == count
        assert [x["content"] for x in await a.get_messages()] == expected
        assert [x["content"] for x in await a.get_messages(limit=6)] == expected


# -- 3. branches taken while the source is appended to ----------------------------------

#: A process appending to the session "source" from several tasks (each its own object)
#: until the file argv[3] exists; prints how many messages it saved.
APPENDER = """
import asyncio, os, sys
from coda_session import AsyncSessionManager, SessionConfig

url, tag, stop = sys.argv[1], sys.argv[2], sys.argv[3]

async def task(m, t):
    session = await m.load_session("source")
    seq = 0
    while not os.path.exists(stop):
        for _ in range(1 + seq % 2):
            session.add_message({"role": "user", "content": f"{tag}{t}:{seq}"})
            seq += 1
        await m.save_session(session)
    return seq

async def main():
    config = SessionConfig(database_url=url, autosave_interval=0, connection_pool_size=3)
    async with AsyncSessionManager(config) as m:
        await m.list_sessions()
        print("ready", flush=True)
        print(sum(await asyncio.gather(*(task(m, t) for t in range(3)))), flush=True)

asyncio.run(main())
"""


def python(code: str, *args: str) -> list[str]:
    """The argv of a fresh interpreter running ``code`` with this checkout importable."""
    return [sys.executable, "-c", code, *args]


def child_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return env


async def test_branches_taken_while_the_source_grows_keep_all_their_messages(
    tmp_path: Path,
) -> None:
    url = pg_server().fresh_database()
    async with opened(url) as m:
        source = await m.create_session("source")
        for i in range(3):
            source.add_message(user(f"seed:{i}"))
        await m.save_session(source)
        stop = tmp_path / "stop"
        appenders = [
            subprocess.Popen(
                python(APPENDER, url, f"p{p}.", str(stop)),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=child_env(),
            )
            for p in range(1)
        ]
        try:
            for proc in appenders:
                assert proc.stdout is not None
                assert proc.stdout.readline().strip() == "ready", proc.stderr
            branches: list[str] = []
            here = asyncio.Event()

            async def appender(w: int) -> None:  # and two tasks of this process
                async with opened(url) as own:
                    session = await own.load_session("source")
                    seq = 0
                    while not here.is_set():
                        session.add_message(user(f"here{w}:{seq}"))
                        seq += 1
                        await own.save_session(session)

            local = [asyncio.ensure_future(appender(w)) for w in range(2)]

            async def brancher(b: int) -> None:
                for i in range(10):
                    name = f"branch-{b}-{i}"
                    await m.create_session(name, branch_from="source")
                    branches.append(name)
                    await asyncio.sleep(0.02)

            try:
                await asyncio.wait_for(asyncio.gather(*(brancher(b) for b in range(4))), 60)
            finally:
                here.set()
                await asyncio.gather(*local)
        finally:
            stop.touch()
            results = [proc.communicate(timeout=60) for proc in appenders]
        for proc, (_out, err) in zip(appenders, results, strict=True):
            assert proc.returncode == 0, err
    _, final = await stored(url, "source")
    final_contents = [x["content"] for x in final]
    assert len(branches) == 40
    lengths: set[int] = set()
    bad: list[str] = []
    async with connection(url) as conn, opened(url, message_cache_size=0) as fresh:
        for name in branches:
            count, messages = await read_back(fresh, name)
            contents = [x["content"] for x in messages]
            lengths.add(count)
            # copy-on-write: the branch owns no row, its segments count what it shows
            own = await conn.fetchval(
                "SELECT count(*) FROM messages m JOIN sessions s ON s.id = m.session_id "
                "WHERE s.name = $1",
                name,
            )
            shared = await conn.fetchval(
                "SELECT coalesce(sum(g.message_count), 0) FROM session_segments g "
                "JOIN sessions s ON s.id = g.session_id WHERE s.name = $1",
                name,
            )
            if (
                contents != final_contents[: len(contents)]
                or own != 0
                or shared != count
                or count < 3
            ):
                bad.append(f"{name}: {count} counted, {own}+{shared} rows, starts {contents[:2]}")
    assert not bad, bad
    assert len(lengths) > 5, f"the appenders hardly ran during the branching: {lengths}"


# -- 4. delete_session racing saves -------------------------------------------------------


async def test_delete_racing_saves_wins_cleanly() -> None:
    """30 rounds of a delete racing a save (an append, an append with metadata, a
    truncation): queued behind the same row lock in either order, or left to race."""
    url = pg_server().fresh_database()
    database = database_of(url)
    outcomes: dict[str, int] = {"saved": 0, "not found": 0}
    async with (
        opened(url) as deleter,
        opened(url) as writer,
        connection(url) as conn,
    ):
        for round_ in range(30):
            name = f"doomed-{round_}"
            session = await writer.create_session(name)
            for i in range(3):
                session.add_message(user(f"m{i}"))
            await writer.save_session(session)
            kind, order = (round_ // 3) % 3, round_ % 3
            session.add_message(user("racing"))
            if kind == 1:
                session.update_metadata({"k": round_})
            elif kind == 2:
                session.truncate_messages(2)

            async def save(session: Any = session) -> str:
                try:
                    await writer.save_session(session)
                except SessionNotFoundError:
                    return "not found"
                return "saved"

            if order == 2:  # a free race
                done: list[Any] = list(
                    await asyncio.wait_for(asyncio.gather(save(), deleter.delete_session(name)), 10)
                )
            else:
                async with row_lock(url, session.id):
                    first: asyncio.Future[Any] = asyncio.ensure_future(
                        deleter.delete_session(name) if order == 0 else save()
                    )
                    await wait_for_lock_waiters(conn, database, 1)
                    second: asyncio.Future[Any] = asyncio.ensure_future(
                        save() if order == 0 else deleter.delete_session(name)
                    )
                    await wait_for_lock_waiters(conn, database, 2)
                done = list(await asyncio.wait_for(asyncio.gather(first, second), 10))
                if order == 0:
                    done.reverse()
                assert done[0] == ("not found" if order == 0 else "saved"), (round_, done)
            outcomes[done[0]] += 1
            assert await deleter.get_session_info(name) is None
            left = await conn.fetchval(
                "SELECT count(*) FROM messages WHERE session_id = $1", session.id
            )
            assert left == 0, (round_, left)
    assert sum(outcomes.values()) == 30


# -- 5. several processes opening a new database migrate it once ------------------------

OPENER = """
import sys
from coda_session import SessionConfig, SessionManager

url, n = sys.argv[1], sys.argv[2]
with SessionManager(SessionConfig(database_url=url, autosave_interval=0)) as m:
    session = m.create_session(f"opener-{n}")
    session.add_message({"role": "user", "content": n})
    m.save_session(session)
print("ok", flush=True)
"""


async def test_processes_opening_a_new_database_migrate_it_once() -> None:
    url = pg_server().empty_database()
    procs = [
        subprocess.Popen(
            python(OPENER, url, str(n)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for n in range(8)
    ]
    results = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0 and out.strip() == "ok", err
        assert "duplicate key" not in err
    async with connection(url) as conn:
        versions = [r[0] for r in await conn.fetch("SELECT version_num FROM alembic_version")]
    assert versions == [HEAD_REVISION]
    async with opened(url) as m:
        names = sorted(i.name for i in await m.list_sessions())
    assert names == sorted(f"opener-{n}" for n in range(8))


# -- 7. adopting a spec-schema database ---------------------------------------------------


async def test_adopting_a_spec_schema_database() -> None:
    url = pg_server().empty_database()
    async with connection(url) as conn:
        await conn.execute(SPEC_SCHEMA)
        await conn.execute(
            "INSERT INTO sessions VALUES ('s1', 'old', TIMESTAMP '2024-01-02 03:04:05', "
            "TIMESTAMP '2024-01-02 03:05:00', '{\"topic\": \"x\"}')"
        )
        await conn.execute(
            "INSERT INTO messages VALUES "
            "(1, 's1', 'user', 'hello', TIMESTAMP '2024-01-02 03:04:05.25', NULL), "
            "(2, 's1', 'assistant', 'hi', TIMESTAMP '2024-01-02 03:04:06', '{\"model\": \"m\"}')"
        )
    async with opened(url) as m:
        infos = await m.list_sessions()
        assert [(i.name, i.message_count, i.metadata) for i in infos] == [
            ("old", 2, {"topic": "x"})
        ]
        assert infos[0].created_at.isoformat() == "2024-01-02T03:04:05+00:00"
        session = await m.load_session("old")
        assert await session.get_messages() == [
            {"role": "user", "content": "hello", "timestamp": "2024-01-02T03:04:05.250000"},
            {
                "role": "assistant",
                "content": "hi",
                "timestamp": "2024-01-02T03:04:06.000000",
                "model": "m",
            },
        ]
        session.add_message({"role": "user", "content": "new", "timestamp": "2025-05-05T05:05"})
        await m.save_session(session)
        other = await m.create_session("another")
        other.add_message(user("fresh"))
        await m.save_session(other)
        with pytest.raises(SessionExistsError):
            await m.create_session("old", exist_ok=False)
        with pytest.raises(SessionExistsError):
            await m.create_session("old", branch_from="another")
    count, messages = await stored(url, "old")
    assert count == 3
    assert messages[-1] == {"role": "user", "content": "new", "timestamp": "2025-05-05T05:05"}
    assert strip_ts((await stored(url, "another"))[1]) == [user("fresh")]


# -- 8. the Alembic CLI: up, down and up again with data; models match migrations -----


def alembic_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={url}", *args],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_alembic_cli_up_down_and_up_again_with_data() -> None:
    url = pg_server().empty_database()
    steps: list[tuple[str, ...]] = [("upgrade", "head"), ("downgrade", "base"), ("upgrade", "head")]
    for args in steps:
        done = alembic_cli(url, *args)
        assert done.returncode == 0, (args, done.stderr)
    long_text = "compressible text " * 200
    written: list[dict[str, Any]] = [
        user("short"),
        user(long_text),  # stored compressed
        {"role": "tool", "content": {"rows": list(range(400)), "note": long_text}},  # compressed
        {"role": "tool", "content": [1, 2.5, None, True]},  # non-string, plain
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
        {"role": "user", "content": "ünïcødé ✓", "model": "m", "n": 3},
    ]
    async with opened(url) as m:
        session = await m.create_session("kept")
        for message in written:
            session.add_message(message)
        session.update_metadata({"topic": "migrations", "n": 1})
        await m.save_session(session)
        before = await session.get_messages()
        filed = [e.timestamp for e in await session.get_entries()]
    async with connection(url) as conn:
        packed = await conn.fetchval("SELECT count(*) FROM messages WHERE content_zlib IS NOT NULL")
    assert packed == 2
    for args in [("downgrade", "0001"), ("upgrade", "head"), ("check",)]:
        done = alembic_cli(url, *args)
        assert done.returncode == 0, (args, done.stderr)
    _, after = await stored(url, "kept")
    # 0015's downgrade writes the rows as older versions read them: with the time each
    # is filed under as their timestamp key (role, content and timestamp first)
    assert after == [
        {"role": m["role"], "content": m["content"], "timestamp": t}
        | {k: v for k, v in m.items() if k not in ("role", "content")}
        for m, t in zip(before, filed, strict=True)
    ]
    assert strip_ts(after) == [{k: v for k, v in x.items() if k != "timestamp"} for x in written]
    async with opened(url) as m:
        info = await m.get_session_info("kept")
        assert info is not None and info.metadata == {"topic": "migrations", "n": 1}
        session = await m.load_session("kept")
        session.add_message(user("after the round trip"))
        await m.save_session(session)
    assert (await stored(url, "kept"))[0] == len(written) + 1


# -- 9. many processes through pooled connections ---------------------------------------

#: 20 tasks of one process (pool of 5 connections): even tasks append to "shared", odd
#: ones to a session of their own; each message is msg(writer, seq) of test_concurrency.
POOLED_WRITER = """
import asyncio, sys
from coda_session import AsyncSessionManager, SessionConfig

url, proc, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

async def task(m, t):
    writer = f"p{proc}t{t}"
    name = "shared" if t % 2 == 0 else f"own-{writer}"
    session = await m.create_session(name)
    for seq in range(per):
        session.add_message({"role": "user", "content": f"{writer}:{seq}", "writer": writer,
                             "seq": seq})
        await m.save_session(session)

async def main():
    config = SessionConfig(database_url=url, autosave_interval=0, connection_pool_size=5)
    async with AsyncSessionManager(config) as m:
        await asyncio.gather(*(task(m, t) for t in range(20)))
    print("ok", flush=True)

asyncio.run(main())
"""


async def test_processes_and_tasks_through_pooled_connections() -> None:
    url = pg_server().fresh_database()
    per, procs_n = 6, 8
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            python(POOLED_WRITER, url, str(p), str(per)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for p in range(procs_n)
    ]
    results = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0 and out.strip() == "ok", err
    assert time.monotonic() - started < 60
    async with opened(url, message_cache_size=0) as fresh:
        _, shared = await read_back(fresh, "shared")
        check_writers(shared, [f"p{p}t{t}" for p in range(procs_n) for t in range(0, 20, 2)], per)
        infos = await fresh.list_sessions()
        assert len(infos) == 1 + procs_n * 10
        for p in range(procs_n):
            for t in range(1, 20, 2):
                _, own = await read_back(fresh, f"own-p{p}t{t}")
                check_writers(own, [f"p{p}t{t}"], per)
    async with connection(url) as conn:
        mismatched = await conn.fetch(
            "SELECT s.name FROM sessions s WHERE s.message_count <> "
            "(SELECT count(*) FROM messages m WHERE m.session_id = s.id) OR s.size_bytes <> "
            "(SELECT coalesce(sum(m.size_bytes), 0) FROM messages m WHERE m.session_id = s.id)"
        )
    assert not mismatched


# -- SQLSTATE: conflicts are retried, classified from the server's own errors ------------


async def _deadlock(url: str) -> BaseException:
    """Provoke a real deadlock between two transactions; the victim's error."""
    async with connection(url) as setup:
        await setup.execute("CREATE TABLE dl (id int PRIMARY KEY)")
        await setup.execute("INSERT INTO dl VALUES (1), (2)")
    async with connection(url) as a, connection(url) as b:
        ta, tb = a.transaction(), b.transaction()
        await ta.start()
        await tb.start()
        await a.execute("UPDATE dl SET id = id WHERE id = 1")
        await b.execute("UPDATE dl SET id = id WHERE id = 2")
        results = await asyncio.gather(
            a.execute("UPDATE dl SET id = id WHERE id = 2"),
            b.execute("UPDATE dl SET id = id WHERE id = 1"),
            return_exceptions=True,
        )
        await ta.rollback()
        await tb.rollback()
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1, results
    return failures[0]


async def _serialization_failure(url: str) -> BaseException:
    async with connection(url) as setup:
        await setup.execute("CREATE TABLE sf (id int PRIMARY KEY, v int)")
        await setup.execute("INSERT INTO sf VALUES (1, 0)")
    async with connection(url) as a, connection(url) as b:
        ta = a.transaction(isolation="repeatable_read")
        await ta.start()
        await a.fetch("SELECT v FROM sf")
        await b.execute("UPDATE sf SET v = 1 WHERE id = 1")
        try:
            await a.execute("UPDATE sf SET v = 2 WHERE id = 1")
        except asyncpg.PostgresError as exc:
            failure: BaseException = exc
            return failure
        finally:
            await ta.rollback()
    raise AssertionError("no serialization failure")


async def test_deadlocks_and_serialization_failures_are_conflicts_that_are_retried() -> None:
    from coda_session.repository.sql.dialect import Failure, ServerError
    from coda_session.repository.sql.postgresql import POSTGRESQL

    url = pg_server().empty_database()
    for provoke, sqlstate in ((_deadlock, "40P01"), (_serialization_failure, "40001")):
        err = await provoke(url)
        assert getattr(err, "sqlstate", None) == sqlstate
        failure = POSTGRESQL.classify(ServerError(err))
        assert failure is Failure.CONFLICT
        assert POSTGRESQL.retryable(failure)
    # a lock wait that ran out (lock_timeout) is BUSY, retried like SQLite's busy errors
    async with connection(url) as a, connection(url) as b:
        await a.execute("CREATE TABLE lt (id int PRIMARY KEY)")
        await a.execute("INSERT INTO lt VALUES (1)")
        ta = a.transaction()
        await ta.start()
        await a.execute("SELECT * FROM lt FOR UPDATE")
        await b.execute("SET lock_timeout = 50")
        with pytest.raises(asyncpg.PostgresError) as info:
            await b.execute("SELECT * FROM lt FOR UPDATE")
        await ta.rollback()
    assert POSTGRESQL.classify(ServerError(info.value)) is Failure.BUSY


async def test_a_conflict_inside_a_save_is_run_again() -> None:
    """A deadlock the server reports inside the library's transaction is rolled back and
    the save runs again, invisibly: a trigger that fails the first attempt with 40P01."""
    url = pg_server().fresh_database()
    async with connection(url) as admin:
        await admin.execute(
            # a sequence counts attempts outside the transactions (nextval is never rolled back)
            "CREATE SEQUENCE attempts;"
            "CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN IF nextval('attempts') = 1 THEN "
            "  RAISE EXCEPTION 'provoked' USING ERRCODE = '40P01'; END IF; "
            "RETURN NEW; END $$;"
        )
    async with opened(url) as m:
        s = await m.create_session("retried")
        async with connection(url) as admin:
            await admin.execute(
                "CREATE TRIGGER once BEFORE INSERT ON messages "
                "FOR EACH ROW EXECUTE FUNCTION fail_once()"
            )
        s.add_message(user("kept once"))
        await m.save_session(s)
        assert not s.has_unsaved_changes
    async with connection(url) as admin:
        # the first attempt's insert was rolled back whole: one row, counted once
        assert await admin.fetchval("SELECT count(*) FROM messages") == 1
        assert await admin.fetchval("SELECT message_count FROM sessions") == 1
        # two attempts: the first failed with the deadlock, the second committed
        assert await admin.fetchval("SELECT last_value FROM attempts") == 2


# -- the generic SQLAlchemy path on PostgreSQL --------------------------------------------


@pytest.mark.parametrize("fast_path", [True, False], ids=["asyncpg-runner", "sqlalchemy"])
async def test_both_paths_on_postgresql_store_and_read_alike(fast_path: bool) -> None:
    """The library's asyncpg runner (the default) and SQLAlchemy's engine (fast_path=False)
    run the same operations; a store written by one reads the same through the other."""
    url = pg_server().fresh_database()
    config = SessionConfig(database_url=url, autosave_interval=0)
    m = AsyncSessionManager(config, SqlRepository(config, fast_path=fast_path))
    try:
        s = await m.create_session("paths")
        s.update_metadata({"k": [1, 2.5, None], "é": "ü"})
        for i in range(5):
            s.add_message(user(f"m{i}"))
        s.add_message({"role": "assistant", "content": [{"type": "text", "text": "x" * 3000}]})
        await m.save_session(s)
        s.update_metadata({"n": 1})
        s.add_message(user("with metadata"))
        await m.save_session(s)
        b = await m.create_session("paths-b", branch_from=s)
        s.truncate_messages(3)
        await m.save_session(s)
        assert [x["content"] for x in await s.get_messages()][-1] == "with metadata"
        await m.delete_session("paths-b")
        infos = {i.name: i for i in await m.list_sessions()}
        assert infos["paths"].message_count == 3 and "paths-b" not in infos
        del b
    finally:
        await m.close()
    other = AsyncSessionManager(config, SqlRepository(config, fast_path=not fast_path))
    try:
        again = await other.load_session("paths")
        assert again is not None
        assert again.metadata == {"k": [1, 2.5, None], "é": "ü", "n": 1}
        got = await again.get_messages()
        assert len(got) == 3 and got[-1]["content"] == "with metadata"
        assert got[0]["content"] == "m4"
        assert got[1]["content"] == [{"type": "text", "text": "x" * 3000}]
        with pytest.raises(SessionExistsError):
            await other.create_session("paths", exist_ok=False)
    finally:
        await other.close()


# -- a server that restarts, and one that is down for a while -----------------------------


@contextlib.contextmanager
def own_server(tmp: Path) -> Any:
    """A PostgreSQL server of this test's own (scripts/pg-test-server, as CI starts one),
    so it can be restarted and stopped; yields (url, control) where control(cmd) runs the
    script's start/stop/restart on it."""
    pg_server()  # skips without a configured server (and so without the binaries)
    env = {**os.environ, "CODA_PG_DIR": f"/tmp/coda-pg-restart-{uuid.uuid4().hex[:8]}"}
    script = str(ROOT / "scripts" / "pg-test-server")

    def control(command: str) -> str:
        run = subprocess.run(
            [script, command], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert run.returncode == 0, run.stderr
        return run.stdout

    started = control("start")
    url = started.split("CODA_TEST_POSTGRES_URL='", 1)[1].split("'", 1)[0]
    try:
        yield url, control
    finally:
        control("stop")


def test_the_manager_recovers_by_itself_after_a_restart_and_an_outage(tmp_path: Path) -> None:
    from coda_session import SessionManager

    with own_server(tmp_path) as (url, control):
        config = SessionConfig(
            database_url=url, autosave_interval=0, connect_timeout=2, busy_timeout=1
        )
        with SessionManager(config) as m:
            s = m.create_session("restarts")
            s.add_message(user("before"))
            m.save_session(s)
            control("restart")
            # the pooled connections died with the old server: at most one call fails,
            # typed, and the next ones connect again by themselves
            outcomes = []
            for i in range(3):
                s.add_message(user(f"after {i}"))
                try:
                    m.save_session(s)
                    outcomes.append("saved")
                except StorageError as exc:
                    assert "connection" in str(exc)
                    outcomes.append("failed")
            assert outcomes[-1] == "saved" and outcomes.count("failed") <= 1, outcomes
            # an outage: calls fail fast and typed, nothing is lost from the object
            control("pause")
            s.add_message(user("during"))
            started = time.monotonic()
            with pytest.raises(StorageError, match="connect"):
                m.save_session(s)
            assert time.monotonic() - started < 15
            assert s.has_unsaved_changes
            # the server is back: the same manager and object carry on, nothing twice
            control("resume")
            m.save_session(s)
            assert not s.has_unsaved_changes
        with SessionManager(config) as fresh:
            stored = [x["content"] for x in fresh.load_session("restarts").get_messages()]
        assert stored == ["before", "after 0", "after 1", "after 2", "during"]


async def test_a_call_cancelled_while_taking_an_idle_connection_gives_it_back() -> None:
    """With one connection, a call cancelled as it takes the idle connection (which is
    pinged first after a while idle) must not take the pool's only slot with it."""
    url = pg_server().fresh_database()
    async with opened(url, connection_pool_size=1) as m:
        await m.create_session("x")
        for _ in range(3):
            await asyncio.sleep(1.2)  # idle past the check
            call = asyncio.ensure_future(m.get_session_info("x"))
            await asyncio.sleep(0)  # it runs up to the pool's ping
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
            info = await asyncio.wait_for(m.get_session_info("x"), 10)
            assert info is not None and info.name == "x"


async def test_migration_0007_escapes_and_restores_old_text_on_postgresql() -> None:
    """A database written before the escaped form, holding the escape character in a
    content, a message's extra keys and a session's metadata (json columns), is upgraded
    and reads back unchanged; downgrading restores the stored text exactly."""
    esc = "\u241b"
    url = pg_server().empty_database()
    assert alembic_cli(url, "upgrade", "0006").returncode == 0
    rows = {
        "content": f"{esc}0000 literal",
        "extra": '{"k":"' + esc + 'dc80"}',
        "meta": '{"' + esc + '":"v' + esc + '"}',
    }
    async with connection(url) as conn:
        await conn.execute(
            "INSERT INTO sessions (id, name, created_at, updated_at, metadata, message_count) "
            "VALUES ('s1', 'old', now(), now(), $1::json, 1)",
            rows["meta"],
        )
        await conn.execute(
            "INSERT INTO messages (session_id, role, content, timestamp, metadata) "
            "VALUES ('s1', 'user', $1, '2024-01-01T00:00:00', $2::json)",
            rows["content"],
            rows["extra"],
        )
    done = alembic_cli(url, "upgrade", "head")
    assert done.returncode == 0, done.stderr
    async with opened(url) as m:
        s = await m.load_session("old")
        assert s.metadata == {esc: f"v{esc}"}
        got = await s.get_messages()
        assert got == [
            {
                "role": "user",
                "content": f"{esc}0000 literal",
                "timestamp": "2024-01-01T00:00:00",
                "k": f"{esc}dc80",
            }
        ]
    done = alembic_cli(url, "downgrade", "0006")
    assert done.returncode == 0, done.stderr
    async with connection(url) as conn:
        back = await conn.fetchrow(
            "SELECT m.content, m.metadata::text, s.metadata::text FROM messages m "
            "JOIN sessions s ON s.id = m.session_id"
        )
    assert tuple(back) == (rows["content"], rows["extra"], rows["meta"])


def test_event_loops_that_ended_are_not_kept_alive() -> None:
    """A manager used from many asyncio.run calls (an agent framework's way) keeps no
    ended loop alive, and the connections each loop opened are closed as it ends."""
    import gc
    import weakref

    url = pg_server().fresh_database()
    m = manager(url)
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def call(i: int) -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        s = await m.create_session(f"loop-{i}")
        s.add_message(user("x"))
        await m.save_session(s)

    for i in range(10):
        asyncio.run(call(i))
    gc.collect()
    assert [ref() for ref in loops] == [None] * 10

    async def connections() -> int:
        async with connection(url) as conn:
            count: int = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'coda_session' "
                "AND datname = current_database()"
            )
            return count

    assert asyncio.run(connections()) == 0
    asyncio.run(m.close())

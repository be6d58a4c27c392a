"""Faults: a full disk, read-only storage, corrupt files, a lock held too long.

Each gives a typed error, keeps the manager usable for other work where it can be, and
leaves what was stored intact.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coda_session import AsyncSessionManager, SessionManager, SessionNotFoundError, StorageError
from coda_session.manager import repository_of
from coda_session.repository.sql import SqlRepository
from tests.support import db_of

Config = Callable[..., dict[str, Any]]


def rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT session_id, role, content FROM messages ORDER BY id").fetchall()
    finally:
        conn.close()


async def test_full_disk(sqlite_config: Config) -> None:
    config = sqlite_config(autosave_interval=0, compress_messages=False, connection_pool_size=1)
    async with AsyncSessionManager(config) as m:
        s = await m.create_session("kept")
        s.add_message({"role": "user", "content": "before the disk filled"})
        await m.save_session(s)
        repo = repository_of(m)
        assert isinstance(repo, SqlRepository)

        def cap(conn: sqlite3.Connection) -> int:
            used = conn.execute("PRAGMA page_count").fetchone()[0]
            return int(conn.execute(f"PRAGMA max_page_count = {used + 2}").fetchone()[0])

        await repo.run_on_connection(cap)  # SQLite's own way to play a full disk
        s.add_message({"role": "user", "content": "x" * 200_000})
        with pytest.raises(StorageError, match="full"):
            await m.save_session(s)
        assert s.has_unsaved_changes  # nothing lost: the save can be retried later
        other = await m.create_session("small-work-still-fits")  # the manager stays usable
        assert other.name == "small-work-still-fits"
        await repo.run_on_connection(
            lambda conn: conn.execute("PRAGMA max_page_count = 1073741823")
        )
        await m.save_session(s)
        assert [x["content"][:6] for x in await (await m.load_session("kept")).get_messages()] == [
            "before",
            "xxxxxx",
        ]
    conn = sqlite3.connect(db_of(config))
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[tuple[Path, Callable[[], None]]]:
    """A directory and a function that makes it and its files read-only for real.

    File modes do not bind root, so as root the directory is a small tmpfs remounted
    read-only (writes fail with EROFS whoever asks); otherwise modes are dropped.
    """
    where = tmp_path / "ro"
    where.mkdir()
    mounted = False
    if os.geteuid() == 0:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(where)],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                f"running as root and cannot mount a tmpfs to test read-only storage: {done.stderr!r}"
            )
        mounted = True

    def freeze() -> None:
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        else:
            for p in where.rglob("*"):
                os.chmod(p, 0o500 if p.is_dir() else 0o400)
            os.chmod(where, 0o500)

    try:
        yield where, freeze
    finally:
        if mounted:
            subprocess.run(["umount", str(where)], check=False)
        else:
            for p in [where, *where.rglob("*")]:
                os.chmod(p, 0o700)


async def test_read_only_storage(read_only_dir: tuple[Path, Callable[[], None]]) -> None:
    where, freeze = read_only_dir
    config = {"session": {"storage_path": str(where / "sessions"), "autosave_interval": 0}}
    async with AsyncSessionManager(config) as m:
        s = await m.create_session("kept")
        s.add_message({"role": "user", "content": "stored"})
        await m.save_session(s)
    database = where / "sessions" / "sessions.db"
    before = database.read_bytes()
    freeze()
    m = AsyncSessionManager(config)
    try:
        # WAL needs its -shm file next to the database: on read-only storage even opening
        # may fail; whichever call fails first must say why, as a StorageError
        with pytest.raises(StorageError, match=r"read-only|cannot open"):
            s = await m.load_session("kept")
            assert [x["content"] for x in await s.get_messages()] == ["stored"]
            s.add_message({"role": "user", "content": "cannot be written"})
            await m.save_session(s)
    finally:
        await m.close()
    assert database.read_bytes() == before


async def test_corrupt_database(sqlite_config: Config) -> None:
    config = sqlite_config(autosave_interval=0)
    async with AsyncSessionManager(config) as m:
        s = await m.create_session("x")
        for i in range(300):
            s.add_message({"role": "user", "content": f"message {i} " * 20})
        await m.save_session(s)
    path = db_of(config)
    data = bytearray(path.read_bytes())
    for offset in range(4096 * 3, len(data) - 4096, 4096):  # clobber pages past the header
        data[offset + 100 : offset + 400] = b"\xff" * 300
    path.write_bytes(bytes(data))
    damaged = path.read_bytes()
    m = AsyncSessionManager(config)
    with pytest.raises(StorageError, match=r"corrupt|malformed|not a database"):
        s = await m.load_session("x")
        await s.get_messages()
    await m.close()
    assert path.read_bytes() == damaged  # we did not make it worse


async def test_not_a_database_keeps_the_file(sqlite_config: Config) -> None:
    config = sqlite_config()
    path = db_of(config)
    path.parent.mkdir(mode=0o700, parents=True)
    path.write_text("hello, I am a text file\n" * 50)
    m = AsyncSessionManager(config)
    with pytest.raises(StorageError, match="not a database"):
        await m.list_sessions()
    await m.close()
    assert path.read_text().startswith("hello")


def test_lock_held_longer_than_the_timeout(sqlite_config: Config) -> None:
    config = sqlite_config(busy_timeout=0.2, autosave_interval=0)
    with SessionManager(config) as m:
        s = m.create_session("x")
        s.add_message({"role": "user", "content": "first"})
        m.save_session(s)
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sqlite3, sys, time\n"
                "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                "c.execute('BEGIN IMMEDIATE'); print('held', flush=True); time.sleep(30)\n",
                str(db_of(config)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            s.add_message({"role": "user", "content": "second"})
            with pytest.raises(StorageError, match="locked"):
                m.save_session(s)
            assert [x["content"] for x in m.load_session("x").get_messages()] == ["first"]
        finally:
            holder.kill()
            holder.wait()
            if holder.stdout is not None:
                holder.stdout.close()
        m.save_session(s)  # the lock is gone: the same changes go through
        assert [x["content"] for x in m.load_session("x").get_messages()] == ["first", "second"]


async def test_no_message_content_in_logs_at_info_or_above(
    sqlite_config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "SECRET-CONVERSATION-TEXT"
    caplog.set_level(logging.DEBUG)
    config = sqlite_config(autosave_interval=0.05)
    other = AsyncSessionManager(sqlite_config(autosave_interval=0))
    async with AsyncSessionManager(config) as m:
        s = await m.create_session(secret[:6])
        s.add_message({"role": "user", "content": secret, "tool_calls": [{"a": secret}]})
        s.update_metadata({"note": secret})
        await m.save_session(s)
        await (await m.load_session(secret[:6])).get_messages()
        await other.delete_session(secret[:6])  # the next autosave fails and is logged
        s.add_message({"role": "user", "content": secret})
        import asyncio

        for _ in range(100):
            await asyncio.sleep(0.05)
            if any("autosave of session" in r.getMessage() for r in caplog.records):
                break
        with pytest.raises(SessionNotFoundError):  # the failure, told at the next call
            s.add_message({"role": "user", "content": "next call"})
        s.clear_messages()
    await other.close()
    loud = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert any("autosave" in r.getMessage() for r in loud)
    for record in loud:
        assert secret not in record.getMessage(), record.getMessage()


def test_files_are_private(sqlite_config: Config) -> None:
    config = sqlite_config()
    with SessionManager(config) as m:
        s = m.create_session("x")
        s.add_message({"role": "user", "content": "private"})
        m.save_session(s)
        directory = Path(config["session"]["storage_path"])
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert modes and all(mode == 0o600 for mode in modes.values()), modes
        export = directory.parent / "export.jsonl"
        m.export_session("x", export)
        assert stat.S_IMODE(export.stat().st_mode) == 0o600

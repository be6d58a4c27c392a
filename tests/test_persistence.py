"""Durability across processes (SQLite only): what one process saved, the next one sees.

Each child is ``sys.executable -c <script>`` with warnings as errors; a child must exit 0
(unless it is meant to fail), promptly, and print nothing to stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from coda_session import AsyncSessionManager, SessionManager, UnsavedChangesWarning

TIMEOUT = 30

PRELUDE = """
import asyncio, json, os, sys, time
from coda_session import AsyncSessionManager, SessionManager
CFG = {"session": {"storage_path": sys.argv[1]}}
def msg(tag, i):
    return {"role": "user", "content": f"{tag}:{i}", "tag": tag, "seq": i,
            "parts": [{"type": "text", "text": "caf\\u00e9 \\U0001f600"}], "n": 2**70}
"""


def run_child(
    body: str, storage: Path, *, expect_rc: int = 0, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    script = PRELUDE + textwrap.dedent(body)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-W", "error", "-c", script, str(storage)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONFAULTHANDLER": "1"},
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"child did not exit within {timeout}s (hung at exit?): {exc.stderr!r}")
    elapsed = time.monotonic() - started
    assert proc.returncode == expect_rc, (
        f"child exited {proc.returncode} (wanted {expect_rc})\n"
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    if expect_rc == 0:
        assert proc.stderr == "", f"child wrote to stderr:\n{proc.stderr}"
    assert elapsed < timeout
    return proc


def expected(tag: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": f"{tag}:{i}",
            "tag": tag,
            "seq": i,
            "parts": [{"type": "text", "text": "caf\u00e9 \U0001f600"}],
            "n": 2**70,
        }
        for i in range(count)
    ]


def without_timestamps(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        m = dict(m)
        # stored exactly: the library adds no timestamp key (it files the time beside)
        assert "timestamp" not in m
        out.append(m)
    return out


def config(storage: Path) -> dict[str, Any]:
    return {"session": {"storage_path": str(storage)}}


def read_sync(storage: Path, name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    with SessionManager(config(storage)) as manager:
        session = manager.load_session(name)
        return session.get_messages(), session.metadata


def read_async(storage: Path, name: str) -> list[dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        async with AsyncSessionManager(config(storage)) as manager:
            info = await manager.get_session_info(name)
            assert info is not None
            session = await manager.load_session(name)
            messages = await session.get_messages()
            assert info.message_count == len(messages)
            return messages

    return asyncio.run(main())


def raw_messages(storage: Path) -> list[tuple[Any, ...]]:
    """The rows, read with plain sqlite3 (no coda_session involved)."""
    conn = sqlite3.connect(storage / "sessions.db")
    try:
        return conn.execute(
            "SELECT s.name, m.role, m.content FROM messages m JOIN sessions s ON s.id = m.session_id "
            "ORDER BY m.id"
        ).fetchall()
    finally:
        conn.close()


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "sessions"


WRITE_AND_CLOSE = """
with SessionManager(CFG) as m:
    s = m.create_session("persist")
    for i in range(25):
        s.add_message(msg("first", i))
        if i % 5 == 4:
            m.save_session(s)
    s.update_metadata({"owner": "child-1", "big": 2**70, "nested": {"x": [1, None]}})
    m.save_session(s)
print(json.dumps({"id": s.id, "count": s.message_count}))
"""


def test_child_writes_parent_and_second_child_read(storage: Path) -> None:
    out = json.loads(run_child(WRITE_AND_CLOSE, storage).stdout)
    assert out["count"] == 25
    assert (storage / "sessions.db").is_file()

    messages, metadata = read_sync(storage, "persist")
    assert without_timestamps(messages) == expected("first", 25)
    assert metadata == {"owner": "child-1", "big": 2**70, "nested": {"x": [1, None]}}
    assert without_timestamps(read_async(storage, "persist")) == expected("first", 25)
    assert [r[2] for r in raw_messages(storage)] == [f"first:{i}" for i in range(25)]

    # a second child reads it, and appends
    second = run_child(
        """
        with SessionManager(CFG) as m:
            s = m.load_session("persist")
            got = s.get_messages()
            meta = s.metadata
            for i in range(5):
                s.add_message(msg("second", i))
            m.save_session(s)
            sid = s.id
        print(json.dumps({"id": sid, "messages": got, "metadata": meta}))
        """,
        storage,
    )
    seen = json.loads(second.stdout)
    assert seen["id"] == out["id"]
    assert without_timestamps(seen["messages"]) == expected("first", 25)
    assert seen["messages"] == messages  # timestamps identical too
    assert seen["metadata"]["owner"] == "child-1"

    after, _ = read_sync(storage, "persist")
    assert without_timestamps(after) == expected("first", 25) + expected("second", 5)
    assert after[:25] == messages


def test_parent_writes_child_reads(storage: Path) -> None:
    with SessionManager(config(storage)) as manager:
        session = manager.create_session("from-parent")
        for i in range(10):
            session.add_message(msg_parent(i))
        manager.save_session(session)
        # pending at close: written by the flush on close (autosave is on by default)
        session.add_message(msg_parent(10))
    no_autosave = {"session": {"storage_path": str(storage), "autosave_interval": 0}}
    # autosave off: dropped at close, with a warning naming the session
    with (
        pytest.warns(UnsavedChangesWarning, match="from-parent"),
        SessionManager(no_autosave) as manager,
    ):
        session = manager.load_session("from-parent")
        session.add_message({"role": "user", "content": "never saved"})
    proc = run_child(
        """
        with SessionManager(CFG) as m:
            print(json.dumps(m.load_session("from-parent").get_messages()))
        """,
        storage,
    )
    got = json.loads(proc.stdout)
    assert [m["content"] for m in got] == [f"parent:{i}" for i in range(11)]


def msg_parent(i: int) -> dict[str, Any]:
    return {"role": "assistant", "content": f"parent:{i}"}


def test_exit_without_close_is_prompt_and_durable(storage: Path) -> None:
    started = time.monotonic()
    proc = run_child(
        """
        m = SessionManager(CFG)
        s = m.create_session("unclosed")
        for i in range(12):
            s.add_message(msg("u", i))
            m.save_session(s)
        s.add_message(msg("pending", 0))   # pending at exit: flushed when the exit hook closes m
        other = SessionManager(CFG)         # a second manager, also never closed
        o = other.create_session("unclosed-2")
        o.add_message(msg("o", 0))
        other.save_session(o)
        quiet = SessionManager({"session": {**CFG["session"], "autosave_interval": 0}})
        q = quiet.create_session("unclosed-3")
        q.add_message(msg("q", 0))
        quiet.save_session(q)
        q.add_message(msg("dropped", 0))   # autosave off: never written
        print("saved", flush=True)
        """,
        storage,
    )
    assert proc.stdout.strip() == "saved"
    assert time.monotonic() - started < TIMEOUT
    messages, _ = read_sync(storage, "unclosed")
    assert without_timestamps(messages) == expected("u", 12) + expected("pending", 1)
    assert without_timestamps(read_async(storage, "unclosed-2")) == expected("o", 1)
    assert without_timestamps(read_async(storage, "unclosed-3")) == expected("q", 1)


def test_autosave_writes_without_save_or_close(storage: Path) -> None:
    """With a short autosave interval, a process that never saves nor closes (and dies
    without running any exit hook) still leaves its messages behind."""
    proc = run_child(
        """
        m = SessionManager({"session": {**CFG["session"], "autosave_interval": 0.1}})
        s = m.create_session("autosaved")
        for i in range(4):
            s.add_message(msg("a", i))
        deadline = time.monotonic() + 20
        while s.has_unsaved_changes and time.monotonic() < deadline:
            time.sleep(0.05)
        print("clean" if not s.has_unsaved_changes else "still dirty", flush=True)
        os._exit(0)
        """,
        storage,
    )
    assert proc.stdout.strip() == "clean"
    messages, _ = read_sync(storage, "autosaved")
    assert without_timestamps(messages) == expected("a", 4)


def test_exit_without_close_checkpoints_like_close(storage: Path) -> None:
    """A manager left open is closed at interpreter exit, as an explicit close would:
    the last connection's close checkpoints SQLite's WAL into the database file and
    removes the -wal and -shm files."""
    run_child(WRITE_AND_CLOSE, storage)
    assert not (storage / "sessions.db-wal").exists()
    assert not (storage / "sessions.db-shm").exists()

    other = storage.parent / "other"
    run_child(
        """
        m = SessionManager(CFG)
        s = m.create_session("persist")
        for i in range(25):
            s.add_message(msg("first", i))
        m.save_session(s)
        """,
        other,
    )
    assert not (other / "sessions.db-wal").exists(), "the open manager was not closed at exit"
    assert not (other / "sessions.db-shm").exists()
    # the main file alone holds everything
    conn = sqlite3.connect(f"file:{other / 'sessions.db'}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (25,)
    finally:
        conn.close()


def test_exit_with_uncaught_exception_after_save(storage: Path) -> None:
    proc = run_child(
        """
        m = SessionManager(CFG)
        s = m.create_session("crashy")
        s.add_message(msg("c", 0))
        m.save_session(s)
        raise RuntimeError("boom")
        """,
        storage,
        expect_rc=1,
    )
    assert "RuntimeError: boom" in proc.stderr
    assert "Exception ignored" not in proc.stderr
    messages, _ = read_sync(storage, "crashy")
    assert without_timestamps(messages) == expected("c", 1)


def test_hard_exit_after_save_keeps_data(storage: Path) -> None:
    """os._exit skips every exit hook: what save_session returned from is committed."""
    run_child(
        """
        m = SessionManager(CFG)
        s = m.create_session("hard")
        for i in range(7):
            s.add_message(msg("h", i))
        m.save_session(s)
        sys.stdout.flush()
        os._exit(0)
        """,
        storage,
    )
    messages, _ = read_sync(storage, "hard")
    assert without_timestamps(messages) == expected("h", 7)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_child_keeps_saved_data(storage: Path) -> None:
    script = PRELUDE + textwrap.dedent(
        """
        m = SessionManager(CFG)
        s = m.create_session("killed")
        for i in range(9):
            s.add_message(msg("k", i))
        m.save_session(s)
        s.add_message(msg("lost", 0))
        print("saved", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(storage)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "saved"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    messages, _ = read_sync(storage, "killed")
    assert without_timestamps(messages) == expected("k", 9)


def test_sync_manager_inside_running_event_loop(storage: Path) -> None:
    proc = run_child(
        """
        async def main():
            loop = asyncio.get_running_loop()
            with SessionManager(CFG) as m:
                s = m.create_session("in-loop")
                for i in range(6):
                    s.add_message(msg("l", i))
                    m.save_session(s)
                s.update_metadata({"loop": True})
                m.save_session(s)
                got = m.load_session("in-loop").get_messages()
                infos = m.list_sessions()
            # a second one, left open: closed at exit
            left_open = SessionManager(CFG)
            extra = left_open.create_session("in-loop-open")
            extra.add_message(msg("x", 0))
            left_open.save_session(extra)
            await asyncio.sleep(0)
            assert asyncio.get_running_loop() is loop
            return got, [i.name for i in infos]
        got, names = asyncio.run(main())
        print(json.dumps({"messages": got, "names": names}))
        """,
        storage,
    )
    out = json.loads(proc.stdout)
    assert [m["content"] for m in out["messages"]] == [f"l:{i}" for i in range(6)]
    assert out["names"] == ["in-loop"]
    messages, metadata = read_sync(storage, "in-loop")
    assert without_timestamps(messages) == expected("l", 6)
    assert metadata == {"loop": True}
    assert without_timestamps(read_async(storage, "in-loop-open")) == expected("x", 1)


def test_two_processes_append_concurrently(storage: Path) -> None:
    run_child(
        """
        with SessionManager(CFG) as m:
            m.create_session("contended")
        """,
        storage,
    )
    body = """
tag = sys.argv[2]
with SessionManager(CFG) as m:
    s = m.load_session("contended")
    for i in range(30):
        s.add_message(msg(tag, i))
        m.save_session(s)
print("done", flush=True)
"""
    procs = [
        subprocess.Popen(
            [sys.executable, "-W", "error", "-c", PRELUDE + body, str(storage), tag],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("P", "Q")
    ]
    for p in procs:
        out, err = p.communicate(timeout=TIMEOUT * 2)
        assert p.returncode == 0, err
        assert out.strip() == "done" and err == ""
    messages, _ = read_sync(storage, "contended")
    by_tag: dict[str, list[int]] = {"P": [], "Q": []}
    for m in messages:
        by_tag[m["tag"]].append(m["seq"])
    assert by_tag == {"P": list(range(30)), "Q": list(range(30))}
    assert len(messages) == 60

"""Schema by Alembic only: the CLI, the library's own upgrade, adoption, and model drift."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from coda_session import SessionManager
from coda_session.migrate import BASELINE_REVISION, HEAD_REVISION, alembic_config
from coda_session.repository.sql.tables import Base
from tests.support import ROOT, SPEC_SCHEMA, alembic


def test_head_constant_is_alembics_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [HEAD_REVISION]
    assert script.get_base() == BASELINE_REVISION


def test_models_and_migrations_agree(tmp_path: Path) -> None:
    storage = tmp_path / "s"
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        m.create_session("x")
    engine = sa.create_engine(f"sqlite:///{storage / 'sessions.db'}")
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    assert diff == []


def test_cli_upgrade_current_downgrade(tmp_path: Path) -> None:
    storage = tmp_path / "cli"
    up = alembic("upgrade", "head", storage=storage)
    assert up.returncode == 0, up.stderr
    current = alembic("current", storage=storage)
    assert current.returncode == 0 and HEAD_REVISION in current.stdout, current.stderr
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        s = m.create_session("kept")
        s.add_message({"role": "user", "content": "survives"})
        s.add_message({"role": "user", "content": "big " * 1000})  # stored compressed
        s.add_message({"role": "tool", "content": [{"text": "part " * 500}]})
        m.save_session(s)
    conn = sqlite3.connect(storage / "sessions.db")
    assert conn.execute(
        "SELECT count(*) FROM messages WHERE content_zlib IS NOT NULL"
    ).fetchone() == (2,)
    conn.close()
    ids = conn_ids = sqlite3.connect(storage / "sessions.db")
    before_ids = conn_ids.execute("SELECT id FROM messages ORDER BY id").fetchall()
    assert (
        "AUTOINCREMENT"
        in conn_ids.execute("SELECT sql FROM sqlite_master WHERE name = 'messages'").fetchone()[0]
    )
    ids.close()
    down = alembic("downgrade", "0004", storage=storage)  # 0006 -> 0005 -> 0004, ids kept
    assert down.returncode == 0, down.stderr
    conn = sqlite3.connect(storage / "sessions.db")
    assert conn.execute("SELECT id FROM messages ORDER BY id").fetchall() == before_ids
    assert (
        "AUTOINCREMENT"
        in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'messages'").fetchone()[0]
    )
    conn.close()
    down = alembic("downgrade", "-1", storage=storage)  # 0004 -> 0003: a rebuild
    assert down.returncode == 0, down.stderr
    conn = sqlite3.connect(storage / "sessions.db")
    assert conn.execute("SELECT id FROM messages ORDER BY id").fetchall() == before_ids
    assert (
        "AUTOINCREMENT"
        not in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'messages'").fetchone()[0]
    )
    conn.close()
    for expected in ("0002", BASELINE_REVISION):  # each downgrade rebuilds a table
        down = alembic("downgrade", "-1", storage=storage)
        assert down.returncode == 0, down.stderr
        conn = sqlite3.connect(storage / "sessions.db")
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == expected
        rows = conn.execute("SELECT content, metadata FROM messages ORDER BY id").fetchall()
        assert rows[:2] == [("survives", None), ("big " * 1000, None)]
        assert rows[2] == (
            None,
            json.dumps({"content": [{"text": "part " * 500}]}, separators=(",", ":")),
        )
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        conn.close()
    up = alembic("upgrade", "head", storage=storage)
    assert up.returncode == 0, up.stderr
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        info = m.get_session_info("kept")
        assert info is not None and info.message_count == 3  # counters recomputed
        got = m.load_session("kept").get_messages()
        assert got[1]["content"] == "big " * 1000
        assert got[2]["content"] == [{"text": "part " * 500}]
    assert stat_mode(storage / "sessions.db") == 0o600


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def test_env_variable_points_the_cli(tmp_path: Path) -> None:
    storage = tmp_path / "env"
    env = {**os.environ, "CODA_SESSION_STORAGE_PATH": str(storage)}
    run = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert (storage / "sessions.db").is_file()


def test_adopts_a_database_made_from_the_spec_schema(tmp_path: Path) -> None:
    storage = tmp_path / "legacy"
    storage.mkdir()
    conn = sqlite3.connect(storage / "sessions.db")
    conn.executescript(SPEC_SCHEMA)
    conn.execute(
        "INSERT INTO sessions VALUES ('s1', 'old-chat', '2024-01-01 10:00:00', "
        "'2024-01-02 10:00:00', '{\"topic\": \"legacy\"}')"
    )
    # written by another tool: an offset other than UTC, no updated_at, no metadata
    conn.execute(
        "INSERT INTO sessions VALUES ('s2', 'other-tool', '2024-03-01T12:00:00+02:00', NULL, NULL)"
    )
    conn.executemany(
        "INSERT INTO messages (session_id, role, content, timestamp, metadata) VALUES (?,?,?,?,?)",
        [
            ("s1", "user", "hi", "2024-01-01T10:00:00", None),
            ("s1", "assistant", "hello", "2024-01-01T10:00:01", '{"model": "gpt-4"}'),
        ],
    )
    conn.commit()
    conn.close()
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        s = m.load_session("old-chat")
        assert s.get_messages() == [
            {"role": "user", "content": "hi", "timestamp": "2024-01-01T10:00:00"},
            {
                "role": "assistant",
                "content": "hello",
                "timestamp": "2024-01-01T10:00:01",
                "model": "gpt-4",
            },
        ]
        info = m.get_session_info("old-chat")
        assert info is not None and info.message_count == 2 and info.metadata == {"topic": "legacy"}
        assert info.created_at.isoformat() == "2024-01-01T10:00:00+00:00"
        listed = {i.name: i for i in m.list_sessions()}
        assert listed["old-chat"] == info
        other = listed["other-tool"]
        assert other.created_at.isoformat() == "2024-03-01T10:00:00+00:00"
        assert other.updated_at == other.created_at
        assert (other.metadata, other.message_count, other.size_bytes) == ({}, 0, 0)
        assert m.get_session_info("other-tool") == other
        s.add_message({"role": "user", "content": "new"})
        m.save_session(s)
    conn = sqlite3.connect(storage / "sessions.db")
    assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == HEAD_REVISION
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 3
    conn.close()


@pytest.mark.slow
def test_wheel_install_migrates_without_a_clone(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    wheel = next(dist.glob("coda_session-*.whl"))
    site = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    assert (site / "coda_session" / "_migrations" / "env.py").is_file()
    assert (site / "coda_session" / "_migrations" / "versions").is_dir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import coda_session, sys\n"
        "assert coda_session.__file__.startswith(sys.argv[1]), coda_session.__file__\n"
        "from coda_session import SessionManager\n"
        "with SessionManager({'session': {'storage_path': sys.argv[2]}}) as m:\n"
        "    s = m.create_session('w'); s.add_message({'role': 'user', 'content': 'x'})\n"
        "    m.save_session(s)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    run = subprocess.run(
        [sys.executable, "-c", code, str(site), str(tmp_path / "db")],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    conn = sqlite3.connect(tmp_path / "db" / "sessions.db")
    assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == HEAD_REVISION
    conn.close()
    shutil.rmtree(site)


def test_history_reads_as_a_changelog() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "alembic", "history"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "0001, Create the spec's sessions and messages tables" in run.stdout
    assert "0001 -> 0002, Keep message_count and size_bytes on sessions" in run.stdout
    assert "0002 -> 0003, Store large message contents compressed" in run.stdout
    assert "0003 -> 0004, Never reuse message ids" in run.stdout
    assert "0004 -> 0005, The adoption report" in run.stdout
    assert "0005 -> 0006, Each message stores its size and characters" in run.stdout
    assert "0006 -> 0007, Strings are stored in the codec's escaped form" in run.stdout
    assert "0007 -> 0008, Ready for a database server: 64-bit ids" in run.stdout
    assert "0008 -> 0009, Copy-on-write branches: a fork shares its source" in run.stdout
    assert "0009 -> 0010, Trees that grow linearly: a fork inherits its source" in run.stdout
    assert "0010 -> 0011, Sessions are filtered by metadata and tags" in run.stdout
    assert "0011 -> 0012, Full-text search: an index of every message's terms" in run.stdout
    assert "0012 -> 0013, The filter tables' indexes order names by code" in run.stdout
    assert "0013 -> 0014 (head), Messages stored exactly" in run.stdout


def test_alembic_check_finds_no_drift(tmp_path: Path) -> None:
    storage = tmp_path / "check"
    assert alembic("upgrade", "head", storage=storage).returncode == 0
    check = alembic("check", storage=storage)
    assert check.returncode == 0, check.stderr + check.stdout
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_cli_adopts_a_spec_database(tmp_path: Path) -> None:
    storage = tmp_path / "spec"
    storage.mkdir()
    conn = sqlite3.connect(storage / "sessions.db")
    conn.executescript(SPEC_SCHEMA)
    conn.execute("INSERT INTO sessions (id, name) VALUES ('s1', 'kept')")
    conn.execute("INSERT INTO messages (session_id, role, content) VALUES ('s1', 'user', 'x')")
    conn.commit()
    conn.close()
    up = alembic("upgrade", "head", storage=storage)
    assert up.returncode == 0, up.stderr
    conn = sqlite3.connect(storage / "sessions.db")
    assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD_REVISION,)]
    assert conn.execute("SELECT message_count FROM sessions").fetchall() == [(1,)]
    conn.close()


def _populate(storage: Path) -> None:
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        for name in ("a", "b"):
            s = m.create_session(name)
            for i in range(3):
                s.add_message({"role": "user", "content": f"{name}{i}", "tool_call_id": str(i)})
            s.update_metadata({"k": name})
            m.save_session(s)


def _dump(storage: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(storage / "sessions.db")
    try:
        return conn.execute(
            "SELECT s.name, s.metadata, m.id, m.role, m.content, m.timestamp, m.metadata "
            "FROM sessions s JOIN messages m ON m.session_id = s.id ORDER BY m.id"
        ).fetchall()
    finally:
        conn.close()


def _earlier_metadata(text: object) -> object:
    """A row's metadata as an earlier version stores it: without the key layout that
    leads the metadata of a message stored exactly (these rows hold no timestamp key)."""
    if not isinstance(text, str) or not text.startswith('{"\u241b":'):
        return text
    others = {k: v for k, v in json.loads(text).items() if k != "\u241b"}
    return json.dumps(others, ensure_ascii=False, separators=(",", ":")) if others else None


@pytest.mark.parametrize("populated", [False, True])
def test_round_trip_base_head_base_head(tmp_path: Path, populated: bool) -> None:
    storage = tmp_path / "rt"
    assert alembic("upgrade", "head", storage=storage).returncode == 0
    if populated:
        _populate(storage)
    before = _dump(storage)
    assert len(before) == (6 if populated else 0)
    down = alembic("downgrade", BASELINE_REVISION, storage=storage)
    assert down.returncode == 0, down.stderr
    # the baseline still holds every row, each stored as the older code reads it (0014's
    # downgrade takes the key layout out of the rows stored exactly)
    before = [(*row[:-1], _earlier_metadata(row[-1])) for row in before]
    assert _dump(storage) == before
    up = alembic("upgrade", "head", storage=storage)
    assert up.returncode == 0, up.stderr
    assert _dump(storage) == before
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        assert [(i.name, i.message_count) for i in m.list_sessions()] == (
            [("a", 3), ("b", 3)] if populated else []
        )
    down = alembic("downgrade", "base", storage=storage)
    assert down.returncode == 0, down.stderr
    conn = sqlite3.connect(storage / "sessions.db")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert tables <= {"alembic_version", "sqlite_sequence"}  # SQLite keeps its own table
    up = alembic("upgrade", "head", storage=storage)
    assert up.returncode == 0, up.stderr
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        assert m.list_sessions() == []
        m.save_session(m.create_session("again"))


def test_python_upgrade_and_current(tmp_path: Path) -> None:
    import asyncio

    from coda_session.migrate import current, upgrade

    config = {"session": {"storage_path": str(tmp_path / "py")}}
    assert current(config) is None
    assert upgrade(config) == HEAD_REVISION
    assert current(config) == HEAD_REVISION

    async def inside_a_loop() -> str:
        return upgrade(config)  # blocking helper, callable where a loop already runs

    assert asyncio.run(inside_a_loop()) == HEAD_REVISION


def test_processes_opening_a_new_database_at_once(tmp_path: Path) -> None:
    storage = tmp_path / "race"
    go = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
        "from coda_session import SessionManager\n"
        "with SessionManager({'session': {'storage_path': sys.argv[1]}}) as m:\n"
        "    s = m.create_session('p' + sys.argv[3])\n"
        "    s.add_message({'role': 'user', 'content': sys.argv[3]})\n"
        "    m.save_session(s)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(storage), str(go), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    import time

    time.sleep(1.0)  # let every child import and wait at the line
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    conn = sqlite3.connect(storage / "sessions.db")
    assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD_REVISION,)]
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert sorted(r[0] for r in conn.execute("SELECT name FROM sessions")) == [
        "p0",
        "p1",
        "p2",
        "p3",
    ]
    conn.close()

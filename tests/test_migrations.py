"""Schema by Alembic only: the CLI, the library's own upgrade, adoption, and model drift."""

from __future__ import annotations

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

ROOT = Path(__file__).resolve().parent.parent

SPEC_SCHEMA = """
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    created_at TIMESTAMP,
    updated_at TIMESTAMP,
    metadata JSON
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    session_id TEXT,
    role TEXT,
    content TEXT,
    timestamp TIMESTAMP,
    metadata JSON,
    FOREIGN KEY (session_id) REFERENCES sessions(id)
);
"""


def alembic(*args: str, storage: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"storage_path={storage}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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
        m.save_session(s)
    down = alembic("downgrade", "-1", storage=storage)
    assert down.returncode == 0, down.stderr
    conn = sqlite3.connect(storage / "sessions.db")
    assert (
        conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == BASELINE_REVISION
    )
    assert conn.execute("SELECT content FROM messages").fetchall() == [("survives",)]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()
    up = alembic("upgrade", "head", storage=storage)
    assert up.returncode == 0, up.stderr
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        info = m.get_session_info("kept")
        assert info is not None and info.message_count == 1  # counters recomputed
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

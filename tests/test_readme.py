"""Every example of the README runs as pasted: each Python block twice (it must be
re-runnable) in a fresh process with its own home directory, the SQL block on the database
the examples wrote, and the operator's Alembic commands from the repository root."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
SQL = [code for lang, code in BLOCKS if lang == "sql"]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODA_SESSION_")}
    env["HOME"] = str(home)
    return env


def test_the_readme_has_examples() -> None:
    assert len(PYTHON) >= 4 and SQL


@pytest.mark.parametrize("code", PYTHON, ids=[f"python-{i}" for i in range(len(PYTHON))])
def test_python_example_runs_as_pasted_twice(code: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    for run in (1, 2):
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=_env(home),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"run {run}:\n{done.stderr}"


def test_sql_example_reads_what_the_examples_wrote(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    quick_start = PYTHON[0]
    subprocess.run(
        [sys.executable, "-c", quick_start],
        cwd=tmp_path,
        env=_env(home),
        check=True,
        timeout=120,
        capture_output=True,
    )
    conn = sqlite3.connect(f"file:{home / '.coda/sessions/sessions.db'}?mode=ro", uri=True)
    try:
        rows = conn.execute(SQL[0]).fetchall()
    finally:
        conn.close()
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("user", "Hello!", 0),
        ("assistant", "Hi there!", 0),
    ]


def test_sql_example_reads_a_branch(tmp_path: Path) -> None:
    """A branch's messages live in its source's rows: the README's query still shows
    them (it reads the session_view view)."""
    from coda_session import SessionManager

    storage = tmp_path / "store"
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        source = m.create_session("source")
        source.add_message({"role": "user", "content": "Hello!"})
        source.add_message({"role": "assistant", "content": "Hi there!"})
        m.save_session(source)
        chat = m.create_session("my-chat", branch_from="source", fork_point=1)
        chat.add_message({"role": "assistant", "content": "Hello to you."})
        m.save_session(chat)
    conn = sqlite3.connect(f"file:{storage / 'sessions.db'}?mode=ro", uri=True)
    try:
        rows = conn.execute(SQL[0]).fetchall()
    finally:
        conn.close()
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (1, "user", "Hello!", 0),
        (2, "assistant", "Hello to you.", 0),
    ]


def test_operator_commands_run_as_pasted(tmp_path: Path) -> None:
    """The Alembic block, with `.venv/bin/` meaning the environment running the tests."""
    block = next(code for lang, code in BLOCKS if lang == "bash" and "alembic" in code)
    home = tmp_path / "home"
    home.mkdir()
    (home / "coda.toml").write_text(f'[session]\nstorage_path = "{home / "from-toml"}"\n')
    bindir = str(Path(sys.executable).parent) + "/"
    for line in block.strip().splitlines():
        command = line.split("  #")[0].replace(".venv/bin/", bindir)
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=ROOT,
            env=_env(home),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if "/srv/chats.db" in command and not Path("/srv/chats.db").exists():
            # a database that is not there is reported, and nothing is created
            assert done.returncode == 1, done.stderr
            assert "no database at /srv/chats.db" in done.stderr
            assert not Path("/srv/chats.db").exists()
        else:
            assert done.returncode == 0, f"{command}\n{done.stderr}"
    assert (home / ".coda/sessions/sessions.db").is_file()
    assert (home / "from-toml/sessions.db").is_file()

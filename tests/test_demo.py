"""The README's first command, ``python -m coda_session.demo``, run as a user runs it: a
real subprocess, with ``--help``, on a temporary directory and twice on a kept one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from coda_session import SessionManager


def _demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODA_SESSION_")}
    env["HOME"] = str(cwd)
    return subprocess.run(
        [sys.executable, "-m", "coda_session.demo", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_help_prints_usage_and_creates_nothing(tmp_path: Path) -> None:
    for flag in ("--help", "-h"):
        done = _demo(tmp_path, flag)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("usage: python -m coda_session.demo [-h] [DIRECTORY]")
        assert "DIRECTORY" in done.stdout and "resumes" in done.stdout
    done = _demo(tmp_path, "--no-such-option")
    assert done.returncode == 2 and "usage:" in done.stderr
    assert list(tmp_path.iterdir()) == []  # no "./--help" directory, nor any other


def test_the_demo_shows_its_branch_and_leaves_nothing_behind(tmp_path: Path) -> None:
    done = _demo(tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "my-chat-v2: a branch of my-chat showing its first 2 messages" in out
    branch = out.split("my-chat-v2: a branch", 1)[1]
    assert branch.index("[user] Hello!") < branch.index("[user] Let's try another way.")
    assert "my-chat-v2: 3 messages" in out and "a branch of my-chat at message 2" in out
    assert "[user] What is Python?" in out
    assert list(tmp_path.iterdir()) == []  # the temporary directory is gone


def test_a_second_run_on_a_kept_directory_resumes(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    first = _demo(tmp_path, str(kept))
    assert first.returncode == 0, first.stderr
    assert "my-chat: a new session" in first.stdout
    second = _demo(tmp_path, str(kept))
    assert second.returncode == 0, second.stderr
    assert "my-chat: resumed, 3 messages saved by earlier runs" in second.stdout
    assert "my-chat-v3: a branch of my-chat showing its first 3 messages" in second.stdout
    assert "[user] Tell me more (run 2)." in second.stdout
    assert f"{kept} is kept" in second.stdout
    with SessionManager({"session": {"storage_path": str(kept)}}) as m:
        infos = {i.name: i for i in m.list_sessions()}
        assert sorted(infos) == ["my-chat", "my-chat-v2", "my-chat-v3"]
        assert infos["my-chat"].message_count == 4
        assert infos["my-chat"].metadata["runs"] == 2
        v3 = m.load_session("my-chat-v3")
        assert v3 is not None
        assert [x["content"] for x in v3.get_messages()] == [
            "Hello!",
            "Hi there!",
            "What is Python?",
            "Let's try another way.",
        ]
    third = _demo(tmp_path, str(kept))
    assert third.returncode == 0, third.stderr
    assert "my-chat-v4" in third.stdout

"""Every snippet of the specification's README, as written (import path aside)."""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from coda_session import SessionManager


@pytest.fixture(params=["sqlite", "memory"])
def spec_config(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    # "~" in the spec's storage_path lands in a throwaway home
    monkeypatch.setenv("HOME", str(tmp_path))
    if request.param == "memory":
        return {"session": {"backend": "memory"}}
    return {"session": {"storage_path": "~/.coda/sessions"}}


@pytest.fixture
def manager(spec_config: dict[str, Any]) -> Iterator[SessionManager]:
    m = SessionManager(spec_config)
    yield m
    m.close()


def test_quick_start(
    spec_config: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Initialize session manager
    manager = SessionManager(spec_config)

    # Create or load a session
    session = manager.create_session("my-chat")

    # Add messages
    session.add_message({"role": "user", "content": "Hello!"})
    session.add_message({"role": "assistant", "content": "Hi there!"})

    # Save session
    manager.save_session(session)

    # List all sessions
    for session_info in manager.list_sessions():
        print(f"{session_info.name}: {session_info.message_count} messages")

    assert capsys.readouterr().out == "my-chat: 2 messages\n"
    manager.close()
    if "storage_path" in spec_config["session"]:
        db = tmp_path / ".coda" / "sessions" / "sessions.db"
        assert db.is_file()
        # a script run twice resumes its session
        with SessionManager(spec_config) as again:
            session = again.create_session("my-chat")
            assert len(session.get_messages()) == 2


def test_creating_sessions(manager: SessionManager) -> None:
    # New session
    session = manager.create_session("project-discussion")
    session.add_message({"role": "user", "content": "plan"})
    manager.save_session(session)

    # Branch from existing session
    branch = manager.create_session("project-discussion-v2", branch_from="project-discussion")
    assert [m["content"] for m in branch.get_messages()] == ["plan"]


def test_working_with_messages(manager: SessionManager) -> None:
    session = manager.create_session("chat")
    for i in range(60):
        session.add_message({"role": "user", "content": f"m{i}"})

    # Add messages with metadata
    session.add_message(
        {
            "role": "user",
            "content": "What is Python?",
            "timestamp": datetime.now().isoformat(),
            "model": "gpt-4",
        }
    )

    # Get messages
    all_messages = session.get_messages()
    recent_messages = session.get_messages(limit=10)
    assert len(all_messages) == 61 and len(recent_messages) == 10
    assert recent_messages[-1]["model"] == "gpt-4"
    assert recent_messages == all_messages[-10:]

    # Clear or truncate
    session.clear_messages()
    assert session.get_messages() == []
    for i in range(80):
        session.add_message({"role": "user", "content": f"n{i}"})
    session.truncate_messages(max_messages=50)
    assert [m["content"] for m in session.get_messages()] == [f"n{i}" for i in range(30, 80)]
    manager.save_session(session)
    assert manager.load_session("chat").get_messages() == session.get_messages()


def test_session_metadata(manager: SessionManager, capsys: pytest.CaptureFixture[str]) -> None:
    session = manager.create_session("chat")
    # Update metadata
    session.update_metadata(
        {"topic": "Python programming", "tags": ["tutorial", "basics"], "model": "gpt-4"}
    )

    # Access metadata
    print(session.metadata)
    assert "Python programming" in capsys.readouterr().out
    manager.save_session(session)
    assert manager.get_session_info("chat").metadata["tags"] == ["tutorial", "basics"]  # type: ignore[union-attr]


def test_backend_config_snippets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = {
        "session": {
            "backend": "sqlite",
            "storage_path": "~/.coda/sessions",
            "connection_pool_size": 5,
        }
    }
    with SessionManager(config) as m:
        m.save_session(m.create_session("x"))
    assert (tmp_path / ".coda" / "sessions" / "sessions.db").exists()

    config = {"session": {"backend": "memory"}}
    # Note: Sessions are lost when program exits
    with SessionManager(config) as m:
        m.create_session("x")
    with SessionManager(config) as m:
        assert m.list_sessions() == []


def test_session_templates(manager: SessionManager) -> None:
    # Create a code review session
    session = manager.create_session("code-review")
    session.add_message({"role": "system", "content": "You are an expert code reviewer."})
    assert session.get_messages()[0]["role"] == "system"


def test_export_import(
    manager: SessionManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    session = manager.create_session("original")
    session.add_message({"role": "user", "content": "Hello!", "model": "gpt-4"})
    session.add_message({"role": "assistant", "content": [{"type": "text", "text": "Hi"}]})
    session.update_metadata({"topic": "greeting"})

    # Export session
    data = {"messages": session.get_messages(), "metadata": session.metadata}
    with open("session-backup.json", "w") as f:
        json.dump(data, f)

    # Import session
    with open("session-backup.json") as f:
        data = json.load(f)
    imported = manager.create_session("imported")
    for msg in data["messages"]:
        imported.add_message(msg)

    manager.save_session(imported)
    assert manager.load_session("imported").get_messages() == session.get_messages()
    assert os.path.exists("session-backup.json")


def test_session_search(manager: SessionManager) -> None:
    for name, topic in (("a", "Python programming"), ("b", "Rust"), ("c", None)):
        s = manager.create_session(name)
        if topic:
            s.update_metadata({"topic": topic})
        manager.save_session(s)

    # Find sessions by metadata
    python_sessions = [
        s for s in manager.list_sessions() if "python" in s.metadata.get("topic", "").lower()
    ]
    assert [s.name for s in python_sessions] == ["a"]


def test_toml_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from coda_session import SessionConfig

    monkeypatch.setenv("HOME", str(tmp_path))
    toml = tmp_path / "coda.toml"
    toml.write_text(
        """
[session]
# Storage backend: "sqlite" or "memory"
backend = "sqlite"

# Storage location for SQLite
storage_path = "~/.coda/sessions"

# Auto-save interval in seconds (0 = disabled)
autosave_interval = 300

# Maximum session size in MB
max_session_size = 100

# Enable compression for large messages
compress_messages = true
"""
    )
    config = SessionConfig.from_toml(toml)
    assert config.storage_path == tmp_path / ".coda" / "sessions"
    with SessionManager(config) as m:
        m.save_session(m.create_session("x"))
    assert config.database_file is not None and config.database_file.exists()


def test_api_reference_extras(manager: SessionManager) -> None:
    session = manager.create_session("ref")
    session.messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    manager.save_session(session)
    loaded = manager.load_session("ref")
    assert [m["content"] for m in loaded.messages] == ["a", "b"]
    assert loaded.created_at.isoformat() and loaded.updated_at >= loaded.created_at
    assert loaded.get_token_count() > 0
    loaded.truncate_messages(1)
    assert [m["content"] for m in loaded.messages] == ["b"]
    info = manager.get_session_info("ref")
    assert info is not None and info.size_bytes > 0
    assert manager.get_session_info("missing") is None
    manager.delete_session("ref")
    assert manager.get_session_info("ref") is None
    infos = sorted(manager.list_sessions(), key=lambda s: s.updated_at)
    assert sum(s.size_bytes for s in infos) >= 0 and sum(s.message_count for s in infos) >= 0


def test_spec_flow_stores_what_its_search_looks_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The specification's README run top to bottom: "project-discussion" gets its
    metadata, then ``session`` is rebound to "code-review", leaving that object
    unreferenced with unsaved changes. Its metadata must be stored, so the search
    snippet finds it (before the fix it found nothing)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    manager = SessionManager({"session": {"storage_path": "~/.coda/sessions"}})
    session = manager.create_session("my-chat")
    session.add_message({"role": "user", "content": "Hello!"})
    session.add_message({"role": "assistant", "content": "Hi there!"})
    manager.save_session(session)
    for session_info in manager.list_sessions():
        print(f"{session_info.name}: {session_info.message_count} messages")

    session = manager.create_session("project-discussion")
    branch = manager.create_session("project-discussion-v2", branch_from="project-discussion")
    session.add_message(
        {
            "role": "user",
            "content": "What is Python?",
            "timestamp": datetime.now().isoformat(),
            "model": "gpt-4",
        }
    )
    all_messages = session.get_messages()
    recent_messages = session.get_messages(limit=10)
    session.clear_messages()
    session.truncate_messages(max_messages=50)
    session.update_metadata(
        {"topic": "Python programming", "tags": ["tutorial", "basics"], "model": "gpt-4"}
    )
    print(session.metadata)

    session = manager.create_session("code-review")
    session.add_message({"role": "system", "content": "You are an expert code reviewer."})
    data = {"messages": session.get_messages(), "metadata": session.metadata}
    with open("session-backup.json", "w") as f:
        json.dump(data, f)
    with open("session-backup.json") as f:
        data = json.load(f)
    imported = manager.create_session("imported")
    for msg in data["messages"]:
        imported.add_message(msg)
    del branch, all_messages, recent_messages
    gc.collect()
    manager.close()  # what the interpreter's exit does for a manager left open

    with SessionManager({"session": {"storage_path": "~/.coda/sessions"}}) as manager:
        python_sessions = [
            s for s in manager.list_sessions() if "python" in s.metadata.get("topic", "").lower()
        ]
        assert [s.name for s in python_sessions] == ["project-discussion"]
        assert python_sessions[0].metadata["tags"] == ["tutorial", "basics"]
        assert manager.load_session("imported").message_count == 1

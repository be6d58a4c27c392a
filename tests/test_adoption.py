"""Adopting real-world databases made from the spec's raw DDL: every row kept, every
session readable, every export importable, and a report of what had to be interpreted."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coda_session import SessionError, SessionManager
from tests.support import SPEC_SCHEMA

ROOT = Path(__file__).resolve().parent.parent

GOOD_SESSION = ("good", "good-chat", "2024-01-01T10:00:00+00:00", None, '{"k": 1}')
GOOD_MESSAGES = [
    ("good", "user", "hi", "2024-01-01T10:00:00", None),
    ("good", "assistant", "hello", "2024-01-01T10:00:01", '{"model": "m"}'),
]

# name -> (sessions rows, messages rows): each case one kind of row the spec's schema allows
_S = "INSERT INTO sessions VALUES (?,?,?,?,?)"
CASES: dict[str, tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]] = {
    "created-null": ([("b", "bad", None, None, None)], [("b", "user", "x", "2024-02-01T00:00:00", None)]),
    "created-epoch-int": ([("b", "bad", 1700000000, 1700000100, None)], []),
    "created-epoch-float": ([("b", "bad", 1700000000.25, None, None)], []),
    "created-epoch-text": ([("b", "bad", "1700000000", "1700000000.5", None)], []),
    "created-space": ([("b", "bad", "2024-01-02 03:04:05", "2024-01-02 03:04:06", None)], []),
    "created-garbage": ([("b", "bad", "yesterday", "soon", None)], [("b", "user", "x", "2024-02-01T00:00:00", None)]),
    "metadata-null": ([("b", "bad", "2024-01-02T00:00:00", None, None)], []),
    "metadata-not-json": ([("b", "bad", "2024-01-02T00:00:00", None, "{not json")], []),
    "role-null": ([("b", "bad", "2024-01-02T00:00:00", None, None)], [("b", None, "x", "2024-02-01T00:00:00", None)]),
    "timestamp-null": ([("b", "bad", "2024-01-02T00:00:00", None, None)], [("b", "user", "x", None, None)]),
    "timestamp-epoch": ([("b", "bad", "2024-01-02T00:00:00", None, None)], [("b", "user", "x", 1700000000, None)]),
    "message-metadata-not-json": ([("b", "bad", "2024-01-02T00:00:00", None, None)], [("b", "user", "x", "2024-02-01T00:00:00", "oops{")]),
    "orphan": ([], [("nowhere", "user", "lost", "2024-02-01T00:00:00", None)]),
    "orphan-null": ([], [(None, "user", "lost", "2024-02-01T00:00:00", None)]),
}  # fmt: skip


def make_spec_db(
    storage: Path, sessions: list[tuple[Any, ...]], messages: list[tuple[Any, ...]]
) -> Path:
    storage.mkdir(parents=True, exist_ok=True)
    path = storage / "sessions.db"
    conn = sqlite3.connect(path)
    conn.executescript(SPEC_SCHEMA)
    conn.executemany(_S, [GOOD_SESSION, *sessions])
    conn.executemany(
        "INSERT INTO messages (session_id, role, content, timestamp, metadata) VALUES (?,?,?,?,?)",
        [*GOOD_MESSAGES, *messages],
    )
    conn.commit()
    conn.close()
    return path


def walk(storage: Path, scratch: Path) -> list[str]:
    """Every public call on every session; returns the coda_session errors seen (any other
    exception fails the test)."""
    seen: list[str] = []
    scratch.mkdir(parents=True, exist_ok=True)

    def attempt(what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except SessionError as exc:
            seen.append(f"{what}: {type(exc).__name__}: {exc}")
            return None

    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        infos = attempt("list_sessions", m.list_sessions) or []
        for i, info in enumerate(infos):
            attempt("get_session_info", m.get_session_info, info.name)
            session = attempt("load_session", m.load_session, info.name)
            if session is not None:
                attempt("get_messages", session.get_messages)
                attempt("get_token_count", session.get_token_count)
                attempt("add_message", session.add_message, {"role": "user", "content": "more"})
                attempt("save_session", m.save_session, session)
            target = scratch / f"one-{i}.jsonl"
            attempt("export_session", m.export_session, info.name, str(target))
            if target.exists():
                with SessionManager({"session": {"backend": "memory"}}) as fresh:
                    attempt("import_session", fresh.import_session, str(target))
        backup = scratch / "all.jsonl"
        attempt("export_store", m.export_store, str(backup))
        if backup.exists():
            with SessionManager({"session": {"storage_path": str(scratch / "fresh")}}) as fresh:
                attempt("import_store", fresh.import_store, str(backup))
        for info in infos:
            attempt("delete_session", m.delete_session, info.name)
    return seen


def counts(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        return (
            conn.execute("SELECT count(*) FROM sessions").fetchone()[0],
            conn.execute("SELECT count(*) FROM messages").fetchone()[0],
        )
    finally:
        conn.close()


def notes(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT session_id, message_id, field, original, interpreted_as FROM adoption_notes"
        ).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("case", sorted(CASES))
def test_adopted_database_reads_whole_and_exports_importably(
    case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sessions, messages = CASES[case]
    storage = tmp_path / "s"
    path = make_spec_db(storage, sessions, messages)
    caplog.set_level(logging.WARNING, logger="coda_session")
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        infos = m.list_sessions()
        names = {i.name for i in infos}
        assert "good-chat" in names
        total = sum(len(m.load_session(i.name).get_messages()) for i in infos)
    # every row kept: messages all reachable through list_sessions (orphans included)
    assert total == len(GOOD_MESSAGES) + len(messages)
    n_sessions, n_messages = counts(path)
    assert n_messages == len(GOOD_MESSAGES) + len(messages)
    assert n_sessions >= 1 + len(sessions)
    assert walk(storage, tmp_path / "scratch") == []


NEEDS_NOTE = {
    "created-null": "sessions.created_at",
    "created-epoch-int": "sessions.created_at",
    "created-epoch-float": "sessions.created_at",
    "created-epoch-text": "sessions.created_at",
    "created-garbage": "sessions.created_at",
    "metadata-not-json": "sessions.metadata",
    "role-null": "messages.role",
    "timestamp-null": "messages.timestamp",
    "timestamp-epoch": "messages.timestamp",
    "message-metadata-not-json": "messages.metadata",
    "orphan": "messages.session_id",
    "orphan-null": "messages.session_id",
}


@pytest.mark.parametrize("case", sorted(NEEDS_NOTE))
def test_adoption_reports_what_it_interpreted(
    case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sessions, messages = CASES[case]
    storage = tmp_path / "s"
    path = make_spec_db(storage, sessions, messages)
    caplog.set_level(logging.WARNING, logger="coda_session")
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        m.list_sessions()
    fields = {row[2] for row in notes(path)}
    assert NEEDS_NOTE[case] in fields
    logged = [
        r for r in caplog.records if r.name == "coda_session" and r.levelno == logging.WARNING
    ]
    assert any("adoption_notes" in r.getMessage() for r in logged)
    # counts and ids, never content
    for r in logged:
        assert "lost" not in r.getMessage() and "not json" not in r.getMessage()


def test_nothing_to_interpret_writes_no_notes_and_logs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = tmp_path / "s"
    path = make_spec_db(storage, [], [])
    caplog.set_level(logging.WARNING, logger="coda_session")
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        assert [i.name for i in m.list_sessions()] == ["good-chat"]
    assert notes(path) == []
    assert not [r for r in caplog.records if r.name == "coda_session"]


def test_interpretations_keep_the_originals(tmp_path: Path) -> None:
    storage = tmp_path / "s"
    make_spec_db(
        storage,
        [("b", "bad", 1700000000, "soon", "{not json")],
        [
            ("b", None, "x", 1700000000, "oops{"),
            ("b", "user", "y", None, None),
            ("nowhere", "user", "lost", "2024-02-01T00:00:00", None),
        ],
    )
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        bad = m.get_session_info("bad")
        assert bad is not None
        assert bad.created_at.isoformat() == "2023-11-14T22:13:20+00:00"
        assert bad.metadata == {"_adopted_metadata": "{not json"}
        first, second = m.load_session("bad").get_messages()
        assert first == {
            "role": "unknown",
            "content": "x",
            "timestamp": "2023-11-14T22:13:20+00:00",
            "_adopted_role": None,
            "_adopted_timestamp": 1700000000,
            "_adopted_metadata": "oops{",
        }
        assert second["timestamp"] == "2023-11-14T22:13:20+00:00"  # the session's creation
        assert second["_adopted_timestamp"] is None
        orphans = m.load_session("orphaned-nowhere")
        assert orphans.id == "nowhere"
        assert orphans.get_messages() == [
            {"role": "user", "content": "lost", "timestamp": "2024-02-01T00:00:00"}
        ]
        assert m.get_session_info("orphaned-nowhere").message_count == 1  # type: ignore[union-attr]


def test_alembic_cli_adopts_and_repairs(tmp_path: Path) -> None:
    storage = tmp_path / "s"
    rows_s = [s for c in ("created-garbage",) for s in CASES[c][0]]
    path = make_spec_db(
        storage,
        rows_s,
        [("b", None, "x", None, "oops{"), ("nowhere", "user", "lost", "2024-02-01T00:00:00", None)],
    )
    up = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"storage_path={storage}", "upgrade", "head"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    assert "adoption_notes" in up.stderr  # the warning reaches the operator's log
    fields = sorted({row[2] for row in notes(path)})
    assert fields == [
        "messages.metadata",
        "messages.role",
        "messages.session_id",
        "messages.timestamp",
        "sessions.created_at",
        "sessions.updated_at",
    ]
    assert counts(path)[1] == 4
    assert walk(storage, tmp_path / "scratch") == []

"""Revisions that never change: no revision imports the library, and what 0006 and 0007
froze beside them still agrees with the live codec.

The revisions' copies are the ones that must never change; if the codec changes on
purpose, it is the agreement tests here that change (a revision keeps what it wrote).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import sqlite3
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from hypothesis import given, settings
from hypothesis import strategies as st

from coda_session import SessionManager, escaping
from coda_session.codec import encode_message, measure_message
from coda_session.errors import DamagedDataError, SchemaVersionError, SessionError
from coda_session.migrate import HEAD_REVISION, alembic_config
from coda_session.models import ITEM_PREFIX, MessageRecord
from coda_session.repository.sql.schema import migrations_dir
from tests.support import alembic

TS = "2024-01-01T00:00:00"
ESC = "\u241b"


@functools.cache
def _revision(rev: str) -> ModuleType:
    """The revision's module, loaded by Alembic as a migration loads it."""
    script = ScriptDirectory.from_config(alembic_config()).get_revision(rev)
    assert script is not None
    return script.module


# -- no revision imports the library ----------------------------------------------------


def _imports(source: str) -> Iterator[str]:
    """Every module a source imports, anywhere in it (a relative one with its dots; an
    ``importlib.import_module``/``__import__`` of a literal name too)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield "." * node.level + (node.module or "")
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value


def _live(module: str) -> bool:
    return module == "coda_session" or module.startswith(("coda_session.", "."))


def test_the_import_check_sees_every_kind_of_import() -> None:
    source = (
        "import coda_session\n"
        "import os, coda_session.codec as c\n"
        "from coda_session.escaping import escape\n"
        "from . import sibling\n"
        "def f():\n"
        "    from coda_session import errors\n"
        "    importlib.import_module('coda_session.models')\n"
        "    __import__('coda_session')\n"
        "import coda_sessions_elsewhere\n"
    )
    assert [m for m in _imports(source) if _live(m)] == [
        "coda_session",
        "coda_session.codec",
        "coda_session.escaping",
        ".",
        "coda_session",
        "coda_session.models",
        "coda_session",
    ]


def test_no_revision_imports_the_library() -> None:
    """A revision runs the code it was written with: what it needs is frozen beside it
    (``migrations/env.py`` is no revision and may import the library)."""
    versions = migrations_dir() / "versions"
    files = sorted(versions.glob("*.py"))
    script = ScriptDirectory.from_config(alembic_config())
    # every file Alembic runs is checked, and every file checked is one it runs
    assert {Path(s.path).resolve() for s in script.walk_revisions()} == {f.resolve() for f in files}
    assert len(files) >= int(HEAD_REVISION)
    live = {f.name: [m for m in _imports(f.read_text()) if _live(m)] for f in files}
    assert {name: found for name, found in live.items() if found} == {}


# -- 0006: the measurement, frozen --------------------------------------------------------

MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "hello", "timestamp": TS},
    {"role": "user", "content": "", "timestamp": TS},
    {
        "role": "assistant",
        "content": "héllo wörld 日本語 🎉",
        "timestamp": "2024-01-01T00:00:00+02:00",
    },
    {"role": "assistant", "content": None, "timestamp": TS},
    {"role": "assistant", "content": None, "timestamp": TS, "tool_calls": [{"id": "c1"}]},
    {"role": "tool", "content": [{"type": "text", "text": "part"}], "timestamp": TS},
    {"role": "tool", "content": {"a": 1, "b": [1, 2.5, True, None]}, "timestamp": TS},
    {"role": "tool", "content": 5, "timestamp": TS, "name": "calc"},
    {"role": "user", "content": "hi", "timestamp": TS, "model": "m", "n": 0.5, "ok": False},
    {"role": "user", "content": "a\x00b", "timestamp": TS},
    {"role": "user", "content": "ls: \udc80.txt", "timestamp": TS},
    {"role": "user", "content": f"a {ESC} b {ESC}0000 literal", "timestamp": TS},
    {"role": "user", "content": "\\u0000 is text here", "timestamp": TS},
    {"role": "user", "content": "x", "timestamp": TS, "k\x00": "v\udc80", ESC: f"{ESC}241b"},
    {"role": "tool", "content": [{"t": f"x\x00{ESC}\ud800"}], "timestamp": TS, "e": "é"},
    {"role": "user", "content": "big " * 1000, "timestamp": TS},
    {"role": "user", "content": "日本語のテキスト " * 400, "timestamp": TS},
    {"role": "tool", "content": [{"text": "part " * 500}], "timestamp": TS, "name": "t"},
    {"role": "user", "content": f"nul\x00 {ESC} \udc80 " * 300, "timestamp": TS, "k": ESC},
    {"role": "tool", "content": {f"{ESC}k": ["\x00" * 50] * 40}, "timestamp": TS},
]


def _frozen(rev: ModuleType, record: MessageRecord) -> tuple[dict[str, Any], tuple[int, int]]:
    assert record.id is not None
    stored = rev.stored_message(
        record.id, record.role, record.content, record.timestamp, record.extra, record.zcontent
    )
    return stored, rev.measure_message(stored)


def _as_earlier(record: MessageRecord) -> MessageRecord:
    """The row an earlier version wrote for the same message, which is what 0006 reads:
    the extra keys' JSON without the key layout this version leads it with, and without
    the timestamp (kept in its column only). Every message of MESSAGES begins with role,
    content and timestamp, so the order of the rest is what earlier versions wrote."""
    extra = record.extra
    assert extra is not None and extra.startswith(ITEM_PREFIX)
    rest = extra[extra.index('"', len(ITEM_PREFIX)) + 1 :]
    others = {} if rest == "}" else json.loads("{" + rest[1:])
    assert others.pop("timestamp") == record.timestamp
    text = json.dumps(others, ensure_ascii=False, separators=(",", ":")) if others else None
    return dataclasses.replace(record, extra=text)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_frozen_measurement_agrees_with_the_codec(compress: bool) -> None:
    rev = _revision("0006")
    compressed = 0
    for message in MESSAGES:
        # (the codec now stores messages exactly; 0006 only ever reads rows of
        # earlier versions, which read the same through the live codec)
        record = _as_earlier(encode_message(message, compress=compress).with_id(7))
        compressed += record.zcontent is not None
        stored, measured = _frozen(rev, record)
        assert stored == record.to_dict() == message
        assert measured == measure_message(record.to_dict()) == (record.size, record.chars)
    assert compressed == (5 if compress else 0)  # both forms of content are compared


ODD_ROWS: list[dict[str, Any]] = [
    # rows written by other code, which 0006 measures as they read
    {"role": "", "content": None, "timestamp": "", "extra": "[1, 2]"},
    {"role": "user", "content": None, "timestamp": TS, "extra": "null"},
    {"role": "user", "content": None, "timestamp": TS, "extra": '"text"'},
    {"role": "user", "content": "x", "timestamp": TS, "extra": '{"content": [1]}'},
    {"role": "user", "content": None, "timestamp": TS, "extra": '{"k": "\u241b0000"}'},
    {"role": "user", "content": f"{ESC}dc80", "timestamp": TS, "extra": None},
    {
        "role": "user",
        "content": None,
        "timestamp": TS,
        "extra": None,
        "zcontent": zlib.compress(b'j{"a": "\xe2\x90\x9b241b"}'),
    },
]


def _record(row: dict[str, Any]) -> MessageRecord:
    return MessageRecord(
        role=row["role"],
        content=row["content"],
        timestamp=row["timestamp"],
        extra=row["extra"],
        size=0,
        chars=0,
        id=3,
        zcontent=row.get("zcontent"),
    )


def test_frozen_measurement_reads_rows_of_other_code_as_the_codec_does() -> None:
    rev = _revision("0006")
    for row in ODD_ROWS:
        record = _record(row)
        stored, measured = _frozen(rev, record)
        assert stored == record.to_dict()
        assert measured == measure_message(record.to_dict())


DAMAGED_ROWS: list[dict[str, Any]] = [
    {"role": "user", "content": None, "timestamp": TS, "extra": "not json"},
    {"role": "user", "content": None, "timestamp": TS, "extra": '{"a": NaN}'},
    {"role": "user", "content": None, "timestamp": TS, "extra": '{"content": Infinity}'},
    {"role": "user", "content": None, "timestamp": TS, "extra": '{"a": 1e400}'},
    {"role": "user", "content": None, "timestamp": TS, "extra": None, "zcontent": b"garbage"},
    {
        "role": "user",
        "content": None,
        "timestamp": TS,
        "extra": None,
        "zcontent": zlib.compress(b"xhello"),
    },
    {
        "role": "user",
        "content": None,
        "timestamp": TS,
        "extra": None,
        "zcontent": zlib.compress(b"t\xff\xfe"),
    },
    {
        "role": "user",
        "content": None,
        "timestamp": TS,
        "extra": None,
        "zcontent": zlib.compress(b"j{bad"),
    },
]


def test_frozen_measurement_refuses_what_the_codec_refuses() -> None:
    """The same error (by name: migrations/env.py raises the library's class) and message."""
    rev = _revision("0006")
    for row in DAMAGED_ROWS:
        record = _record(row)
        with pytest.raises(SessionError) as live:
            measure_message(record.to_dict())
        with pytest.raises(rev.FrozenError) as frozen:
            _frozen(rev, record)
        assert (frozen.value.coda_error, str(frozen.value)) == (
            type(live.value).__name__,
            str(live.value),
        )


# -- 0007: the stored form, frozen ---------------------------------------------------------

TEXTS = [
    "",
    "plain",
    "héllo 日本語 🎉",
    "a\x00b",
    "\udc80\ud800x\udfff",
    f"{ESC}",
    f"{ESC}0000 {ESC}241b {ESC}dc80 {ESC}zzzz {ESC}d7ff",
    f"\x00{ESC}\udc80" * 3,
]


# any text, with the characters the stored form escapes (and the digits of its codes) often
TEXT = st.text(
    alphabet=st.one_of(st.characters(), st.sampled_from("\x00\u241b\udc80\ud800\udfff0db4"))
)


@settings(deadline=None)  # the first example loads the revisions; no test is timed
@given(TEXT)
def test_frozen_stored_form_agrees_with_escaping(text: str) -> None:
    rev = _revision("0007")
    for value in [text, *TEXTS]:
        assert rev.escape(value) == escaping.escape(value)
        assert rev.unescape(value) == escaping.unescape(value)
        assert rev.unescape(rev.escape(value)) == value
        nested = {value: [value, (value, 1), {"k": value}, None, 2.5, True]}
        assert rev.escape_json(nested) == escaping.escape_json(nested)
        assert rev.unescape_json(rev.escape_json(nested)) == escaping.unescape_json(
            escaping.escape_json(nested)
        )
    assert rev.ESCAPE == escaping.ESCAPE


# -- what a frozen revision refuses is raised as the library's error ----------------------


def test_an_upgrade_of_a_damaged_row_raises_damaged_data(tmp_path: Path) -> None:
    storage = tmp_path / "d"
    assert alembic("upgrade", "0005", storage=storage).returncode == 0
    conn = sqlite3.connect(storage / "sessions.db")
    conn.execute(
        "INSERT INTO sessions (id, name, created_at, updated_at, metadata, message_count, "
        "size_bytes) VALUES ('s', 's', '2026-11-24 00:00:00.000000', "
        "'2026-11-24 00:00:00.000000', '{}', 0, 0)"
    )
    conn.execute(
        "INSERT INTO messages (session_id, role, content, timestamp, metadata, content_zlib) "
        "VALUES ('s', 'user', NULL, ?, NULL, ?)",
        (TS, b"garbage"),
    )
    conn.commit()
    conn.close()
    with (
        SessionManager({"session": {"storage_path": str(storage)}}) as m,
        pytest.raises(DamagedDataError, match="message 1 is damaged: its compressed"),
    ):
        m.list_sessions()  # the store opens (and migrates) on first use
    conn = sqlite3.connect(storage / "sessions.db")
    assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0005",)]
    conn.close()


def test_a_refused_downgrade_raises_schema_version_error(tmp_path: Path) -> None:
    storage = tmp_path / "d"
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        s = m.create_session("nul")
        s.add_message({"role": "user", "content": "a\x00b", "timestamp": TS})
        m.save_session(s)
    engine = sa.create_engine(f"sqlite:///{storage / 'sessions.db'}")
    try:
        with engine.connect() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            with pytest.raises(SchemaVersionError, match="cannot downgrade below revision 0007"):
                command.downgrade(cfg, "0006")
    finally:
        engine.dispose()
    conn2 = sqlite3.connect(storage / "sessions.db")
    assert conn2.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD_REVISION,)]
    conn2.close()

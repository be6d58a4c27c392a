"""Messages and items stored exactly: every key, nested value and key order, none added,
on every backend, through reopening, export/import, branches, pops and search hits; the
time a message is filed under kept beside it (``get_entries``); and the refusals.

The OpenAI Agents SDK's item shapes are written here by hand, as plain dicts: the core
tests do not import any framework.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from coda_session import (
    AsyncSessionManager,
    InvalidMessageError,
    MessageEntry,
    MessageModel,
    SessionData,
    SessionInfo,
    SessionManager,
    SessionStorage,
)
from coda_session.codec import encode_message
from coda_session.models import ITEM_PREFIX
from coda_session.repository.custom import UNKNOWN_TIME
from tests.support import Store, alembic

TS = "2024-05-01T10:00:00+00:00"

#: One of every shape: the SDK's items (no role, or role and type), keys in unusual
#: orders, nested dicts whose key order matters, and the strings the stored form escapes.
ITEMS: list[dict[str, Any]] = [
    {"role": "user", "content": "hello zebra"},
    {"content": "content first", "role": "user"},
    {"role": "system"},
    {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "the answer", "annotations": []}],
        "id": "msg_1",
        "status": "completed",
    },
    {
        "arguments": '{"city": "Paris"}',
        "call_id": "call_1",
        "name": "get_weather",
        "type": "function_call",
        "id": "fc_1",
        "status": "completed",
    },
    {"type": "function_call_output", "call_id": "call_1", "output": "sunny quokka"},
    {
        "id": "rs_1",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "thinking about wombats"}],
        "encrypted_content": None,
    },
    {"type": "item_reference", "id": "msg_0"},
    {"type": "compaction", "encrypted_content": "opaque"},
    {"zeta": 1, "alpha": {"z": 1, "a": [{"y": 2, "b": 3}]}, "role": "tool", "content": None},
    {"role": "user", "content": {"b": 1, "a": 2}, "model": "gpt-4"},
    {"role": "user", "content": "nul \x00 lone \udc80 escape \u241b and ␛0000"},
    {"type": "function_call_output", "call_id": "c\x00", "output": "\ud800 raw", "k␛": "␛"},
    {"role": "user", "content": "given time", "timestamp": TS},
    {"timestamp": "2023-01-02T03:04:05", "role": "assistant", "content": "time first"},
    {"role": "user", "content": "explicit null time", "timestamp": None},
    {
        "role": "assistant",
        "content": "long " * 400,
        "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    },
]


def exact(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Equal, and with the same key order at every depth (JSON text compares both)."""
    assert got == want
    assert [json.dumps(g) for g in got] == [json.dumps(w) for w in want]


@pytest.mark.parametrize("compress", [False, True])
async def test_items_come_back_exactly(store: Store, compress: bool) -> None:
    async with store.async_manager(compress_messages=compress) as m:
        s = await m.create_session("items")
        for item in ITEMS:
            s.add_message(item)
        exact(await s.get_messages(), ITEMS)  # unsaved
        await m.save_session(s)
        exact(await s.get_messages(), ITEMS)
        exact(await s.get_messages(limit=3), ITEMS[-3:])
    async with store.async_manager() as m:  # reopened: read from storage
        s = await m.load_session("items")
        exact(await s.get_messages(), ITEMS)
        exact([msg for _, msg in await s.get_messages_with_ids()], ITEMS)
        info = await m.get_session_info("items")
        assert info is not None and info.message_count == len(ITEMS)


async def test_the_filed_time_is_kept_beside(amanager: AsyncSessionManager) -> None:
    s = await amanager.create_session("times")
    before = datetime.now(UTC)
    s.add_message({"role": "user", "content": "now"})
    s.add_message({"type": "function_call_output", "call_id": "c", "output": "x"})
    s.add_message({"role": "user", "content": "mine", "timestamp": TS})
    s.add_message({"role": "user", "content": "dt", "timestamp": datetime(2024, 1, 2, tzinfo=UTC)})
    after = datetime.now(UTC)
    await amanager.save_session(s)
    entries = await s.get_entries()
    assert all(isinstance(e, MessageEntry) for e in entries)
    for entry in entries[:2]:
        assert "timestamp" not in entry.message
        filed = datetime.fromisoformat(entry.timestamp)
        assert filed.tzinfo is not None and before <= filed <= after
    assert entries[2].timestamp == TS and entries[2].message["timestamp"] == TS
    # a datetime is stored as its isoformat(), in the message and as the filed time
    assert entries[3].message["timestamp"] == "2024-01-02T00:00:00+00:00"
    assert entries[3].timestamp == "2024-01-02T00:00:00+00:00"
    ids = [i for i, _ in await s.get_messages_with_ids()]
    assert [e.id for e in entries] == ids
    # the filed time survives reopening
    reopened = await amanager.load_session("times")
    assert [e.timestamp for e in await reopened.get_entries()] == [e.timestamp for e in entries]
    # and filters search as before
    hits = await amanager.search("mine", before="2024-06-01")
    assert [h.message for h in hits.hits] == [entries[2].message]
    assert not (await amanager.search("now", before="2024-06-01")).hits


def test_blocking_api_mirrors(manager: SessionManager) -> None:
    s = manager.create_session("sync")
    s.add_message({"type": "reasoning", "id": "r", "summary": []})
    s.messages = [*s.messages, {"role": "user", "content": "x", "timestamp": TS}]
    manager.save_session(s)
    exact(
        s.get_messages(),
        [
            {"type": "reasoning", "id": "r", "summary": []},
            {"role": "user", "content": "x", "timestamp": TS},
        ],
    )
    entries = s.get_entries()
    assert [e.timestamp for e in entries][1] == TS
    assert [e.message for e in entries] == s.get_messages()


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
async def test_export_import_keep_items_and_times(
    amanager: AsyncSessionManager, tmp_path: Path, fmt: str
) -> None:
    s = await amanager.create_session("src")
    for item in ITEMS:
        s.add_message(item)
    await amanager.save_session(s)
    path = tmp_path / f"out.{fmt}"
    assert await amanager.export_session("src", path, format=fmt) == len(ITEMS)
    copy = await amanager.import_session(path, name="copy")
    exact(await copy.get_messages(), ITEMS)
    assert [e.timestamp for e in await copy.get_entries()] == [
        e.timestamp for e in await s.get_entries()
    ]
    store_path = tmp_path / "store.jsonl"
    await amanager.export_store(store_path)
    text = store_path.read_text()
    assert '"coda_session":3' in text


async def test_old_exports_still_import(amanager: AsyncSessionManager, tmp_path: Path) -> None:
    """A version 2 file holds the messages themselves, each with the timestamp the
    library then added: they import as they read before, filed under it."""
    path = tmp_path / "v2.jsonl"
    lines = [
        {
            "coda_session": 2,
            "kind": "session",
            "escaped_strings": True,
            "id": "x",
            "name": "old",
            "created_at": TS,
            "updated_at": TS,
            "metadata": {},
        },
        {"role": "user", "content": "hi", "timestamp": TS, "model": "m"},
        {"coda_session": 2, "kind": "end", "message_count": 1},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    s = await amanager.import_session(path)
    assert await s.get_messages() == [
        {"role": "user", "content": "hi", "timestamp": TS, "model": "m"}
    ]
    assert (await s.get_entries())[0].timestamp == TS


async def test_branches_pops_and_search_hits_are_exact(amanager: AsyncSessionManager) -> None:
    s = await amanager.create_session("tree")
    for item in ITEMS:
        s.add_message(item)
    await amanager.save_session(s)
    branch = await amanager.fork_session("tree", 7, name="branch")
    exact(await branch.get_messages(), ITEMS[:7])
    branch.add_message({"type": "function_call_output", "call_id": "z", "output": "new"})
    await amanager.save_session(branch)
    exact(
        await branch.pop_messages(2),
        [ITEMS[6], {"type": "function_call_output", "call_id": "z", "output": "new"}],
    )
    exact(await branch.get_messages(), ITEMS[:6])
    popped = await s.pop_messages(len(ITEMS))
    exact(popped, ITEMS)
    # search finds the text parts of items without role or content, and shows them exactly
    s.set_messages(ITEMS)
    await amanager.save_session(s)
    for word, index in (("quokka", 5), ("wombats", 6), ("Paris", 4), ("zebra", 0)):
        hits = (await amanager.search(word, session="tree")).hits
        assert [h.message for h in hits] == [ITEMS[index]], word
        assert json.dumps(hits[0].message) == json.dumps(ITEMS[index])
    # an item without a role is filed under its type for the role: filter
    hits = (await amanager.search("quokka", session="tree", role="function_call_output")).hits
    assert [h.message for h in hits] == [ITEMS[5]]


async def test_models_and_dataclasses_stored_as_their_dicts(
    amanager: AsyncSessionManager,
) -> None:
    class Item(BaseModel):
        type: str
        call_id: str
        output: str = "default"
        note: str | None = None

    @dataclasses.dataclass
    class Msg:
        role: str
        content: str
        when: datetime | None = None

    s = await amanager.create_session("models")
    s.add_message(Item(type="function_call_output", call_id="c", note=None))
    s.add_message(Msg("user", "hi"))
    s.add_message(MessageModel(role="user", content="typed"))
    await amanager.save_session(s)
    exact(
        await s.get_messages(),
        [
            # exclude_unset: the default ``output`` was never set, ``note`` was
            {"type": "function_call_output", "call_id": "c", "note": None},
            {"role": "user", "content": "hi", "when": None},
            {"role": "user", "content": "typed"},
        ],
    )
    with pytest.raises(InvalidMessageError, match="datetime is not JSON"):
        s.add_message(Msg("user", "hi", datetime(2024, 1, 1)))


@pytest.mark.parametrize(
    ("message", "match"),
    [
        ({"content": "no role"}, "no 'role'"),
        ({"type": "", "output": "x"}, "'type' must not be empty"),
        ({"type": "  "}, "'type' must not be empty"),
        ({"type": 3}, "'type' must be a non-empty string"),
        ({"type": "a\x00b"}, "NUL"),
        ({"role": None, "type": "function_call"}, "'role' must be a non-empty string"),
        ({"role": ""}, "'role' must not be empty"),
        ({"role": "user", "timestamp": 1704067200}, "ISO-8601"),
        ({"type": "x", "timestamp": "yesterday"}, "ISO-8601"),
        ({"type": "x", "v": float("nan")}, "NaN"),
        ({"type": "x", 1: "non-string key"}, "not a string"),
        ({"type": "x", "v": {1, 2}}, "set is not JSON"),
        ("just text", "must be a dict"),
    ],
)
async def test_refusals_change_nothing(
    amanager: AsyncSessionManager, message: Any, match: str
) -> None:
    s = await amanager.create_session("bad")
    s.add_message({"type": "ok"})
    with pytest.raises(InvalidMessageError, match=match):
        s.add_message(message)
    with pytest.raises(InvalidMessageError, match=match):
        s.set_messages([{"role": "user", "content": "fine"}, message])
    assert await s.get_messages() == [{"type": "ok"}]


async def test_rows_of_earlier_versions_read_as_before(store: Store) -> None:
    """A row stored before messages were stored exactly has no key layout: it reads with
    the timestamp key earlier versions added, extra keys after it."""
    if store.database is None and store.url is None:
        pytest.skip("raw rows: the SQL backends only")
    async with store.async_manager() as m:
        s = await m.create_session("old")
        s.add_message({"role": "user", "content": "new"})
        await m.save_session(s)
        sid = s.id
    store.execute(
        "INSERT INTO messages (session_id, role, content, timestamp, metadata, size_bytes, "
        "char_count, root_id) VALUES (?, 'assistant', 'legacy', ?, ?, 40, 20, ?)",
        sid,
        TS,
        '{"model":"m1"}',
        sid,
    )
    store.execute(
        "UPDATE sessions SET message_count = 2, last_message_id = "
        "(SELECT MAX(id) FROM messages) WHERE id = ?",
        sid,
    )
    async with store.async_manager() as m:
        s = await m.load_session("old")
        assert await s.get_messages() == [
            {"role": "user", "content": "new"},
            {"role": "assistant", "content": "legacy", "timestamp": TS, "model": "m1"},
        ]
        assert (await s.get_entries())[1].timestamp == TS
    rows = store.execute("SELECT role, content FROM messages ORDER BY id")
    assert rows == [("user", "new"), ("assistant", "legacy")]


def test_the_stored_form() -> None:
    """What the raw SQL of the README shows: role and content columns as before; an item
    without a role has its type in the role column; the key layout leads the metadata."""
    plain = encode_message({"role": "user", "content": "hi"})
    assert (plain.role, plain.content, plain.extra) == ("user", "hi", ITEM_PREFIX + 'rc"}')
    call = encode_message({"type": "function_call", "call_id": "c", "arguments": "{}"})
    assert call.role == "function_call" and call.content is None
    assert call.extra == ITEM_PREFIX + '..."' + ',"type":"function_call","call_id":"c",' + (
        '"arguments":"{}"}'
    )
    # sizes as before: role + content + the filed time + the other keys' JSON (a given
    # timestamp counted once, as that time)
    assert plain.size == len("user") + len("hi") + len(plain.timestamp)
    given = encode_message({"role": "user", "content": "hi", "timestamp": TS, "k": 1})
    assert given.size == len("user") + len("hi") + len(TS) + len('{"k":1}')
    assert given.chars == len("user") + len("hi") + len('{"k":1}')
    assert call.size == len(call.timestamp) + len('{"type":"function_call","call_id":"c",') + (
        len('"arguments":"{}"}')
    )


class _OlderStore(SessionStorage):
    """A user's storage written for an earlier version: it keeps names, messages and
    metadata only (no ``message_timestamps``)."""

    def __init__(self) -> None:
        self.kept: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {}

    def save(self, session: SessionData) -> None:
        self.kept[session.name] = (json.loads(json.dumps(session.messages)), session.metadata)

    def load(self, name: str) -> SessionData | None:
        if name not in self.kept:
            return None
        messages, metadata = self.kept[name]
        return SessionData(name, messages=messages, metadata=metadata)

    def delete(self, name: str) -> None:
        self.kept.pop(name, None)

    def list_all(self) -> list[SessionInfo]:
        return [self.load(name).info() for name in self.kept]  # type: ignore[union-attr]


def test_a_storage_without_the_filed_times() -> None:
    """Messages come back exactly; each is filed under its own timestamp key, else under
    1970-01-01 UTC, the same at every load (never the time of the load)."""
    storage = _OlderStore()
    with SessionManager({"session": {"backend": "memory"}}, storage=storage) as m:
        s = m.create_session("older")
        s.add_message({"type": "reasoning", "summary": []})
        s.add_message({"role": "user", "content": "x", "timestamp": TS})
        m.save_session(s)
    with SessionManager({"session": {"backend": "memory"}}, storage=storage) as m:
        entries = m.load_session("older").get_entries()
        assert [e.message for e in entries] == [
            {"type": "reasoning", "summary": []},
            {"role": "user", "content": "x", "timestamp": TS},
        ]
        assert [e.timestamp for e in entries] == [UNKNOWN_TIME.isoformat(), TS]
        info = m.get_session_info("older")
        assert info is not None and info.size_bytes == sum(
            encode_message(e.message, at=e.timestamp).size for e in entries
        )


def test_downgrading_writes_the_form_older_versions_read(tmp_path: Path) -> None:
    """0014's downgrade: the rows stored exactly become rows as earlier versions wrote
    them (what cannot be said there reads as those versions show every message)."""
    storage = tmp_path / "down"
    config = {"session": {"storage_path": str(storage)}}
    given: list[dict[str, Any]] = [
        {"role": "user", "content": "plain"},
        {"model": "m", "content": {"b": 1}, "role": "tool", "timestamp": TS},
        {"type": "function_call_output", "call_id": "c", "output": "o"},
    ]
    with SessionManager(config) as m:
        s = m.create_session("s")
        s.set_messages(given)
        m.save_session(s)
        filed = [e.timestamp for e in s.get_entries()]
    down = alembic("downgrade", "0013", storage=storage)
    assert down.returncode == 0, down.stderr
    conn = sqlite3.connect(storage / "sessions.db")
    try:
        rows = conn.execute(
            "SELECT role, content, timestamp, metadata FROM messages ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    assert rows == [
        ("user", "plain", filed[0], None),
        ("tool", None, TS, '{"model":"m","content":{"b":1}}'),
        (
            "function_call_output",
            None,
            filed[2],
            '{"type":"function_call_output","call_id":"c","output":"o"}',
        ),
    ]
    up = alembic("upgrade", "head", storage=storage)
    assert up.returncode == 0, up.stderr
    with SessionManager(config) as m:
        assert m.load_session("s").get_messages() == [
            {"role": "user", "content": "plain", "timestamp": filed[0]},
            {"role": "tool", "content": {"b": 1}, "timestamp": TS, "model": "m"},
            {
                "role": "function_call_output",
                "content": None,
                "timestamp": filed[2],
                "type": "function_call_output",
                "call_id": "c",
                "output": "o",
            },
        ]

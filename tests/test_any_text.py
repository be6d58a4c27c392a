"""Any text a tool returns is stored intact, on every backend.

NUL characters, lone surrogates (high and low, alone and side by side), the stored form's
escape character ``␛`` and strings that look like its codes, in string and JSON contents,
extra keys and session metadata (keys and values): saved, read back by a new manager, branched,
truncated, exported and imported, always exactly as given. The SQLite file holds no NUL and
no surrogate, only the documented form (``␛`` + four hex digits). NaN and infinities are
still refused, with a message that says why, and roles, timestamps and names still refuse
NUL and lone surrogates.
"""

from __future__ import annotations

import io
import json
import math
import sqlite3
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coda_session import (
    AsyncSessionManager,
    SessionManager,
)
from coda_session.codec import dumps_metadata, encode_message, measure_message, read_metadata
from coda_session.errors import InvalidMessageError
from coda_session.escaping import ESCAPE, escape, escape_json, unescape, unescape_json
from coda_session.migrate import HEAD_REVISION
from tests.support import BACKENDS, DictStorage, Store, alembic

SQLITE = ("sqlite", "sqlite-core")
TS = "2026-12-08T10:00:00.000000+00:00"

#: strings the stored form must keep exactly
ODD = [
    "a\x00b",
    "\x00",
    "\ud800",  # lone high surrogate
    "\udfff",  # lone low surrogate
    "ls: \udc80\udcff.txt",  # surrogateescape'd bytes
    "\ud83d\ude00",  # a high and a low surrogate side by side: two characters, no emoji
    "\U0001f600",  # the real emoji, for contrast
    ESCAPE,
    ESCAPE * 3,
    f"{ESCAPE}0000",
    f"{ESCAPE}241b",
    f"{ESCAPE}dc80{ESCAPE}d800",
    f"{ESCAPE}zzzz {ESCAPE}",
    f"\x00{ESCAPE}0000\udc80{ESCAPE}",
    "\\u0000 and \\udc80, spelled out",
    "plain é ✓",
    "",
]
BIG = ("pdf text \x00 \udc80 " + ESCAPE + " ") * 200  # compressible: stored compressed


def odd_messages() -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "tool", "content": text, "timestamp": TS} for text in ODD
    ]
    messages += [
        {"role": "tool", "content": [{"type": "text", "text": t} for t in ODD], "timestamp": TS},
        {"role": "tool", "content": {t: t for t in ODD}, "timestamp": TS},
        {"role": "tool", "content": "x", "timestamp": TS, **{f"k{t}": [t, {t: t}] for t in ODD}},
        {"role": "tool", "content": {"n": [ODD, None, 1.5]}, "timestamp": TS, "extra": ODD},
        {"role": "tool", "content": BIG, "timestamp": TS},
        {"role": "tool", "content": [BIG, {BIG[:50]: BIG}], "timestamp": TS, "k\x00": BIG},
    ]
    return messages


ODD_METADATA: dict[str, Any] = {
    **{f"m{t}": t for t in ODD},
    "nested": {t: [t] for t in ODD},
}


def _json(value: Any) -> str:
    """JSON as the codec writes it (revision 0006's code too)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _no_unstorable(text: str) -> bool:
    return "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


async def _write(m: AsyncSessionManager, name: str = "odd") -> list[dict[str, Any]]:
    messages = odd_messages()
    s = await m.create_session(name)
    for message in messages:
        s.add_message(message)
    s.update_metadata(ODD_METADATA)
    assert await s.get_messages() == messages  # before the save, from the cache
    await m.save_session(s)
    assert await s.get_messages() == messages
    return messages


@pytest.mark.parametrize("compress", [False, True])
async def test_saved_and_reopened_exactly(store: Store, compress: bool) -> None:
    async with store.async_manager(compress_messages=compress, autosave_interval=0) as m:
        messages = await _write(m)
    async with store.async_manager() as m:
        s = await m.load_session("odd")
        got = await s.get_messages()
        assert got == messages
        # character for character, not only ==: the same code points in the same order
        assert [list(str(x["content"])) for x in got] == [list(str(x["content"])) for x in messages]
        assert s.metadata == ODD_METADATA
        info = await m.get_session_info("odd")
        assert info is not None and info.metadata == ODD_METADATA
        assert info.size_bytes == sum(measure_message(x)[0] for x in messages)
        assert [i.metadata for i in await m.list_sessions() if i.name == "odd"] == [ODD_METADATA]
        assert await s.get_messages(limit=3) == messages[-3:]
    with store.sync_manager() as sm:
        ss = sm.load_session("odd")
        assert ss.get_messages() == messages
        assert ss.metadata == ODD_METADATA


async def test_branch_and_truncate(store: Store) -> None:
    async with store.async_manager(autosave_interval=0) as m:
        messages = await _write(m)
        branch = await m.create_session("odd-branch", branch_from="odd")
        assert await branch.get_messages() == messages
        assert branch.metadata == ODD_METADATA
        branch.truncate_messages(4)
        branch.add_message({"role": "user", "content": "\x00tail\udc80", "timestamp": TS})
        await m.save_session(branch)
        kept = [*messages[-4:], {"role": "user", "content": "\x00tail\udc80", "timestamp": TS}]
    async with store.async_manager() as m:
        again = await m.load_session("odd-branch")
        assert await again.get_messages() == kept
        info = await m.get_session_info("odd-branch")
        assert info is not None and info.message_count == 5
        assert info.size_bytes == sum(measure_message(x)[0] for x in kept)
        assert await (await m.load_session("odd")).get_messages() == messages  # untouched


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
async def test_export_import_round_trip(store: Store, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"odd.{fmt}"
    async with store.async_manager(autosave_interval=0) as m:
        messages = await _write(m)
        assert await m.export_session("odd", path, format=fmt) == len(messages)
        text = path.read_bytes().decode("utf-8")  # strict: valid UTF-8
        assert _no_unstorable(text)
        if fmt == "jsonl":
            lines = [json.loads(line) for line in text.splitlines()]
            assert lines[0]["escaped_strings"] is True
            # strings that need nothing are written as they are
            # (format version 3: each line the filed time and the message)
            messages_written = [line.get("message") for line in lines]
            assert {"role": "tool", "content": "plain é ✓", "timestamp": TS} in messages_written
            assert {"role": "tool", "content": "a␛0000b", "timestamp": TS} in messages_written
        copy = await m.import_session(path, name="odd-copy")
        assert copy.name == "odd-copy"
        assert await (await m.load_session("odd-copy")).get_messages() == messages
        assert (await m.load_session("odd-copy")).metadata == ODD_METADATA
        buf = io.StringIO()
        await m.export_store(buf)
    async with AsyncSessionManager({"session": {"backend": "memory"}}) as other:
        assert sorted(await other.import_store(io.StringIO(buf.getvalue()))) == [
            "odd",
            "odd-copy",
        ]
        assert await (await other.load_session("odd")).get_messages() == messages
        assert (await other.load_session("odd")).metadata == ODD_METADATA


async def test_import_of_plain_json_escapes(tmp_path: Path) -> None:
    """A file without the header flag (an older export, another tool) is plain JSON: its
    ``\\u0000`` and ``\\udc80`` escapes are the characters, and a ``␛`` is a ``␛``."""
    path = tmp_path / "plain.jsonl"
    lines = [
        {"coda_session": 1, "kind": "session", "name": "plain", "metadata": {"k": "␛0000"}},
        {"role": "user", "content": "a\x00b\udc80 ␛0000", "timestamp": TS},
        {"coda_session": 1, "kind": "end", "message_count": 1},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="ascii")
    async with AsyncSessionManager({"session": {"backend": "memory"}}) as m:
        s = await m.import_session(path)
        assert await s.get_messages() == [lines[1]]
        assert s.metadata == {"k": "␛0000"}


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b.id in SQLITE], indirect=True)
@pytest.mark.parametrize("compress", [False, True])
async def test_stored_sqlite_text_is_the_documented_form(store: Store, compress: bool) -> None:
    assert store.database is not None
    async with store.async_manager(compress_messages=compress, autosave_interval=0) as m:
        messages = await _write(m)
    conn = sqlite3.connect(store.database)
    conn.text_factory = bytes  # the raw stored bytes: they must be UTF-8 without NUL
    try:
        rows = conn.execute(
            "SELECT content, metadata, content_zlib FROM messages ORDER BY id"
        ).fetchall()
        sessions = conn.execute("SELECT name, metadata FROM sessions").fetchall()
    finally:
        conn.close()
    assert len(rows) == len(messages)
    stored: list[str] = []
    for content, extra, packed in rows:
        for value in (content, extra):
            if value is not None:
                stored.append(value.decode("utf-8"))
        if packed is not None:
            assert compress
            stored.append(zlib.decompress(packed)[1:].decode("utf-8"))
    stored += [meta.decode("utf-8") for _, meta in sessions if meta is not None]
    assert all(_no_unstorable(text) for text in stored)
    for message, (content, _, packed) in zip(messages, rows, strict=True):
        if type(message["content"]) is str and packed is None:
            # a plain text content: exactly escape(), and unchanged when nothing needs it
            assert content.decode() == escape(message["content"])
    plain = {content.decode() for content, _, _ in rows if content is not None}
    assert {"a␛0000b", "␛d800", "ls: ␛dc80␛dcff.txt", "␛d83d␛de00", "␛241b"} <= plain
    assert {"plain é ✓", "\U0001f600", "\\u0000 and \\udc80, spelled out"} <= plain
    assert f"{ESCAPE}241b0000" in plain  # "␛0000" as given: its ␛ is escaped
    meta = [json.loads(m) for _, m in sessions if m is not None]
    assert meta == [escape_json(ODD_METADATA)]
    assert meta[0]["m\u241b241b0000"] == "\u241b241b0000"


async def test_custom_storage_gets_the_original_strings() -> None:
    storage = DictStorage()
    async with AsyncSessionManager({"session": {}}, storage=storage) as m:
        messages = await _write(m)
    assert storage.seen == messages  # the originals, never the stored form
    assert storage.data["odd"].metadata == ODD_METADATA
    assert any(x["content"] == "a\x00b" for x in storage.seen)
    # what the storage gives back (here: a user's own edit, in the original form) reads back
    data = storage.data["odd"]
    data.messages.append({"role": "user", "content": "␛0000\x00", "timestamp": TS})
    data.message_ids.append(data.message_ids[-1] + 1)
    data.last_message_id = data.message_ids[-1]
    data.metadata["new\udc80"] = "\x00"
    async with AsyncSessionManager({"session": {}}, storage=storage) as m:
        s = await m.load_session("odd")
        got = await s.get_messages()
        assert got == [*messages, {"role": "user", "content": "␛0000\x00", "timestamp": TS}]
        assert s.metadata == {**ODD_METADATA, "new\udc80": "\x00"}
        info = await m.get_session_info("odd")
        assert info is not None and info.size_bytes == sum(measure_message(x)[0] for x in got)


# -- what is still refused ---------------------------------------------------------------

NAN_CASES = [
    pytest.param({"role": "user", "content": math.nan}, id="content"),
    pytest.param({"role": "user", "content": [1, {"x": math.inf}]}, id="nested"),
    pytest.param({"role": "user", "content": "x", "score": -math.inf}, id="extra"),
]


@pytest.mark.parametrize("message", NAN_CASES)
async def test_nan_and_infinities_are_refused_saying_why(
    store: Store, message: dict[str, Any]
) -> None:
    async with store.async_manager(autosave_interval=0) as m:
        s = await m.create_session("nan")
        with pytest.raises(InvalidMessageError, match="NaN and infinities are not JSON"):
            s.add_message(message)
        with pytest.raises(InvalidMessageError, match="NaN and infinities are not JSON"):
            s.update_metadata({"k": {"v": [math.nan]}})
        await m.save_session(s)
    async with store.async_manager() as m:
        s = await m.load_session("nan")
        assert await s.get_messages() == [] and s.metadata == {}


IDENTIFIER_CASES = [
    pytest.param({"role": "a\x00", "content": "x"}, "NUL characters are not allowed", id="nul"),
    pytest.param({"role": "\udc80", "content": "x"}, "lone surrogate characters", id="surr"),
    pytest.param({"role": "u", "content": "x", "timestamp": TS + "\udc80"}, "ISO", id="ts"),
]


@pytest.mark.parametrize(("message", "why"), IDENTIFIER_CASES)
async def test_identifiers_still_refuse_nul_and_surrogates(
    store: Store, message: dict[str, Any], why: str
) -> None:
    async with store.async_manager(autosave_interval=0) as m:
        s = await m.create_session("ids")
        with pytest.raises(InvalidMessageError, match=why):
            s.add_message(message)
        for name in ("a\x00b", "\udc80"):
            with pytest.raises(InvalidMessageError):
                await m.create_session(name)
        assert s.message_count == 0


# -- the encoding itself -----------------------------------------------------------------

ANY_TEXT = st.text(st.characters(codec=None))  # every code point, surrogates included
LOOKALIKE = st.text(st.sampled_from(["\x00", "\ud800", "\udc80", ESCAPE, "0", "d", "8", "a"]))
TEXTS = ANY_TEXT | LOOKALIKE
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXTS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXTS, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=500)
@given(TEXTS)
def test_escape_is_reversible_and_storable(text: str) -> None:
    stored = escape(text)
    assert unescape(stored) == text
    assert _no_unstorable(stored)
    stored.encode("utf-8")  # storable as UTF-8 text
    if "\x00" not in text and ESCAPE not in text and _no_unstorable(text):
        assert stored is text or stored == text  # ordinary text: unchanged


@settings(max_examples=300)
@given(JSON_VALUES, st.dictionaries(TEXTS, JSON_VALUES, max_size=3))
def test_messages_and_metadata_round_trip(content: Any, extras: dict[str, Any]) -> None:
    extras = {k: v for k, v in extras.items() if k not in ("role", "content", "timestamp")}
    message = {"role": "tool", "content": content, "timestamp": TS, **extras}
    for compress in (False, True):
        record = encode_message(message, compress=compress)
        assert record.to_dict() == message
        assert (record.size, record.chars) == measure_message(message)
        for stored in (record.content, record.extra):
            assert stored is None or _no_unstorable(stored)
    text = dumps_metadata(extras)
    assert _no_unstorable(text)
    assert read_metadata(text) == extras
    assert unescape_json(json.loads(json.dumps(escape_json(extras)))) == extras


def test_sizes_count_a_lone_surrogate_as_three_bytes() -> None:
    message = {"role": "tool", "content": "\udc80\x00" + ESCAPE, "timestamp": TS}
    record = encode_message(message)
    assert record.content == "␛dc80␛0000␛241b"
    assert record.size == 4 + 3 + 1 + 3 + len(TS)  # as returned: surrogatepass UTF-8
    assert record.chars == 4 + 3


# -- databases written before the stored form (migration 0007) ---------------------------


def test_migration_0007_escapes_existing_escape_characters(tmp_path: Path) -> None:
    storage = tmp_path / "m"
    assert alembic("upgrade", "0006", storage=storage).returncode == 0
    db = storage / "sessions.db"
    old_text = f"{ESCAPE}0000 is how 0007 writes a NUL; this one is literal"
    old_json = {"k␛": [f"{ESCAPE}dc80", "plain"]}
    rows = [  # (content, metadata, content_zlib) as revision 0006's code wrote them
        (old_text, None, None),
        (None, _json({"content": old_json, "x␛241b": 1}), None),
        (None, None, zlib.compress(b"t" + (old_text * 50).encode(), 6)),
        (None, '{"n":2}', zlib.compress(b"j" + _json(old_json).encode(), 6)),
        ("untouched é", '{"plain":true}', None),
    ]
    want: list[dict[str, Any]] = [
        {"role": "user", "content": old_text, "timestamp": TS},
        {"role": "user", "content": old_json, "timestamp": TS, "x␛241b": 1},
        {"role": "user", "content": old_text * 50, "timestamp": TS},
        {"role": "user", "content": old_json, "timestamp": TS, "n": 2},
        {"role": "user", "content": "untouched é", "timestamp": TS, "plain": True},
    ]
    sizes = [measure_message(x) for x in want]
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO sessions (id, name, created_at, updated_at, metadata, message_count,"
        " size_bytes) VALUES ('s1', 'old', '2026-12-01 00:00:00.000000',"
        " '2026-12-01 00:00:00.000000', ?, 5, ?)",
        (_json({"m␛": "␛0000"}), sum(s for s, _ in sizes)),
    )
    for (content, meta, packed), (size, chars) in zip(rows, sizes, strict=True):
        conn.execute(
            "INSERT INTO messages (session_id, role, content, timestamp, metadata,"
            " content_zlib, size_bytes, char_count) VALUES ('s1', 'user', ?, ?, ?, ?, ?, ?)",
            (content, TS, meta, packed, size, chars),
        )
    conn.commit()
    before = conn.execute("SELECT * FROM messages ORDER BY id").fetchall()
    conn.close()

    assert alembic("upgrade", "head", storage=storage).returncode == 0
    conn = sqlite3.connect(db)
    after = conn.execute("SELECT content, size_bytes, char_count FROM messages ORDER BY id")
    got = after.fetchall()
    assert (
        got[0][0]
        == escape(old_text)
        == f"{ESCAPE}241b0000 is how 0007 writes a NUL; " + ("this one is literal")
    )
    assert got[4][0] == "untouched é"
    assert [(s, c) for _, s, c in got] == sizes  # sizes are of the text as returned
    assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD_REVISION,)]
    conn.close()
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        s = m.load_session("old")
        assert s.get_messages() == want
        assert s.metadata == {"m␛": "␛0000"}
        s.add_message({"role": "user", "content": "new ␛", "timestamp": TS})
        m.save_session(s)
        added = {"role": "user", "content": "new ␛", "timestamp": TS}
        assert m.load_session("old").get_messages() == [*want, added]

    # downgrade: the rows read as 0006's code reads them again (their text as before)
    assert alembic("downgrade", "0006", storage=storage).returncode == 0
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT * FROM messages ORDER BY id").fetchall()[:5] == before
    assert json.loads(
        conn.execute("SELECT metadata FROM sessions WHERE id = 's1'").fetchone()[0]
    ) == {"m␛": "␛0000"}
    conn.close()


def test_downgrade_refuses_what_0006_cannot_store(tmp_path: Path) -> None:
    storage = tmp_path / "d"
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        s = m.create_session("nul")
        s.add_message({"role": "user", "content": "a\x00b ␛", "timestamp": TS})
        m.save_session(s)
    conn = sqlite3.connect(storage / "sessions.db")
    before = conn.execute("SELECT * FROM messages").fetchall()
    conn.close()
    run = alembic("downgrade", "0006", storage=storage)
    assert run.returncode != 0
    assert "cannot downgrade below revision 0007" in run.stderr
    assert "NUL character or a lone surrogate" in run.stderr
    conn = sqlite3.connect(storage / "sessions.db")
    # one transaction: nothing changed, not even the later revisions' steps down
    assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD_REVISION,)]
    assert conn.execute("SELECT * FROM messages").fetchall() == before
    conn.close()
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        assert m.load_session("nul").get_messages()[0]["content"] == "a\x00b ␛"

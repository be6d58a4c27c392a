"""One size formula on every backend, kept per message row; saves that leave metadata alone.

``size_bytes`` is the UTF-8 size of the messages as ``get_messages()`` returns them,
uncompressed: role + content (a string as is, any other content as its JSON) + timestamp
+ the JSON of the extra keys. The oracle below spells that out independently of the
library.
"""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from coda_session import (
    AsyncSessionManager,
    SessionTooLargeError,
)
from coda_session.codec import encode_message
from coda_session.repository import open_repository
from coda_session.repository.base import SaveRequest
from coda_session.repository.storage_adapter import StorageAdapter
from coda_session.timeutil import utcnow
from tests.support import DictStorage, Store

ROOT = Path(__file__).resolve().parent.parent
TS = "2026-11-24T21:58:54.123456+00:00"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def expected_size(message: dict[str, Any]) -> int:
    content = message["content"]
    extras = {k: v for k, v in message.items() if k not in ("role", "content", "timestamp")}
    text = content if isinstance(content, str) else _json(content)
    size = len(message["role"].encode()) + _utf8(text) + len(message["timestamp"].encode())
    return size + (_utf8(_json(extras)) if extras else 0)


def _utf8(text: str) -> int:
    # a lone surrogate counts the 3 bytes UTF-8 with surrogatepass gives it
    return len(text.encode("utf-8", "surrogatepass"))


def expected_chars(message: dict[str, Any]) -> int:
    content = message["content"]
    extras = {k: v for k, v in message.items() if k not in ("role", "content", "timestamp")}
    if isinstance(content, str):
        return len(message["role"]) + len(content) + (len(_json(extras)) if extras else 0)
    return len(message["role"]) + len(_json({**extras, "content": content}))


MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "héllo wörld ✓", "timestamp": TS},
    {"role": "assistant", "content": "long é text " * 400, "timestamp": TS, "model": "m1"},
    {"role": "tool", "content": [{"type": "text", "text": "part ü " * 300}], "timestamp": TS},
    {"role": "tool", "content": {"k": [1, 2.5, None, True]}, "timestamp": TS, "name": "n"},
    {
        "role": "assistant",
        "content": None,
        "timestamp": TS,
        "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
    },
]


#: messages whose strings the stored form escapes (NUL, lone surrogates, ␛): measured as
#: returned, the same on every backend
ODD_MESSAGES: list[dict[str, Any]] = [
    {"role": "tool", "content": "a\x00b \udc80 \u241b", "timestamp": TS},
    {"role": "tool", "content": "pdf \x00\ud800 ␛0000 " * 200, "timestamp": TS, "k\x00": "\udfff"},
    {"role": "tool", "content": [{"text": "\x00\udc80" * 300}], "timestamp": TS, "n": "␛"},
    {"role": "tool", "content": {"\ud83d\ude00": None}, "timestamp": TS},
]


def _managers(store: Store, **overrides: Any) -> AsyncSessionManager:
    return store.async_manager(**overrides)


# -- A: one size formula ---------------------------------------------------------------


async def test_compressible_message_past_the_limit_is_refused(store: Store) -> None:
    """2 MB that compress to a few KB still count 2 MB against a 1 MB limit."""
    big = {"role": "user", "content": "a" * 2_000_000, "timestamp": TS}
    limits = {"max_session_size": 1, "compress_messages": True, "autosave_interval": 0}
    async with _managers(store, **limits) as m:
        s = await m.create_session("big")
        with pytest.raises(SessionTooLargeError) as caught:
            s.add_message(big)
        assert caught.value.size == expected_size(big) and caught.value.limit == 1_000_000
        # the save checks the stored total too: a second object over the same session
        s.add_message({"role": "user", "content": "b" * 600_000, "timestamp": TS})
        other = await m.load_session("big")
        other.add_message({"role": "user", "content": "c" * 600_000, "timestamp": TS})
        await m.save_session(other)
        with pytest.raises(SessionTooLargeError):
            await m.save_session(s)
        s.discard_changes()  # the refused changes are dropped on purpose
        info = await m.get_session_info("big")
        assert info is not None and info.message_count == 1


async def test_compressible_message_past_the_limit_custom_storage() -> None:
    big = {"role": "user", "content": "a" * 2_000_000, "timestamp": TS}
    config = {"session": {"max_session_size": 1, "compress_messages": True}}
    async with AsyncSessionManager(config, storage=DictStorage()) as m:
        s = await m.create_session("big")
        with pytest.raises(SessionTooLargeError):
            s.add_message(big)


async def _stored_size(
    m: AsyncSessionManager, messages: list[dict[str, Any]]
) -> tuple[int, int, int]:
    s = await m.create_session("same")
    for message in messages:
        s.add_message(message)
    await m.save_session(s)
    info = await m.get_session_info("same")
    assert info is not None
    assert (await (await m.load_session("same")).get_messages()) == messages
    return info.size_bytes, s.info().size_bytes, await s.get_token_count()


@pytest.mark.parametrize("messages", [MESSAGES, ODD_MESSAGES], ids=["plain", "odd-text"])
@pytest.mark.parametrize("compress", [True, False])
async def test_size_is_the_same_on_every_backend(
    store: Store, compress: bool, messages: list[dict[str, Any]]
) -> None:
    want = sum(expected_size(x) for x in messages)
    async with _managers(store, compress_messages=compress) as m:
        size, shown, tokens = await _stored_size(m, messages)
        assert (size, shown) == (want, want)
    config = {"session": {"compress_messages": compress}}
    async with AsyncSessionManager(config, storage=DictStorage()) as m:
        assert await _stored_size(m, messages) == (want, want, tokens)
    async with AsyncSessionManager({"session": {"backend": "memory"}}) as m:
        assert await _stored_size(m, messages) == (want, want, tokens)


def test_codec_computes_size_and_characters_once() -> None:
    for message in MESSAGES + ODD_MESSAGES:
        for compress in (False, True):
            record = encode_message(message, compress=compress)
            assert record.size == expected_size(message), message["role"]
            assert record.chars == expected_chars(message), message["role"]
            assert (record.byte_size(), record.text_length()) == (record.size, record.chars)
    assert encode_message(MESSAGES[1], compress=True).zcontent is not None


async def test_truncate_adjusts_size_exactly(store: Store) -> None:
    async with _managers(store, compress_messages=True) as m:
        s = await m.create_session("cut")
        for message in MESSAGES:
            s.add_message(message)
        await m.save_session(s)
        for keep in (3, 1, 0):
            s.truncate_messages(keep)
            await m.save_session(s)
            want = sum(expected_size(x) for x in MESSAGES[len(MESSAGES) - keep :]) if keep else 0
            info = await m.get_session_info("cut")
            assert info is not None and (info.size_bytes, info.message_count) == (want, keep)
            assert s.info().size_bytes == want


async def test_token_count_of_compressed_contents(store: Store) -> None:
    chars = sum(expected_chars(x) for x in MESSAGES)
    want = math.ceil(chars / 4) + 4 * len(MESSAGES)
    async with _managers(store, compress_messages=True, message_cache_size=1) as m:
        s = await m.create_session("tokens")
        for message in MESSAGES:
            s.add_message(message)
        assert await s.get_token_count() == want  # pending: counted by the object
        await m.save_session(s)
        assert await s.get_token_count() == want  # counted by the storage (cache of 1)
        loaded = await m.load_session("tokens")
        assert await loaded.get_token_count() == want


# -- A: migration 0005 backfills what the codec computes ----------------------------------


def _alembic(storage: Path, *args: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"storage_path={storage}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr


def _row_at_0004(message: dict[str, Any], compress: bool) -> tuple[Any, ...]:
    """A message row as revision 0004's code wrote it."""
    content = message["content"]
    extras = {k: v for k, v in message.items() if k not in ("role", "content", "timestamp")}
    if compress:
        if isinstance(content, str):
            packed = zlib.compress(b"t" + content.encode(), 6)
        else:
            packed = zlib.compress(b"j" + _json(content).encode(), 6)
        return (
            message["role"],
            None,
            message["timestamp"],
            _json(extras) if extras else None,
            packed,
        )
    if isinstance(content, str):
        return (
            message["role"],
            content,
            message["timestamp"],
            _json(extras) if extras else None,
            None,
        )
    return (
        message["role"],
        None,
        message["timestamp"],
        _json({**extras, "content": content}),
        None,
    )


def _old_size(row: tuple[Any, ...]) -> int:
    """sessions.size_bytes as 0002-0004 counted it (compressed bytes)."""
    role, content, ts, meta, packed = row
    return sum(len(v.encode()) for v in (role, content, ts, meta) if v is not None) + len(
        packed or b""
    )


def _messages_ddl(conn: sqlite3.Connection) -> str:
    return str(conn.execute("SELECT sql FROM sqlite_master WHERE name = 'messages'").fetchone()[0])


def test_migration_0005_backfills_sizes(tmp_path: Path) -> None:
    storage = tmp_path / "m"
    _alembic(storage, "upgrade", "0004")
    db = storage / "sessions.db"
    conn = sqlite3.connect(db)
    rows: list[tuple[Any, ...]] = []
    plan: list[tuple[str, dict[str, Any]]] = []
    # s3: more rows to decode in Python than one page of the migration holds
    many = [
        {"role": "tool", "content": [{"n": i}], "timestamp": TS, "name": f"t{i}"}
        for i in range(1100)
    ]
    for sid, batch in (("s1", MESSAGES), ("s2", MESSAGES[2:]), ("s3", many)):
        conn.execute(
            "INSERT INTO sessions (id, name, created_at, updated_at, metadata, message_count,"
            " size_bytes) VALUES (?, ?, ?, ?, '{}', 0, 0)",
            (sid, sid, "2026-11-24 00:00:00.000000", "2026-11-24 00:00:00.000000"),
        )
        for i, message in enumerate(batch * (3 if sid != "s3" else 2)):  # plain and compressed
            row = _row_at_0004(message, compress=i % 2 == 1)
            rows.append(row)
            plan.append((sid, message))
            conn.execute(
                "INSERT INTO messages (session_id, role, content, timestamp, metadata,"
                " content_zlib) VALUES (?, ?, ?, ?, ?, ?)",
                (sid, *row),
            )
    # counters as the old code kept them
    conn.execute(
        "UPDATE sessions SET message_count = (SELECT count(*) FROM messages m"
        " WHERE m.session_id = sessions.id)"
    )
    for sid in ("s1", "s2", "s3"):
        old = sum(_old_size(r) for (s, _), r in zip(plan, rows, strict=True) if s == sid)
        conn.execute("UPDATE sessions SET size_bytes = ? WHERE id = ?", (old, sid))
    conn.commit()
    conn.close()

    _alembic(storage, "upgrade", "head")
    conn = sqlite3.connect(db)
    assert "AUTOINCREMENT" in _messages_ddl(conn)  # columns added in place, no rebuild
    got = conn.execute("SELECT size_bytes, char_count FROM messages ORDER BY id").fetchall()
    want = [(encode_message(x).size, encode_message(x).chars) for _, x in plan]
    assert got == want
    assert got == [(expected_size(x), expected_chars(x)) for _, x in plan]
    totals = dict(conn.execute("SELECT id, size_bytes FROM sessions").fetchall())
    for sid in ("s1", "s2", "s3"):
        assert totals[sid] == sum(expected_size(x) for s, x in plan if s == sid)
    assert conn.execute("SELECT DISTINCT metadata_version FROM sessions").fetchall() == [(0,)]
    conn.close()

    # downgrade: the columns go and size_bytes means what 0004's code counts again
    _alembic(storage, "downgrade", "0004")
    conn = sqlite3.connect(db)
    assert "AUTOINCREMENT" in _messages_ddl(conn)  # the rebuild keeps it
    columns = {r[1] for r in conn.execute("PRAGMA table_info(messages)")}
    assert {"size_bytes", "char_count"}.isdisjoint(columns)
    assert "metadata_version" not in {r[1] for r in conn.execute("PRAGMA table_info(sessions)")}
    totals = dict(conn.execute("SELECT id, size_bytes FROM sessions").fetchall())
    for sid in ("s1", "s2", "s3"):
        old = sum(_old_size(r) for (s, _), r in zip(plan, rows, strict=True) if s == sid)
        assert totals[sid] == old
    conn.close()


# -- B: saves that leave metadata alone ----------------------------------------------------


async def _metadata_semantics(first: AsyncSessionManager, second: AsyncSessionManager) -> None:
    a = await first.create_session("meta")
    a.update_metadata({"k": 1, "big": list(range(100))})
    await first.save_session(a)
    b = await second.load_session("meta")
    assert b.metadata == {"k": 1, "big": list(range(100))}
    b.update_metadata({"other": 2})
    await second.save_session(b)
    a.add_message({"role": "user", "content": "hi", "timestamp": TS})
    await first.save_session(a)  # picks up the other writer's change
    assert a.metadata == {"k": 1, "big": list(range(100)), "other": 2}
    a.update_metadata({"k": 3})
    await first.save_session(a)
    b.add_message({"role": "user", "content": "again", "timestamp": TS})
    await second.save_session(b)
    assert b.metadata == {"k": 3, "big": list(range(100)), "other": 2}


async def test_another_writers_metadata_shows_after_the_next_save(store: Store) -> None:
    async with store.async_manager() as first, store.async_manager() as second:
        await _metadata_semantics(first, second)


async def test_another_writers_metadata_shows_custom_storage() -> None:
    storage = DictStorage()
    async with (
        AsyncSessionManager(None, storage=storage) as first,
        AsyncSessionManager(None, storage=storage) as second,
    ):
        await _metadata_semantics(first, second)


async def _save_results(repo: Any) -> None:
    from coda_session.models import SessionRecord

    now = utcnow()
    record = SessionRecord(
        id="sid-1",
        name="r",
        created_at=now,
        updated_at=now,
        metadata={"k": 1},
        message_count=0,
        size_bytes=0,
        last_message_id=0,
    )
    created = await repo.create_session(record)
    seen = created.metadata_version
    message = encode_message({"role": "user", "content": "x", "timestamp": TS})

    def request(**kw: Any) -> SaveRequest:
        return SaveRequest("sid-1", "r", utcnow(), [message], **kw)

    unchanged = await repo.save(request(metadata_version=seen))
    assert unchanged.metadata is None and unchanged.metadata_version == seen
    # this save's own patch: the caller knows the result, nothing is sent back
    patched = await repo.save(request(metadata_version=seen, metadata_patch={"p": 1}))
    assert patched.metadata is None and patched.metadata_version != seen
    # another writer (who saw the old version) changes it: the next save returns it
    other = await repo.save(
        request(metadata_version=patched.metadata_version, metadata_patch={"q": 2})
    )
    stale = await repo.save(request(metadata_version=patched.metadata_version))
    assert stale.metadata == {"k": 1, "p": 1, "q": 2}
    assert stale.metadata_version == other.metadata_version
    # a caller that does not say what it saw is always told
    told = await repo.save(request())
    assert told.metadata == {"k": 1, "p": 1, "q": 2}
    loaded = await repo.load_session(session_id="sid-1")
    assert loaded.metadata_version == other.metadata_version
    assert (await repo.save(request(metadata_version=loaded.metadata_version))).metadata is None


async def test_save_result_metadata_only_when_changed(store: Store) -> None:
    repo = open_repository(store.config, store.repository())
    await repo.open()
    try:
        await _save_results(repo)
    finally:
        await repo.aclose()


async def test_save_result_metadata_only_when_changed_custom_storage() -> None:
    await _save_results(StorageAdapter(DictStorage()))

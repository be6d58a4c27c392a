"""Damaged rows in a database the library wrote: typed errors naming the session and the
message, and the rest of the store stays readable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from coda_session import SessionError, SessionManager, StorageError
from tests.support import BACKENDS, Store

BIG = "a long message that compresses well. " * 100


def fill(store: Store) -> dict[str, int]:
    """Sessions 'a' (plain, compressed and extra-keyed messages) and 'b'; the ids of a's."""
    with store.sync_manager() as m:
        a = m.create_session("a")
        a.add_message({"role": "user", "content": "plain"})
        a.add_message({"role": "assistant", "content": BIG})
        a.add_message({"role": "assistant", "content": None, "model": "m", "tool_calls": []})
        a.update_metadata({"topic": "x"})
        m.save_session(a)
        b = m.create_session("b")
        b.add_message({"role": "user", "content": "fine"})
        m.save_session(b)
    ids = store.execute(
        "SELECT m.id, m.content_zlib IS NOT NULL, m.metadata IS NOT NULL FROM messages m "
        "JOIN sessions s ON s.id = m.session_id WHERE s.name = 'a' ORDER BY m.id"
    )
    plain, packed, extra = (row[0] for row in ids)
    assert ids[1][1] and ids[2][2]
    return {"plain": plain, "packed": packed, "extra": extra}


def corrupt(store: Store, sql: str, *args: Any) -> None:
    store.execute(sql, *args)


def damage_cases(cases: list[tuple[Any, ...]]) -> list[Any]:
    """Each case on both SQLite paths, and on PostgreSQL where its types allow the damage
    at all (its last element: PostgreSQL's statement, or None: a json or timestamptz
    column refuses such a value, so that damage cannot exist there)."""
    params: list[Any] = []
    for backend in BACKENDS:
        if backend.id not in ("sqlite", "sqlite-core", "postgresql"):
            continue
        for case in cases:
            *rest, sqlite_sql, pg_sql = case
            sql = pg_sql if backend.id == "postgresql" else sqlite_sql
            if sql is not None:
                params.append(
                    pytest.param(
                        backend.values[0],
                        *rest,
                        sql,
                        marks=backend.marks,
                        id=f"{backend.id}-{len(params)}",
                    )
                )
    return params


def assert_b_whole(m: SessionManager) -> None:
    assert [i.name for i in m.list_sessions()] == ["a", "b"]
    b = m.load_session("b")
    assert [x["content"] for x in b.get_messages()] == ["fine"]
    assert b.get_token_count() > 0


@pytest.mark.parametrize(
    ("backend", "which", "sql"),
    damage_cases(
        [
            (
                "packed",
                "UPDATE messages SET content_zlib = x'deadbeef' WHERE id = ?",
                "UPDATE messages SET content_zlib = '\\xdeadbeef'::bytea WHERE id = ?",
            ),
            (
                "packed",
                "UPDATE messages SET content_zlib = x'789c4b04' WHERE id = ?",
                "UPDATE messages SET content_zlib = '\\x789c4b04'::bytea WHERE id = ?",
            ),
            ("extra", "UPDATE messages SET metadata = '{not json' WHERE id = ?", None),
            ("plain", "UPDATE messages SET metadata = '{not json' WHERE id = ?", None),
            ("plain", *["UPDATE messages SET role = NULL WHERE id = ?"] * 2),
            ("plain", *["UPDATE messages SET timestamp = NULL WHERE id = ?"] * 2),
            ("plain", "UPDATE messages SET content = x'ff00' WHERE id = ?", None),
        ]
    ),
)
def test_a_damaged_message_raises_storage_error_naming_it(
    backend: str, which: str, sql: str, tmp_path: Path
) -> None:
    sql_store = Store(backend, tmp_path / "sessions")
    ids = fill(sql_store)
    corrupt(sql_store, sql, ids[which])
    with sql_store.sync_manager() as m:
        assert_b_whole(m)
        info = m.get_session_info("a")
        assert info is not None and info.message_count == 3
        a = m.load_session("a")  # the row and its tail load; decoding is per message
        with pytest.raises(StorageError) as caught:
            a.get_messages()
        assert "'a'" in str(caught.value) and str(ids[which]) in str(caught.value)
        if which == "plain":
            # messages after the damaged one still read
            assert len(a.get_messages(limit=2)) == 2
        with pytest.raises(StorageError, match="'a'"):
            m.export_session("a", str(tmp_path / "a.jsonl"))
        with pytest.raises(StorageError, match="'a'"):
            m.export_store(str(tmp_path / "all.jsonl"))
        m.export_session("b", str(tmp_path / "b.jsonl"))
        try:
            a.get_token_count()
        except StorageError as exc:
            assert "'a'" in str(exc)
        # the session stays writable and deletable
        a.add_message({"role": "user", "content": "after"})
        m.save_session(a)
        m.delete_session("a")
        assert [i.name for i in m.list_sessions()] == ["b"]


@pytest.mark.parametrize(
    ("backend", "field", "sql"),
    damage_cases(
        [
            ("created_at", "UPDATE sessions SET created_at = 'garbage' WHERE name = 'a'", None),
            ("updated_at", "UPDATE sessions SET updated_at = x'00ff' WHERE name = 'a'", None),
            (
                "created_at",
                *["UPDATE sessions SET created_at = NULL, updated_at = NULL WHERE name = 'a'"] * 2,
            ),
            ("metadata", "UPDATE sessions SET metadata = '{not json' WHERE name = 'a'", None),
            ("metadata", "UPDATE sessions SET metadata = x'ffff' WHERE name = 'a'", None),
        ]
    ),
)
def test_a_damaged_session_row_is_listed_with_fallbacks_and_logged(
    backend: str,
    field: str,
    sql: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sql_store = Store(backend, tmp_path / "sessions")
    fill(sql_store)
    corrupt(sql_store, sql)
    caplog.set_level(logging.WARNING, logger="coda_session")
    with sql_store.sync_manager() as m:
        assert sorted(i.name for i in m.list_sessions()) == ["a", "b"]
        info = m.get_session_info("a")
        assert info is not None and info.message_count == 3
        assert info.created_at.tzinfo is not None and info.updated_at.tzinfo is not None
        if field == "metadata":
            assert "_unreadable_metadata" in info.metadata
        a = m.load_session("a")
        assert len(a.get_messages()) == 3
        m.export_session("a", str(tmp_path / "a.jsonl"))
        with SessionManager({"session": {"backend": "memory"}}) as fresh:
            fresh.import_session(str(tmp_path / "a.jsonl"))
        a.update_metadata({"more": 1})
        m.save_session(a)
    logged = [r.getMessage() for r in caplog.records if r.name == "coda_session"]
    assert any(field in text and "unreadable" in text for text in logged), logged
    assert not any("not json" in text for text in logged)  # ids and fields, never content


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param(b.values[0], marks=b.marks, id=b.id)
        for b in BACKENDS
        if b.id in ("sqlite", "sqlite-core")
    ],
)
def test_damaged_schema_text_that_is_not_utf8_raises_storage_error(
    backend: str, tmp_path: Path
) -> None:
    """Found flipping bits (one database in a few hundred): SQLite quotes a damaged schema's
    text in its error ("malformed database schema ... near ..."), sqlite3 cannot decode
    that message and raised UnicodeDecodeError in place of its error, past the edge."""
    sql_store = Store(backend, tmp_path / "sessions")
    fill(sql_store)
    assert sql_store.database is not None
    conn = sqlite3.connect(sql_store.database)
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute(
        "UPDATE sqlite_master SET sql = CAST(? AS TEXT) WHERE name = 'adoption_notes'",
        (b"CREATE TABLE adoption_notes (id) \xf3\xa0",),  # a bit flipped in the schema
    )
    conn.commit()
    conn.close()
    with sql_store.sync_manager() as m:
        with pytest.raises(StorageError, match="corrupt or not a database") as caught:
            m.list_sessions()
        assert "restore it from a backup" in str(caught.value)
        assert isinstance(caught.value.__cause__, UnicodeDecodeError)

    async def use_async() -> None:
        am = sql_store.async_manager()
        try:
            with pytest.raises(StorageError, match="corrupt or not a database"):
                await am.load_session("a")
        finally:
            await am.close()

    asyncio.run(use_async())


def walk_all(storage: Path, scratch: Path) -> None:
    """Every read on every session; only coda_session errors may escape."""
    try:
        with SessionManager({"session": {"storage_path": str(storage)}}) as m:
            try:
                infos = m.list_sessions()
            except SessionError:
                infos = []
            names = [i.name for i in infos] or ["a", "b", "c"]
            for name in names:
                try:
                    m.get_session_info(name)
                    s = m.load_session(name)
                    s.get_messages()
                    s.get_token_count()
                    m.export_session(name, str(scratch / "x.jsonl"))
                except SessionError:
                    pass
            with contextlib.suppress(SessionError):
                m.export_store(str(scratch / "all.jsonl"))
    except SessionError:
        pass


def test_bit_flips_raise_only_coda_session_errors(tmp_path: Path) -> None:
    storage = tmp_path / "orig"
    with SessionManager({"session": {"storage_path": str(storage)}}) as m:
        for name in ("a", "b", "c"):
            s = m.create_session(name)
            s.update_metadata({"n": name})
            for i in range(12):
                s.add_message({"role": "user", "content": f"{name} {i} " + ("z" * (i * 120))})
                s.add_message({"role": "tool", "content": None, "tool_call_id": f"t{i}"})
            m.save_session(s)
    original = (storage / "sessions.db").read_bytes()
    assert (
        not (storage / "sessions.db-wal").exists()
        or (storage / "sessions.db-wal").stat().st_size == 0
    )
    rng = random.Random(20261124)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    started = time.monotonic()
    for trial in range(100):
        copy = tmp_path / f"c{trial}"
        copy.mkdir()
        data = bytearray(original)
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        (copy / "sessions.db").write_bytes(bytes(data))
        walk_all(copy, scratch)  # any non-SessionError fails the test here
        shutil.rmtree(copy)
    assert time.monotonic() - started < 300  # never hangs

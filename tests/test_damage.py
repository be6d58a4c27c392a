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

from coda_session import DamagedDataError, SessionError, SessionManager, StorageError
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
                infos: list[Any] = m.list_sessions()
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


# -- damaged branch rows ------------------------------------------------------------------

_SEG_OF = "(SELECT id FROM sessions WHERE name = '{}')"


def _tree(store: Store) -> None:
    """r (6 messages) -> a (fork at 4, +2 of its own) -> b (fork of a at its end, +1,
    inheriting a's segments) -> c (fork of b at 2: a piece of r's rows)."""
    with store.sync_manager() as m:
        r = m.create_session("r")
        for i in range(6):
            r.add_message({"role": "user", "content": f"r{i}"})
        m.save_session(r)
        a = m.create_session("a", branch_from="r", fork_point=4)
        a.add_message({"role": "user", "content": "a0"})
        a.add_message({"role": "user", "content": "a1"})
        m.save_session(a)
        b = m.create_session("b", branch_from="a")
        b.add_message({"role": "user", "content": "b0"})
        m.save_session(b)
        m.create_session("c", branch_from="b", fork_point=2)


def _id_of(name: str) -> str:
    return _SEG_OF.format(name)


#: (what, SQL on SQLite, SQL on PostgreSQL or None where its constraints refuse it)
TREE_DAMAGE = [
    (
        "link cycle",
        f"UPDATE sessions SET inherit_id = {_id_of('b')}, inherit_upto = 1000000 WHERE name = 'a'",
    ),
    ("link to nowhere", "UPDATE sessions SET inherit_id = 'gone' WHERE name = 'b'"),
    ("link without bound", "UPDATE sessions SET inherit_upto = NULL WHERE name = 'b'"),
    ("link bound 0", "UPDATE sessions SET inherit_upto = 0 WHERE name = 'b'"),
    ("link count negative", "UPDATE sessions SET inherit_count = -5 WHERE name = 'b'"),
    ("link count too big", "UPDATE sessions SET inherit_count = 40 WHERE name = 'b'"),
    ("lo > hi", f"UPDATE session_segments SET lo = hi + 5 WHERE session_id = {_id_of('a')}"),
    (
        "segment count negative",
        f"UPDATE session_segments SET message_count = -3 WHERE session_id = {_id_of('a')}",
    ),
    (
        "segment count too big",
        "UPDATE session_segments SET message_count = message_count + 10 "
        f"WHERE session_id = {_id_of('a')}",
    ),
    (
        "segment count too small",
        f"UPDATE session_segments SET message_count = 1 WHERE session_id = {_id_of('a')}",
    ),
    (
        "segments overlap",
        "INSERT INTO session_segments (root_id, session_id, owner_id, lo, hi, "
        "message_count, size_bytes) SELECT root_id, session_id, owner_id, lo, hi, "
        f"message_count, size_bytes FROM session_segments WHERE session_id = {_id_of('a')}",
    ),
    ("session count too big", "UPDATE sessions SET message_count = 40 WHERE name = 'b'"),
    ("session count too small", "UPDATE sessions SET message_count = 1 WHERE name = 'b'"),
    ("session count negative", "UPDATE sessions SET message_count = -2 WHERE name = 'a'"),
    ("segment tree key wrong", "UPDATE session_segments SET root_id = 'elsewhere'"),
]


def _tree_cases() -> list[Any]:
    params: list[Any] = []
    for backend in BACKENDS:
        if backend.id not in ("sqlite", "sqlite-core", "postgresql"):
            continue
        for what, sql in TREE_DAMAGE:
            params.append(
                pytest.param(backend.values[0], sql, marks=backend.marks, id=f"{backend.id}-{what}")
            )
    return params


@pytest.mark.parametrize(("backend", "sql"), _tree_cases())
def test_damaged_branch_rows_raise_only_typed_errors(store: Store, sql: str) -> None:
    """Forks, reads, pops, truncations and deletes of every session of a tree whose
    branch rows were damaged: each works or raises a SessionError (a DamagedDataError
    saying what to do where the damage is found), never anything else."""
    _tree(store)
    corrupt(store, sql)
    raised: list[BaseException] = []

    def attempt(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SessionError as exc:
            raised.append(exc)
            return None

    names = ["r", "a", "b", "c"]
    config = store.config.model_copy(update={"autosave_interval": 0, "message_cache_size": 0})
    with SessionManager(config, store.repository(private_loop=True)) as m:
        for name in names:
            s = attempt(m.load_session, name)
            if s is None:
                continue
            attempt(s.get_messages)
            attempt(s.get_messages, 3)
            attempt(s.get_token_count)
            pairs = attempt(s.get_messages_with_ids) or []
            for k, (point, after) in enumerate(
                [
                    (None, None),
                    (1, None),
                    (-1, None),
                    (3, None),
                    (None, pairs[0][0] if pairs else 1),
                ]
            ):
                attempt(m.create_session, f"{name}-f{k}", branch_from=name, fork_point=point,
                        fork_after=after)  # fmt: skip
        for name in names:
            s = attempt(m.load_session, name)
            if s is None:
                continue
            attempt(s.pop_messages, 2)
            s.truncate_messages(1)
            refused = len(raised)
            attempt(m.save_session, s)
            if len(raised) > refused:
                s.discard_changes()  # the damage refused it: dropped on purpose, not at close
        for info in attempt(m.list_sessions) or []:
            attempt(m.delete_session, info.name)
    for exc in raised:
        if isinstance(exc, DamagedDataError):
            assert "damaged" in str(exc) and ("backup" in str(exc) or "export" in str(exc)), exc

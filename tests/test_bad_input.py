"""A catalogue of bad input: each raises its typed error and changes nothing.

"Nothing" is checked three ways: the session object shows the same state (its unsaved
changes included), storage is byte-for-byte the same (a dump of both tables for SQLite;
``list_sessions()`` plus every message for every backend), and a later save writes only
what was pending before the bad call.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import IntEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from coda_session import (
    AsyncSessionManager,
    InvalidConfigError,
    InvalidMessageError,
    SessionConfig,
    SessionError,
    SessionExistsError,
    SessionManager,
    SessionNotFoundError,
    UnsavedChangesWarning,
)

# -- storage dumps ----------------------------------------------------------------------


def sqlite_dump(database: Path) -> dict[str, Any]:
    conn = sqlite3.connect(database)
    try:
        return {
            "sessions": conn.execute("SELECT * FROM sessions ORDER BY id").fetchall(),
            "messages": conn.execute("SELECT * FROM messages ORDER BY id").fetchall(),
            "schema": conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
            ).fetchall(),
        }
    finally:
        conn.close()


async def api_dump(store: Any) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    manager = store.async_manager(message_cache_size=0)
    try:
        out = []
        for info in await manager.list_sessions():
            session = await manager.load_session(info.name)
            out.append((info.model_dump(), await session.get_messages()))
        return out
    finally:
        await manager.close()


async def dump(store: Any) -> dict[str, Any]:
    """SQLite: both tables and the schema, row by row. Memory: ``list_sessions()`` and
    every session's messages."""
    if store.database is not None:
        return {"sql": sqlite_dump(store.database)}
    return {"api": await api_dump(store)}


SEED_MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "be brief", "timestamp": "2024-01-01T00:00:00+00:00"},
    {
        "role": "user",
        "content": [{"type": "text", "text": "hi"}],
        "name": "ann",
        "timestamp": "2024-01-01T00:00:01+00:00",
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "1", "args": {"x": 1.5}}],
        "timestamp": "2024-01-01T00:00:02+00:00",
    },
]
SEED_METADATA = {"agent": "coda", "nested": {"b": [1, 2]}, "n": 2**70}
PENDING = {"role": "user", "content": "pending", "timestamp": "2024-01-02T00:00:00+00:00"}


async def seed(store: Any) -> None:
    manager = store.async_manager()
    try:
        session = await manager.create_session("seed")
        session.set_messages(SEED_MESSAGES)
        session.update_metadata(SEED_METADATA)
        await manager.save_session(session)
        other = await manager.create_session("other")
        other.add_message({"role": "user", "content": "untouched"})
        await manager.save_session(other)
    finally:
        await manager.close()


# -- values -------------------------------------------------------------------------


def nested_lists(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def nested_dicts(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


def cyclic() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


class Color(IntEnum):
    RED = 1


class MyFloat(float):
    pass


class MyStr(str):
    pass


HUGE_INT = 10**4300  # 4301 digits: past Python's default int <-> str conversion limit
NOW = datetime(2024, 1, 1, tzinfo=UTC)


def m(**extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": "ok", **extra}


# (id, call on an AsyncSession / Session, expected error); a call may return an awaitable
SESSION_CASES: list[tuple[str, Callable[[Any], Any], type[Exception]]] = [
    # add_message: values that are not JSON
    ("msg-nan-content", lambda s: s.add_message(m(content=float("nan"))), InvalidMessageError),
    (
        "msg-inf-nested",
        lambda s: s.add_message(m(content=[1, [float("inf")]])),
        InvalidMessageError,
    ),
    ("msg-neg-inf-extra", lambda s: s.add_message(m(score=float("-inf"))), InvalidMessageError),
    (
        "msg-nan-in-dict",
        lambda s: s.add_message(m(content={"x": float("nan")})),
        InvalidMessageError,
    ),
    # NUL and lone surrogates are stored in contents, extra keys and metadata
    # (tests/test_any_text.py); roles and timestamps are identifiers and refuse them
    (
        "msg-nul-role",
        lambda s: s.add_message({"role": "us\x00er", "content": "x"}),
        InvalidMessageError,
    ),
    (
        "msg-surrogate-role",
        lambda s: s.add_message({"role": "\udfff", "content": "x"}),
        InvalidMessageError,
    ),
    ("msg-int-key", lambda s: s.add_message(m(content={1: "x"})), InvalidMessageError),
    ("msg-none-key", lambda s: s.add_message(m(content={None: "x"})), InvalidMessageError),
    (
        "msg-non-str-top-key",
        lambda s: s.add_message({"role": "u", "content": "c", 7: "x"}),
        InvalidMessageError,
    ),
    ("msg-set", lambda s: s.add_message(m(content={1, 2})), InvalidMessageError),
    ("msg-bytes", lambda s: s.add_message(m(content=b"bytes")), InvalidMessageError),
    ("msg-object", lambda s: s.add_message(m(content=object())), InvalidMessageError),
    (
        "msg-datetime-in-content",
        lambda s: s.add_message(m(content={"at": NOW})),
        InvalidMessageError,
    ),
    ("msg-decimal", lambda s: s.add_message(m(content=Decimal("1.5"))), InvalidMessageError),
    ("msg-complex", lambda s: s.add_message(m(content=1j)), InvalidMessageError),
    ("msg-intenum", lambda s: s.add_message(m(content=Color.RED)), InvalidMessageError),
    ("msg-float-subclass", lambda s: s.add_message(m(value=MyFloat(1.0))), InvalidMessageError),
    ("msg-str-subclass", lambda s: s.add_message(m(content=MyStr("x"))), InvalidMessageError),
    (
        "msg-mappingproxy",
        lambda s: s.add_message(m(content=MappingProxyType({"a": 1}))),
        InvalidMessageError,
    ),
    (
        "msg-deep-lists-150",
        lambda s: s.add_message(m(content=nested_lists(150))),
        InvalidMessageError,
    ),
    (
        "msg-deep-dicts-150",
        lambda s: s.add_message(m(extra=nested_dicts(150))),
        InvalidMessageError,
    ),
    (
        "msg-deep-10000",
        lambda s: s.add_message(m(content=nested_lists(10_000))),
        InvalidMessageError,
    ),
    ("msg-cyclic", lambda s: s.add_message(m(content=cyclic())), InvalidMessageError),
    ("msg-huge-int-content", lambda s: s.add_message(m(content=HUGE_INT)), InvalidMessageError),
    ("msg-huge-int-extra", lambda s: s.add_message(m(n=[HUGE_INT])), InvalidMessageError),
    # add_message: shape
    ("msg-missing-role", lambda s: s.add_message({"content": "x"}), InvalidMessageError),
    # content is optional since messages are stored exactly (tests/test_items.py); an
    # item without a role needs a non-empty type
    ("msg-empty-type", lambda s: s.add_message({"type": "", "output": "x"}), InvalidMessageError),
    ("msg-empty-role", lambda s: s.add_message({"role": "", "content": "x"}), InvalidMessageError),
    ("msg-space-role", lambda s: s.add_message({"role": " ", "content": "x"}), InvalidMessageError),
    (
        "msg-whitespace-role",
        lambda s: s.add_message({"role": " \t\n\u3000", "content": "x"}),
        InvalidMessageError,
    ),
    ("set-whitespace-role", lambda s: s.set_messages([m(), m(role="   ")]), InvalidMessageError),
    ("msg-none-role", lambda s: s.add_message({"role": None, "content": "x"}), InvalidMessageError),
    ("msg-int-role", lambda s: s.add_message({"role": 1, "content": "x"}), InvalidMessageError),
    ("msg-bool-role", lambda s: s.add_message({"role": True, "content": "x"}), InvalidMessageError),
    (
        "msg-list-role",
        lambda s: s.add_message({"role": ["user"], "content": "x"}),
        InvalidMessageError,
    ),
    (
        "msg-str-subclass-role",
        lambda s: s.add_message({"role": MyStr("u"), "content": "x"}),
        InvalidMessageError,
    ),
    (
        "msg-not-a-dict",
        lambda s: s.add_message([("role", "user"), ("content", "x")]),
        InvalidMessageError,
    ),
    ("msg-none", lambda s: s.add_message(None), InvalidMessageError),
    ("msg-string", lambda s: s.add_message("hello"), InvalidMessageError),
    # add_message: timestamps
    ("ts-int", lambda s: s.add_message(m(timestamp=1704067200)), InvalidMessageError),
    ("ts-float", lambda s: s.add_message(m(timestamp=1704067200.5)), InvalidMessageError),
    ("ts-garbage", lambda s: s.add_message(m(timestamp="yesterday")), InvalidMessageError),
    ("ts-basic-form", lambda s: s.add_message(m(timestamp="20240101")), InvalidMessageError),
    (
        "ts-basic-datetime",
        lambda s: s.add_message(m(timestamp="20240101T000000Z")),
        InvalidMessageError,
    ),
    (
        "ts-bad-month",
        lambda s: s.add_message(m(timestamp="2024-13-01T00:00:00")),
        InvalidMessageError,
    ),
    (
        "ts-bad-hour",
        lambda s: s.add_message(m(timestamp="2024-01-01T25:00:00")),
        InvalidMessageError,
    ),
    (
        "ts-bad-offset",
        lambda s: s.add_message(m(timestamp="2024-01-01T00:00:00+25:00")),
        InvalidMessageError,
    ),
    ("ts-short", lambda s: s.add_message(m(timestamp="2024-1-1")), InvalidMessageError),
    ("ts-empty", lambda s: s.add_message(m(timestamp="")), InvalidMessageError),
    ("ts-nul", lambda s: s.add_message(m(timestamp="2024-01-01\x00")), InvalidMessageError),
    ("ts-date-object", lambda s: s.add_message(m(timestamp=date(2024, 1, 1))), InvalidMessageError),
    (
        "ts-str-subclass",
        lambda s: s.add_message(m(timestamp=MyStr("2024-01-01"))),
        InvalidMessageError,
    ),
    ("ts-list", lambda s: s.add_message(m(timestamp=["2024-01-01"])), InvalidMessageError),
    # set_messages: one bad message changes nothing
    ("set-last-bad", lambda s: s.set_messages([m(), m(content=float("nan"))]), InvalidMessageError),
    ("set-first-bad", lambda s: s.set_messages([{"role": ""}, m()]), InvalidMessageError),
    (
        "set-generator-bad",
        lambda s: s.set_messages(x for x in [m(), m(), None]),
        InvalidMessageError,
    ),
    ("set-string", lambda s: s.set_messages("ab"), InvalidMessageError),
    # update_metadata
    ("meta-list", lambda s: s.update_metadata([("a", 1)]), InvalidMessageError),
    ("meta-none", lambda s: s.update_metadata(None), InvalidMessageError),
    ("meta-string", lambda s: s.update_metadata("a=1"), InvalidMessageError),
    (
        "meta-nan",
        lambda s: s.update_metadata({"agent": "x", "k": float("nan")}),
        InvalidMessageError,
    ),
    (
        "meta-inf-nested",
        lambda s: s.update_metadata({"k": {"v": [float("inf")]}}),
        InvalidMessageError,
    ),
    ("meta-int-key", lambda s: s.update_metadata({1: "v"}), InvalidMessageError),
    ("meta-nested-int-key", lambda s: s.update_metadata({"k": {2: "v"}}), InvalidMessageError),
    ("meta-set", lambda s: s.update_metadata({"k": {1}}), InvalidMessageError),
    ("meta-bytes", lambda s: s.update_metadata({"k": b"x"}), InvalidMessageError),
    ("meta-datetime", lambda s: s.update_metadata({"k": NOW}), InvalidMessageError),
    ("meta-object", lambda s: s.update_metadata({"k": object()}), InvalidMessageError),
    ("meta-deep", lambda s: s.update_metadata({"k": nested_dicts(150)}), InvalidMessageError),
    ("meta-cyclic", lambda s: s.update_metadata({"k": cyclic()}), InvalidMessageError),
    ("meta-huge-int", lambda s: s.update_metadata({"k": HUGE_INT}), InvalidMessageError),
    # truncate_messages
    ("trunc-negative", lambda s: s.truncate_messages(-1), InvalidMessageError),
    ("trunc-str", lambda s: s.truncate_messages("3"), InvalidMessageError),
    ("trunc-float", lambda s: s.truncate_messages(2.0), InvalidMessageError),
    ("trunc-nan", lambda s: s.truncate_messages(float("nan")), InvalidMessageError),
    ("trunc-none", lambda s: s.truncate_messages(None), InvalidMessageError),
    ("trunc-bool", lambda s: s.truncate_messages(True), InvalidMessageError),
    ("trunc-huge-negative", lambda s: s.truncate_messages(-(2**70)), InvalidMessageError),
    # get_messages limits
    ("limit-negative", lambda s: s.get_messages(limit=-1), InvalidMessageError),
    ("limit-str", lambda s: s.get_messages(limit="5"), InvalidMessageError),
    ("limit-float", lambda s: s.get_messages(limit=1.5), InvalidMessageError),
    ("limit-inf", lambda s: s.get_messages(limit=float("inf")), InvalidMessageError),
    ("limit-bool", lambda s: s.get_messages(limit=True), InvalidMessageError),
    ("limit-list", lambda s: s.get_messages(limit=[1]), InvalidMessageError),
]


async def session_state(session: Any) -> tuple[Any, ...]:
    messages = session.get_messages()
    if inspect.isawaitable(messages):
        messages = await messages
    return (messages, session.metadata, session.message_count, session.has_unsaved_changes)


async def check_after_save(store: Any, before: dict[str, Any]) -> None:
    """Storage after saving holds exactly ``before`` plus the one pending message."""
    api = {info["name"]: (info, msgs) for info, msgs in await api_dump(store)}
    assert sorted(api) == ["other", "seed"]
    seed_info, seed_msgs = api["seed"]
    assert seed_msgs == [*SEED_MESSAGES, PENDING]
    assert seed_info["metadata"] == SEED_METADATA
    assert seed_info["message_count"] == len(SEED_MESSAGES) + 1
    assert [m["content"] for m in api["other"][1]] == ["untouched"]
    after = await dump(store)
    if "sql" in before:
        seed_id = seed_info["id"]
        assert [r for r in after["sql"]["sessions"] if r[0] != seed_id] == [
            r for r in before["sql"]["sessions"] if r[0] != seed_id
        ]
        old = before["sql"]["messages"]
        assert after["sql"]["messages"][: len(old)] == old
        assert len(after["sql"]["messages"]) == len(old) + 1
        assert after["sql"]["schema"] == before["sql"]["schema"]
    else:
        infos_before = {info["name"]: (info, msgs) for info, msgs in before["api"]}
        assert api["other"] == infos_before["other"]
        assert seed_msgs == [*infos_before["seed"][1], PENDING]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("call", "error"),
    [pytest.param(call, error, id=case_id) for case_id, call, error in SESSION_CASES],
)
async def test_session_bad_input_async(
    store: Any, call: Callable[[Any], Any], error: type[Exception]
) -> None:
    await seed(store)
    before = await dump(store)
    manager = store.async_manager()
    try:
        session = await manager.load_session("seed")
        session.add_message(PENDING)
        state = await session_state(session)

        with pytest.raises(error):
            result = call(session)
            if inspect.isawaitable(result):
                await result

        assert await session_state(session) == state
        assert await dump(store) == before, "a rejected call wrote to storage"
        await manager.save_session(session)
    finally:
        await manager.close()
    await check_after_save(store, before)


def test_session_bad_input_sync(store: Any) -> None:
    """The whole catalogue through the blocking API (one storage, every case in turn):
    the same typed errors, nothing awaitable, nothing changed."""
    asyncio.run(seed(store))
    before = asyncio.run(dump(store))
    failures: list[str] = []
    with store.sync_manager() as manager:
        session = manager.load_session("seed")
        session.add_message(PENDING)
        state = asyncio.run(session_state(session))
        for case_id, call, error in SESSION_CASES:
            try:
                result = call(session)
            except error:
                pass
            except Exception as exc:
                failures.append(f"{case_id}: raised {type(exc).__name__}: {exc!s:.80}")
                continue
            else:
                failures.append(
                    f"{case_id}: did not raise {error.__name__} (returned {type(result).__name__})"
                )
                continue
            if asyncio.run(session_state(session)) != state:
                failures.append(f"{case_id}: the session changed")
            if asyncio.run(dump(store)) != before:
                failures.append(f"{case_id}: storage changed")
        manager.save_session(session)
    assert not failures, "\n".join(failures)
    asyncio.run(check_after_save(store, before))


# -- names --------------------------------------------------------------------------

BAD_NAMES: list[Any] = [
    pytest.param("", id="empty"),
    pytest.param(" ", id="space"),
    pytest.param("   ", id="spaces"),
    pytest.param("\u3000\u00a0", id="unicode-spaces"),
    pytest.param("a" * 256, id="256-chars"),
    pytest.param("\u00e9" * 256, id="256-multibyte"),
    pytest.param("bad\x00name", id="nul"),
    pytest.param("tab\tname", id="tab"),
    pytest.param("new\nline", id="newline"),
    pytest.param("carriage\rreturn", id="cr"),
    pytest.param("esc\x1b[31m", id="escape"),
    pytest.param("\x7f", id="del"),
    pytest.param("a\x85b", id="c1-nel"),
    pytest.param("\x9b31m", id="c1-csi"),
    pytest.param("\ud800", id="surrogate"),
    pytest.param(None, id="none"),
    pytest.param(123, id="int"),
    pytest.param(b"bytes", id="bytes"),
    pytest.param(["seed"], id="list"),
    pytest.param(MyStr("seed"), id="str-subclass"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize("name", BAD_NAMES)
async def test_bad_session_names(store: Any, name: Any) -> None:
    await seed(store)
    before = await dump(store)
    manager = store.async_manager()
    try:
        creating: list[Callable[[], Awaitable[object]]] = [
            lambda: manager.create_session(name),
            lambda: manager.create_session(name, exist_ok=False),
            lambda: manager.create_session(name, branch_from="seed"),
        ]
        looking_up = [
            # (None as branch_from means "no branch", so it is not a bad source name)
            *(
                [lambda: manager.create_session("fine-name", branch_from=name)]
                if name is not None
                else []
            ),
            *([lambda: manager.load_session(name)] if name is not None else []),
            lambda: manager.get_session_info(name),
            lambda: manager.delete_session(name),
            lambda: manager.delete_session(name, missing_ok=True),
        ]
        # a name of only whitespace is refused for a new session, but a lookup by it may
        # find a session an earlier version stored: here it finds none
        legacy = isinstance(name, str) and name.isspace()
        for i, call in enumerate(creating + looking_up):
            if legacy and i >= len(creating):
                with contextlib.suppress(SessionNotFoundError):
                    assert await call() is None, f"call #{i}"
            else:
                with pytest.raises(InvalidMessageError):
                    await call()
            assert await dump(store) == before, f"call #{i} changed storage"
        if name is None:  # load_session(None) is "no name given", not a bad name
            with pytest.raises(SessionError, match="exactly one"):
                await manager.load_session(name)
    finally:
        await manager.close()

    with store.sync_manager() as sync:
        with pytest.raises(InvalidMessageError):
            sync.create_session(name)
        if isinstance(name, str) and name.isspace():
            sync.delete_session(name, missing_ok=True)
        else:
            with pytest.raises(InvalidMessageError):
                sync.delete_session(name, missing_ok=True)
    assert await dump(store) == before


# (id, call on (manager, session, other manager's session), expected error)
MANAGER_CASES: list[tuple[str, Callable[..., Any], type[Exception]]] = [
    ("load-neither", lambda mg, s, o: mg.load_session(), SessionError),
    ("load-both", lambda mg, s, o: mg.load_session("seed", session_id=s.id), SessionError),
    ("load-id-int", lambda mg, s, o: mg.load_session(session_id=123), SessionNotFoundError),
    ("load-id-empty", lambda mg, s, o: mg.load_session(session_id=""), SessionNotFoundError),
    (
        "load-id-injection",
        lambda mg, s, o: mg.load_session(session_id="' OR '1'='1"),
        SessionNotFoundError,
    ),
    ("load-missing", lambda mg, s, o: mg.load_session("no-such-session"), SessionNotFoundError),
    ("delete-missing", lambda mg, s, o: mg.delete_session("no-such-session"), SessionNotFoundError),
    (
        "branch-missing",
        lambda mg, s, o: mg.create_session("new", branch_from="nope"),
        SessionNotFoundError,
    ),
    (
        "create-exists",
        lambda mg, s, o: mg.create_session("seed", exist_ok=False),
        SessionExistsError,
    ),
    (
        "branch-onto-existing",
        lambda mg, s, o: mg.create_session("other", branch_from="seed"),
        SessionExistsError,
    ),
    ("save-not-a-session", lambda mg, s, o: mg.save_session(object()), SessionError),
    ("save-none", lambda mg, s, o: mg.save_session(None), SessionError),
    ("save-foreign-session", lambda mg, s, o: mg.save_session(o), SessionError),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("call", "error"),
    [pytest.param(call, error, id=case_id) for case_id, call, error in MANAGER_CASES],
)
async def test_manager_bad_calls(
    store: Any, call: Callable[..., Any], error: type[Exception]
) -> None:
    await seed(store)
    before = await dump(store)
    manager = store.async_manager()
    foreign = store.async_manager(autosave_interval=0)  # its pending message stays unwritten
    try:
        session = await manager.load_session("seed")
        other = await foreign.load_session("seed")
        other.add_message({"role": "user", "content": "must not be written"})
        with pytest.raises(error):
            await call(manager, session, other)
        assert await dump(store) == before
        assert other.has_unsaved_changes
    finally:
        await manager.close()
        # autosave off: its pending message stays unwritten, and close() says so
        with pytest.warns(UnsavedChangesWarning, match="'seed'"):
            await foreign.close()
    assert await dump(store) == before


# -- configuration ----------------------------------------------------------------------

CONFIG_CASES: list[Any] = [
    pytest.param({"backend": "postgres"}, id="unknown-backend"),
    pytest.param({"backend": "SQLITE"}, id="backend-case"),
    pytest.param({"backend": 1}, id="backend-int"),
    pytest.param({"backend": None}, id="backend-none"),
    pytest.param({"connection_pool_size": "5"}, id="pool-str"),
    pytest.param({"connection_pool_size": 5.0}, id="pool-float"),
    pytest.param({"connection_pool_size": True}, id="pool-bool"),
    pytest.param({"connection_pool_size": 0}, id="pool-zero"),
    pytest.param({"connection_pool_size": -1}, id="pool-negative"),
    pytest.param({"connection_pool_size": 1001}, id="pool-too-big"),
    pytest.param({"autosave_interval": -1}, id="autosave-negative"),
    pytest.param({"autosave_interval": "300"}, id="autosave-str"),
    pytest.param({"autosave_interval": True}, id="autosave-bool"),
    pytest.param({"autosave_interval": float("nan")}, id="autosave-nan"),
    pytest.param({"max_session_size": 0}, id="max-size-zero"),
    pytest.param({"max_session_size": -5}, id="max-size-negative"),
    pytest.param({"max_session_size": "100"}, id="max-size-str"),
    pytest.param({"compress_messages": "yes"}, id="compress-str"),
    pytest.param({"compress_messages": 1}, id="compress-int"),
    pytest.param({"message_cache_size": -1}, id="cache-negative"),
    pytest.param({"message_cache_size": 1.0}, id="cache-float"),
    pytest.param({"busy_timeout": -1}, id="busy-negative"),
    pytest.param({"busy_timeout": 3601}, id="busy-too-big"),
    pytest.param({"busy_timeout": float("nan")}, id="busy-nan"),
    pytest.param({"busy_timeout": "5"}, id="busy-str"),
    pytest.param({"pool_size": 5}, id="unknown-key"),
    pytest.param({"storage": "/tmp"}, id="unknown-key-storage"),
    pytest.param({"Backend": "sqlite"}, id="unknown-key-case"),
    pytest.param({"storage_path": ""}, id="path-empty"),
    pytest.param({"storage_path": "a\x00b"}, id="path-nul"),
    pytest.param({"storage_path": 123}, id="path-int"),
    pytest.param({"storage_path": b"/tmp/x"}, id="path-bytes"),
    pytest.param({"database_url": "not a url"}, id="url-garbage"),
    pytest.param({"database_url": "sqlite:///x.db"}, id="url-sync-driver"),
    pytest.param({"database_url": 5}, id="url-int"),
    pytest.param(
        {"backend": "memory", "database_url": "sqlite+aiosqlite:///x.db"}, id="url-with-memory"
    ),
    pytest.param({"database_url": "mysql+aiomysql://u@127.0.0.1/db"}, id="url-unsupported"),
    pytest.param({"database_url": "postgresql+psycopg2://u@127.0.0.1/db"}, id="url-sync-pg"),
    pytest.param({"database_url": "foo://"}, id="url-unknown-dialect"),
    pytest.param({"storage_path": "/tmp/chats.db"}, id="path-db-file"),
    pytest.param({"storage_path": "/tmp/chats.sqlite3"}, id="path-sqlite3-file"),
]


class SqliteStore:
    """The part of conftest's Store the dump needs, for a plain SQLite directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.config = SessionConfig.from_mapping({"session": {"storage_path": str(path)}})
        self.database = path / "sessions.db"

    def async_manager(self, **overrides: Any) -> AsyncSessionManager:
        return AsyncSessionManager(self.config.model_copy(update=overrides))


@pytest.fixture
def seeded_sqlite(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A SQLite store with the seed sessions, and its dump."""
    store = SqliteStore(tmp_path / "seeded")
    asyncio.run(seed(store))
    return tmp_path / "seeded", asyncio.run(dump(store))


def _loop_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "coda-session-loop")


@pytest.mark.parametrize("section", CONFIG_CASES)
def test_bad_config(
    tmp_path: Path, seeded_sqlite: tuple[Path, dict[str, Any]], section: dict[str, Any]
) -> None:
    path, before = seeded_sqlite
    fresh_dir = tmp_path / "never-created"
    configs = [
        {"session": section},
        {"session": {"storage_path": str(path), **section}},
        {"session": {"storage_path": str(fresh_dir), **section}},
    ]
    if "storage_path" in section or "database_url" in section:
        configs = configs[:1]
    threads = _loop_threads()
    for cfg in configs:
        with pytest.raises(InvalidConfigError):
            SessionConfig.from_mapping(cfg)
        with pytest.raises(InvalidConfigError):
            AsyncSessionManager(cfg)
        with pytest.raises(InvalidConfigError):
            SessionManager(cfg)
    assert _loop_threads() == threads, "a rejected SessionManager left its loop thread running"
    assert not fresh_dir.exists()
    assert asyncio.run(dump(SqliteStore(path))) == before


@pytest.mark.parametrize(
    "config",
    [
        pytest.param([("session", {})], id="list"),
        pytest.param("session", id="string"),
        pytest.param(42, id="int"),
        pytest.param({"session": "sqlite"}, id="section-string"),
        pytest.param({"session": None}, id="section-none"),
        pytest.param({"session": [("backend", "memory")]}, id="section-list"),
        pytest.param({"backend": "memory"}, id="unwrapped"),
        pytest.param({"storage_path": "/tmp/never", "ui": {}}, id="unwrapped-with-ui"),
        pytest.param({"sesion": {"backend": "memory"}}, id="misspelt"),
        pytest.param({"sessions": {"backend": "memory"}}, id="plural"),
        pytest.param({"Session": {"backend": "memory"}}, id="capital"),
    ],
)
def test_bad_config_shape(config: Any) -> None:
    with pytest.raises(InvalidConfigError):
        SessionConfig.from_mapping(config)
    with pytest.raises(InvalidConfigError):
        AsyncSessionManager(config)
    with pytest.raises(InvalidConfigError):
        SessionManager(config)


def test_config_error_names_the_key() -> None:
    with pytest.raises(InvalidConfigError, match="connection_pool_size"):
        SessionConfig.from_mapping({"session": {"connection_pool_size": "5"}})
    with pytest.raises(InvalidConfigError, match="pool_size"):
        SessionConfig.from_mapping({"session": {"pool_size": 5}})
    # other top-level sections belong to the application and are ignored
    cfg = SessionConfig.from_mapping({"session": {"backend": "memory"}, "llm": {"x": 1}})
    assert cfg.backend == "memory"


# -- SQL-injection-like strings are ordinary, valid text -------------------------------

INJECTIONS = [
    "'); DROP TABLE messages; --",
    "Robert'); DROP TABLE sessions;--",
    "x' OR '1'='1",
    '" OR ""="',
    "1; DELETE FROM sessions WHERE 1=1",
    "%",
    "_",
    "\\",
    "*/ SELECT * FROM sqlite_master; /*",
    "seed' --",
    # full-text-search syntax (FTS5 / tsquery) is text too
    '"hello" NEAR(world, 2) AND NOT spam*',
    "content: ^start OR {role content}: x",
    "foo & !bar | baz:*",
]


@pytest.mark.asyncio
@pytest.mark.parametrize("text", INJECTIONS)
async def test_injection_strings_are_stored_verbatim(store: Any, text: str) -> None:
    await seed(store)
    before = await dump(store)
    message = {
        "role": text,
        "content": text,
        text: text,
        "nested": {text: [text]},
        "timestamp": "2024-03-03T03:03:03+00:00",
    }
    async with store.async_manager() as manager:
        session = await manager.create_session(text)
        session.add_message(message)
        session.add_message({"role": "user", "content": [{"type": "text", "text": text}]})
        session.update_metadata({text: text})
        await manager.save_session(session)

    async with store.async_manager(message_cache_size=0) as fresh:
        names = [i.name for i in await fresh.list_sessions()]
        assert sorted(names) == sorted(["seed", "other", text])
        loaded = await fresh.load_session(text)
        assert loaded.name == text
        got = await loaded.get_messages()
        assert got[0] == message
        assert got[1]["content"] == [{"type": "text", "text": text}]
        assert loaded.metadata == {text: text}
        info = await fresh.get_session_info(text)
        assert info is not None and info.message_count == 2
        # lookups are exact: no LIKE wildcards, no quoting tricks
        if text not in ("seed", "other"):
            assert await fresh.get_session_info(text + "x") is None
        for other_name in ("seed", "other"):
            assert await fresh.get_session_info(other_name) is not None
        # the untouched sessions are exactly as before
        after = await dump(store)
        if store.database is None:
            for info_before, msgs_before in before["api"]:
                match = [a for a in after["api"] if a[0]["name"] == info_before["name"]]
                assert match == [(info_before, msgs_before)]
        else:
            new_id = loaded.id
            assert [r for r in after["sql"]["sessions"] if r[0] != new_id] == before["sql"][
                "sessions"
            ]
            assert next(r for r in after["sql"]["sessions"] if r[0] == new_id)[1] == text
            assert after["sql"]["schema"] == before["sql"]["schema"]
            assert (
                after["sql"]["messages"][: len(before["sql"]["messages"])]
                == before["sql"]["messages"]
            )

        # deleting it removes exactly that session
        await fresh.delete_session(text)
        assert await dump(store) == before


@pytest.mark.asyncio
async def test_wildcard_names_do_not_match_others(store: Any) -> None:
    async with store.async_manager() as manager:
        await manager.create_session("abc")
        for pattern in ("%", "a%", "_bc", "ab_", "*", "abc' OR '1'='1", "ABC", " abc", "abc "):
            assert await manager.get_session_info(pattern) is None
            with pytest.raises(SessionNotFoundError):
                await manager.load_session(pattern)
            with pytest.raises(SessionNotFoundError):
                await manager.delete_session(pattern)
        assert [i.name for i in await manager.list_sessions()] == ["abc"]


@pytest.mark.asyncio
async def test_padded_names_and_roles_are_kept_as_given(store: Any) -> None:
    async with store.async_manager() as manager:
        for name in (" lead", "trail ", " both\u3000"):
            session = await manager.create_session(name)
            session.add_message({"role": " user ", "content": "x"})
            await manager.save_session(session)
    async with store.async_manager() as manager:
        names = sorted(info.name for info in await manager.list_sessions())
        assert names == sorted([" lead", "trail ", " both\u3000"])
        loaded = await manager.load_session(" lead")
        assert [msg["role"] for msg in await loaded.get_messages()] == [" user "]
        assert await manager.get_session_info("lead") is None


def test_catalogue_is_large_enough() -> None:
    assert len(SESSION_CASES) + len(BAD_NAMES) + len(MANAGER_CASES) + len(CONFIG_CASES) >= 40
    ids = [case_id for case_id, _, _ in SESSION_CASES + MANAGER_CASES]
    assert len(ids) == len(set(ids))


async def test_whitespace_named_session_of_an_earlier_version_stays_reachable(
    store: Any,
) -> None:
    """Earlier versions accepted a name made of spaces: such a session can still be
    loaded, exported and deleted, though no new one can be made."""
    m = store.async_manager()
    try:
        await m.open()
        legacy = "   "
        if store.backend in ("memory", "custom"):
            pytest.skip(f"the {store.backend} backend holds no session of an earlier version")
        await m.create_session("placeholder")
        store.execute("UPDATE sessions SET name = ? WHERE name = 'placeholder'", legacy)
        with pytest.raises(InvalidMessageError):
            await m.create_session("  \u3000 ")
        loaded = await m.load_session(legacy)
        assert loaded.name == legacy
        assert (await m.get_session_info(legacy)) is not None
        await m.delete_session(legacy)
        assert (await m.get_session_info(legacy)) is None
    finally:
        await m.close()

"""Configuration keys that change behaviour: compress_messages and max_session_size."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coda_session import SessionTooLargeError, UnsavedChangesWarning
from coda_session.codec import COMPRESS_THRESHOLD
from tests.support import Store

BIG = "All work and no play makes Jack a dull boy. " * 100  # 4,400 bytes


@pytest.mark.not_on_custom("a SessionStorage gets plain dicts; it never compresses")
async def test_large_contents_are_compressed_and_read_back_identical(store: Store) -> None:
    m = store.async_manager()
    try:
        s = await m.create_session("c")
        parts = [{"type": "text", "text": BIG}, {"type": "image_url", "image_url": {"url": "x"}}]
        s.add_message({"role": "user", "content": BIG})
        s.add_message({"role": "tool", "content": parts, "tool_call_id": "t1"})
        s.add_message({"role": "user", "content": "short"})
        await m.save_session(s)
        info = await m.get_session_info("c")
        # sizes count what get_messages() returns, whatever compression saves
        assert info is not None and info.size_bytes > 2 * len(BIG)
    finally:
        await m.close()
    fresh = store.async_manager()
    try:
        got = await (await fresh.load_session("c")).get_messages()
    finally:
        await fresh.close()
    assert [g["content"] for g in got] == [BIG, parts, "short"]
    assert got[1]["tool_call_id"] == "t1"
    if store.database is not None:
        conn = sqlite3.connect(store.database)
        rows = conn.execute(
            "SELECT content IS NULL, content_zlib IS NOT NULL FROM messages ORDER BY id"
        ).fetchall()
        conn.close()
        assert rows == [(1, 1), (1, 1), (0, 0)]


async def test_mixed_rows_written_with_and_without_compression(store: Store) -> None:
    plain = store.async_manager(compress_messages=False)
    try:
        s = await plain.create_session("mixed")
        s.add_message({"role": "user", "content": BIG + "1"})
        await plain.save_session(s)
    finally:
        await plain.close()
    packed = store.async_manager(compress_messages=True)
    try:
        s = await packed.load_session("mixed")
        s.add_message({"role": "user", "content": BIG + "2"})
        await packed.save_session(s)
        branch = await packed.create_session("mixed-b", branch_from="mixed")
        assert [g["content"] for g in await branch.get_messages()] == [BIG + "1", BIG + "2"]
    finally:
        await packed.close()
    reader = store.async_manager(compress_messages=False)
    try:
        s = await reader.load_session("mixed")
        assert [g["content"] for g in await s.get_messages()] == [BIG + "1", BIG + "2"]
        # the token estimate counts what the text says, not its compressed bytes
        assert await s.get_token_count() == -(-2 * (4 + len(BIG) + 1) // 4) + 2 * 4
    finally:
        await reader.close()


SURROGATES: tuple[Literal["Cs"]] = ("Cs",)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.text(
        st.characters(blacklist_categories=SURROGATES, blacklist_characters="\x00"),
        min_size=COMPRESS_THRESHOLD // 4,
        max_size=3000,
    ),
    repeat=st.integers(1, 8),
)
def test_compressed_round_trip_hypothesis(store: Store, text: str, repeat: int) -> None:
    content = text * repeat
    with store.sync_manager() as m:
        s = m.create_session("h")
        s.clear_messages()
        s.add_message({"role": "user", "content": content, "k": [content[:10]]})
        s.add_message({"role": "user", "content": [content, {"n": repeat}]})
        m.save_session(s)
    with store.sync_manager() as m:
        got = m.load_session("h").get_messages()
    assert [g["content"] for g in got] == [content, [content, {"n": repeat}]]
    assert got[0]["k"] == [content[:10]]


async def test_size_limit_on_add_and_save_writes_nothing(store: Store) -> None:
    m = store.async_manager(max_session_size=0.002, compress_messages=False)  # 2,000 bytes
    try:
        s = await m.create_session("small")
        s.add_message({"role": "user", "content": "x" * 1000})
        await m.save_session(s)
        with pytest.raises(SessionTooLargeError) as info:
            s.add_message({"role": "user", "content": "y" * 1000})
        err = info.value
        assert err.name == "small" and err.limit == 2000 and err.size > 2000
        assert "small" in str(err) and "2,000" in str(err)
        assert s.message_count == 1 and not s.has_unsaved_changes
        # a second manager whose object has not seen the first save is stopped by the save
        other = store.async_manager(
            max_session_size=0.002, compress_messages=False, autosave_interval=0
        )
        try:
            twin = await other.create_session("twin")
            twin.add_message({"role": "user", "content": "z" * 900})
            await other.save_session(twin)
            stale = await other.load_session("small")
            m2 = await m.load_session("small")
            m2.add_message({"role": "user", "content": "a" * 600})
            await m.save_session(m2)
            stale.add_message({"role": "user", "content": "b" * 600})  # fits as stale saw it
            with pytest.raises(SessionTooLargeError):
                await other.save_session(stale)
            assert stale.has_unsaved_changes  # kept for the caller to trim and retry
            stale.discard_changes()  # dropped on purpose: close() has nothing to warn about
        finally:
            await other.close()
        info_after = await m.get_session_info("small")
        assert info_after is not None and info_after.message_count == 2
        got = await (await m.load_session("small")).get_messages()
        assert [g["content"][0] for g in got] == ["x", "a"]
    finally:
        await m.close()


async def test_shrinking_saves_are_allowed_over_the_limit(store: Store) -> None:
    big = store.async_manager(compress_messages=False)
    try:
        s = await big.create_session("s")
        for ch in "abc":
            s.add_message({"role": "user", "content": ch * 1000})
        await big.save_session(s)
    finally:
        await big.close()
    strict = store.async_manager(max_session_size=0.001, compress_messages=False)
    try:
        s = await strict.load_session("s")
        s.truncate_messages(2)  # still over 1,000 bytes, but smaller: allowed
        await strict.save_session(s)
        assert (await strict.get_session_info("s")).message_count == 2  # type: ignore[union-attr]
    finally:
        await strict.close()


def test_size_limit_through_the_sync_shim(store: Store) -> None:
    from coda_session import SessionConfig, SessionManager

    config = store.config.model_copy(update={"max_session_size": 0.001, "compress_messages": False})
    repo = store.repository(private_loop=True)
    with SessionManager(SessionConfig.model_validate(config.model_dump()), repo) as m:
        s = m.create_session("x")
        with pytest.raises(SessionTooLargeError):
            s.set_messages([{"role": "user", "content": "q" * 2000}])
        assert s.get_messages() == []


async def test_autosave_is_seen_by_a_second_manager(store: Store) -> None:
    import asyncio

    writer = store.async_manager(autosave_interval=0.05)
    reader = store.async_manager(autosave_interval=0)
    try:
        s = await writer.create_session("auto")
        s.add_message({"role": "user", "content": "saved by the background task"})
        s.update_metadata({"k": "v"})
        # The reader can see the rows a moment before the writer's task resumes and marks
        # the session saved, so wait for both.
        for _ in range(100):
            await asyncio.sleep(0.05)
            info = await reader.get_session_info("auto")
            if info is not None and info.message_count == 1 and not s.has_unsaved_changes:
                break
        assert info is not None and info.message_count == 1 and info.metadata == {"k": "v"}
        assert not s.has_unsaved_changes
    finally:
        await writer.close()
        await reader.close()


async def test_close_flushes_and_no_flush_runs_after_close(store: Store) -> None:
    import asyncio

    m = store.async_manager(autosave_interval=3600)
    s = await m.create_session("flush")
    s.add_message({"role": "user", "content": "written by close"})
    await m.close()
    check = store.async_manager(autosave_interval=0)
    try:
        info = await check.get_session_info("flush")
        assert info is not None and info.message_count == 1
        await asyncio.sleep(0.1)
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "coda-session-autosave"]
    finally:
        await check.close()


async def test_autosave_off_leaves_unsaved_changes_unwritten(store: Store) -> None:
    m = store.async_manager(autosave_interval=0)
    s = await m.create_session("off")
    s.add_message({"role": "user", "content": "never saved"})
    with pytest.warns(UnsavedChangesWarning, match="'off'"):
        await m.close()  # not written, and said so
    check = store.async_manager(autosave_interval=0)
    try:
        assert (await check.get_session_info("off")).message_count == 0  # type: ignore[union-attr]
    finally:
        await check.close()


async def test_failed_autosave_is_logged_and_raised_on_the_next_call(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    from coda_session import SessionNotFoundError

    m = store.async_manager(autosave_interval=0.05)
    other = store.async_manager(autosave_interval=0)
    try:
        s = await m.create_session("doomed")
        await other.delete_session("doomed")
        s.add_message({"role": "user", "content": "secret words"})
        for _ in range(100):
            await asyncio.sleep(0.05)
            if any("autosave of session" in r.getMessage() for r in caplog.records):
                break
        assert any("autosave of session 'doomed' failed" in r.getMessage() for r in caplog.records)
        assert all("secret words" not in r.getMessage() for r in caplog.records)
        with pytest.raises(SessionNotFoundError):
            s.add_message({"role": "user", "content": "next call"})
        assert s.has_unsaved_changes  # the message is still there to save elsewhere
    finally:
        s.clear_messages()
        await m.close()
        await other.close()


def test_sync_shim_autosaves_and_flushes_on_exit_of_with(store: Store) -> None:
    import time

    from coda_session import SessionConfig, SessionManager

    config = SessionConfig.model_validate(
        store.config.model_copy(update={"autosave_interval": 0.05}).model_dump()
    )
    with SessionManager(config, store.repository(private_loop=True)) as m:
        s = m.create_session("sync-auto")
        s.add_message({"role": "user", "content": "background"})
        deadline = time.monotonic() + 5
        while s.has_unsaved_changes and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not s.has_unsaved_changes
        s.add_message({"role": "user", "content": "at exit"})
    with SessionManager(config, store.repository(private_loop=True)) as again:
        got = again.load_session("sync-auto").get_messages()
    assert [g["content"] for g in got] == ["background", "at exit"]


async def test_a_cancelled_save_lands_once(store: Store) -> None:
    import asyncio

    m = store.async_manager(autosave_interval=0)
    try:
        s = await m.create_session("c")
        for i in range(20000):
            s.add_message({"role": "user", "content": f"m{i}"})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(m.save_session(s), 0.001)
        await m.save_session(s)  # waits for the cancelled one to land; sends nothing twice
        info = await m.get_session_info("c")
        assert info is not None and info.message_count == 20000
        assert not s.has_unsaved_changes and s.message_count == 20000
    finally:
        await m.close()


async def test_clear_during_a_metadata_only_save_is_refused(store: Store) -> None:
    import asyncio

    from coda_session import SessionError

    m = store.async_manager(autosave_interval=0)
    try:
        s = await m.create_session("c")
        for i in range(10):
            s.add_message({"role": "user", "content": f"m{i}"})
        await m.save_session(s)
        s.update_metadata({"k": 1})
        task = asyncio.ensure_future(m.save_session(s))
        await asyncio.sleep(0)
        if s._saving:  # the write is on its way (always so on SQLite's thread)
            with pytest.raises(SessionError, match="being saved"):
                s.clear_messages()
        else:
            assert store.backend == "memory"  # its save never yields
        await task
        s.clear_messages()  # after the save returns, it is accepted and written
        await m.save_session(s)
        assert (await m.get_session_info("c")).message_count == 0  # type: ignore[union-attr]
    finally:
        await m.close()


async def test_close_retries_a_failed_autosave(
    sqlite_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio
    import sqlite3
    from pathlib import Path

    from coda_session import AsyncSessionManager

    config = sqlite_config(autosave_interval=0.05, busy_timeout=0.05)
    m = AsyncSessionManager(config)
    s = await m.create_session("r")
    db = Path(config["session"]["storage_path"]) / "sessions.db"
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    s.add_message({"role": "user", "content": "saved at close"})
    for _ in range(200):
        await asyncio.sleep(0.05)
        if any("autosave of session" in r.getMessage() for r in caplog.records):
            break
    assert any(
        "autosave of session" in r.getMessage() for r in caplog.records
    )  # the background save failed on the lock
    blocker.execute("ROLLBACK")
    blocker.close()
    await m.close()  # retries it, and succeeds now
    async with AsyncSessionManager(sqlite_config(autosave_interval=0)) as check:
        assert (await check.get_session_info("r")).message_count == 1  # type: ignore[union-attr]

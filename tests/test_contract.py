"""The session contract, through the async API, on every backend."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import pytest

from coda_session import (
    AsyncSessionManager,
    ManagerClosedError,
    ReadOnlyError,
    SessionError,
    SessionExistsError,
    SessionNotFoundError,
)
from tests.support import Store, strip_ts, user

pytestmark = pytest.mark.asyncio


async def test_create_add_save_resume(amanager: AsyncSessionManager, store: Store) -> None:
    s = await amanager.create_session("chat")
    s.add_message(user("Hello!"))
    s.add_message({"role": "assistant", "content": "Hi there!", "model": "gpt-4"})
    assert s.message_count == 2 and s.has_unsaved_changes
    await amanager.save_session(s)
    assert not s.has_unsaved_changes

    other = store.async_manager()
    try:
        again = await other.create_session("chat")  # create-or-load resumes
        assert again.id == s.id
        got = await again.get_messages()
        assert strip_ts(got) == [
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": "Hi there!", "model": "gpt-4"},
        ]
        json.dumps(got)  # plain JSON-serializable dicts
    finally:
        await other.close()


async def test_unsaved_changes_show_at_once_and_are_not_stored(
    amanager: AsyncSessionManager, store: Store
) -> None:
    s = await amanager.create_session("chat")
    s.add_message(user("one"))
    s.update_metadata({"topic": "x"})
    assert strip_ts(await s.get_messages()) == [user("one")]
    assert s.metadata == {"topic": "x"}
    info = await amanager.get_session_info("chat")
    assert info is not None and info.message_count == 0 and info.metadata == {}


async def test_timestamp_defaults_to_utc_iso(amanager: AsyncSessionManager) -> None:
    s = await amanager.create_session("chat")
    before = datetime.now(UTC)
    s.add_message(user("x"))
    # the message is kept exactly (no key added); the time it is filed under is beside it
    assert await s.get_messages() == [user("x")]
    ts = datetime.fromisoformat((await s.get_entries())[0].timestamp)
    assert ts.tzinfo is not None and ts.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= ts <= datetime.now(UTC) + timedelta(seconds=1)


async def test_given_timestamp_and_extra_keys_kept_verbatim(
    amanager: AsyncSessionManager, store: Store
) -> None:
    msg = {
        "role": "assistant",
        "content": None,
        "timestamp": "2024-05-01T10:00:00.123456",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
        "name": "bot",
        "model": "gpt-4",
    }
    tool = {
        "role": "tool",
        "content": [{"type": "text", "text": "42"}],
        "tool_call_id": "c1",
        "timestamp": "2024-05-01T10:00:01+02:00",
    }
    s = await amanager.create_session("chat")
    s.add_message(msg)
    s.add_message(tool)
    await amanager.save_session(s)
    fresh = store.async_manager()
    try:
        got = await (await fresh.load_session("chat")).get_messages()
    finally:
        await fresh.close()
    assert got == [msg, tool]


async def test_get_messages_limit_returns_newest_oldest_first(
    amanager: AsyncSessionManager, store: Store
) -> None:
    s = await amanager.create_session("chat")
    for i in range(30):
        s.add_message(user(str(i)))
    await amanager.save_session(s)
    for i in range(30, 35):
        s.add_message(user(str(i)))  # unsaved tail
    assert [m["content"] for m in await s.get_messages(limit=3)] == ["32", "33", "34"]
    assert [m["content"] for m in await s.get_messages(limit=7)] == [str(i) for i in range(28, 35)]
    assert await s.get_messages(limit=0) == []
    assert len(await s.get_messages(limit=1000)) == 35
    fresh = store.async_manager()
    try:
        resumed = await fresh.load_session("chat")
        assert [m["content"] for m in await resumed.get_messages(limit=10)] == [
            str(i) for i in range(20, 30)
        ]
    finally:
        await fresh.close()


async def test_reads_beyond_the_cache(store: Store) -> None:
    m = store.async_manager(message_cache_size=5)
    try:
        s = await m.create_session("chat")
        for i in range(40):
            s.add_message(user(str(i)))
        await m.save_session(s)
        resumed = await m.load_session("chat")
        assert [x["content"] for x in await resumed.get_messages()] == [str(i) for i in range(40)]
        assert [x["content"] for x in await resumed.get_messages(limit=12)] == [
            str(i) for i in range(28, 40)
        ]
        assert len(resumed._cache) <= 5
    finally:
        await m.close()


async def test_truncate_keeps_newest_across_saved_and_unsaved(
    amanager: AsyncSessionManager, store: Store
) -> None:
    s = await amanager.create_session("chat")
    for i in range(10):
        s.add_message(user(str(i)))
    await amanager.save_session(s)
    s.add_message(user("10"))
    s.add_message(user("11"))
    s.truncate_messages(max_messages=5)
    assert [m["content"] for m in await s.get_messages()] == ["7", "8", "9", "10", "11"]
    s.truncate_messages(1)  # positional works too
    assert [m["content"] for m in await s.get_messages()] == ["11"]
    await amanager.save_session(s)
    fresh = store.async_manager()
    try:
        got = await (await fresh.load_session("chat")).get_messages()
        info = await fresh.get_session_info("chat")
    finally:
        await fresh.close()
    assert [m["content"] for m in got] == ["11"]
    assert info is not None and info.message_count == 1


async def test_clear_then_add(amanager: AsyncSessionManager) -> None:
    s = await amanager.create_session("chat")
    for i in range(5):
        s.add_message(user(str(i)))
    await amanager.save_session(s)
    s.clear_messages()
    assert await s.get_messages() == []
    s.add_message(user("after"))
    await amanager.save_session(s)
    resumed = await amanager.load_session("chat")
    assert [m["content"] for m in await resumed.get_messages()] == ["after"]
    assert (await amanager.get_session_info("chat")).message_count == 1  # type: ignore[union-attr]


async def test_truncate_does_not_remove_messages_saved_by_another_manager(store: Store) -> None:
    a, b = store.async_manager(), store.async_manager()
    try:
        sa = await a.create_session("chat")
        for i in range(5):
            sa.add_message(user(f"a{i}"))
        await a.save_session(sa)
        sb = await b.load_session("chat")
        sb.add_message(user("b0"))
        await b.save_session(sb)
        sa.truncate_messages(2)  # a has not seen b0
        await a.save_session(sa)
        got = await (await b.load_session("chat")).get_messages()
        assert [m["content"] for m in got] == ["a3", "a4", "b0"]
        assert (await b.get_session_info("chat")).message_count == 3  # type: ignore[union-attr]
        # after its save, a's object shows the stored state, b0 included
        assert [m["content"] for m in await sa.get_messages()] == ["a3", "a4", "b0"]
    finally:
        await a.close()
        await b.close()


async def test_metadata_merge_and_concurrent_keys(store: Store) -> None:
    a, b = store.async_manager(), store.async_manager()
    try:
        sa = await a.create_session("chat")
        sa.update_metadata({"topic": "Python programming", "tags": ["tutorial", "basics"]})
        await a.save_session(sa)
        sb = await b.load_session("chat")
        sa.update_metadata({"model": "gpt-4"})
        sb.update_metadata({"owner": "ann"})
        await a.save_session(sa)
        await b.save_session(sb)
        info = await a.get_session_info("chat")
        assert info is not None
        assert info.metadata == {
            "topic": "Python programming",
            "tags": ["tutorial", "basics"],
            "model": "gpt-4",
            "owner": "ann",
        }
    finally:
        await a.close()
        await b.close()


async def test_metadata_is_a_read_only_snapshot(amanager: AsyncSessionManager) -> None:
    s = await amanager.create_session("chat")
    s.update_metadata({"tags": ["a"]})
    with pytest.raises(ReadOnlyError):  # a change in place would be lost: refused loudly
        s.metadata["tags"].append("b")
    plain = copy.deepcopy(s.metadata)
    plain["tags"].append("b")  # a copy is the caller's to change
    assert s.metadata == {"tags": ["a"]}
    got = await s.get_messages()
    assert got == []


async def test_returned_messages_are_fresh_copies(amanager: AsyncSessionManager) -> None:
    s = await amanager.create_session("chat")
    original = {"role": "user", "content": {"parts": [1]}}
    s.add_message(original)
    original["content"]["parts"].append(2)  # type: ignore[index]
    first = await s.get_messages()
    first[0]["content"]["parts"].append(3)
    assert (await s.get_messages())[0]["content"] == {"parts": [1]}


async def test_branch_copies_messages_and_metadata_and_is_independent(
    amanager: AsyncSessionManager,
) -> None:
    src = await amanager.create_session("project-discussion")
    src.add_message(user("one"))
    src.update_metadata({"topic": "t"})
    await amanager.save_session(src)
    src.add_message(user("unsaved"))  # a branch copies the saved state
    branch = await amanager.create_session(
        "project-discussion-v2", branch_from="project-discussion"
    )
    assert strip_ts(await branch.get_messages()) == [user("one")]
    assert branch.metadata == {"topic": "t"}
    branch.add_message(user("two"))
    await amanager.save_session(branch)
    await amanager.save_session(src)
    assert [
        m["content"]
        for m in await (await amanager.load_session("project-discussion")).get_messages()
    ] == ["one", "unsaved"]
    assert [
        m["content"]
        for m in await (await amanager.load_session("project-discussion-v2")).get_messages()
    ] == ["one", "two"]
    info = await amanager.get_session_info("project-discussion-v2")
    assert info is not None and info.message_count == 2
    # deleting the source leaves the branch whole
    await amanager.delete_session("project-discussion")
    assert len(await (await amanager.load_session("project-discussion-v2")).get_messages()) == 2


async def test_branch_from_session_object(amanager: AsyncSessionManager) -> None:
    src = await amanager.create_session("a")
    src.add_message(user("x"))
    await amanager.save_session(src)
    b = await amanager.create_session("b", branch_from=src)
    assert strip_ts(await b.get_messages()) == [user("x")]


async def test_branch_errors(amanager: AsyncSessionManager) -> None:
    await amanager.create_session("a")
    await amanager.create_session("b")
    with pytest.raises(SessionExistsError):
        await amanager.create_session("b", branch_from="a")
    with pytest.raises(SessionNotFoundError):
        await amanager.create_session("c", branch_from="missing")
    assert [i.name for i in await amanager.list_sessions()] == ["a", "b"]


async def test_exist_ok_false(amanager: AsyncSessionManager) -> None:
    await amanager.create_session("a")
    with pytest.raises(SessionExistsError):
        await amanager.create_session("a", exist_ok=False)
    fresh = await amanager.create_session("new", exist_ok=False)
    assert fresh.name == "new"


async def test_load_by_name_and_id_and_missing(amanager: AsyncSessionManager) -> None:
    s = await amanager.create_session("a")
    assert (await amanager.load_session("a")).id == s.id
    assert (await amanager.load_session(session_id=s.id)).name == "a"
    with pytest.raises(SessionNotFoundError):
        await amanager.load_session("missing")
    with pytest.raises(SessionNotFoundError):
        await amanager.load_session(session_id="no-such-id")
    with pytest.raises(SessionError):
        await amanager.load_session()


async def test_delete(amanager: AsyncSessionManager) -> None:
    s = await amanager.create_session("a")
    s.add_message(user("x"))
    await amanager.save_session(s)
    await amanager.delete_session("a")
    assert await amanager.get_session_info("a") is None
    with pytest.raises(SessionNotFoundError):
        await amanager.delete_session("a")
    await amanager.delete_session("a", missing_ok=True)
    # saving a deleted session's object fails loudly instead of resurrecting it
    s.add_message(user("y"))
    with pytest.raises(SessionNotFoundError):
        await amanager.save_session(s)
    # the name is free again, and the new session starts empty
    again = await amanager.create_session("a")
    assert await again.get_messages() == []


async def test_list_sessions_infos(amanager: AsyncSessionManager) -> None:
    for name, n in (("first", 2), ("second", 0), ("third", 3)):
        s = await amanager.create_session(name)
        for i in range(n):
            s.add_message(user("héllo" * i))
        s.update_metadata({"topic": f"{name} python"})
        await amanager.save_session(s)
    infos = await amanager.list_sessions()
    assert [i.name for i in infos] == ["first", "second", "third"]
    assert [i.message_count for i in infos] == [2, 0, 3]
    assert infos[1].size_bytes == 0 and infos[0].size_bytes > 0
    assert infos[2].size_bytes > infos[0].size_bytes
    for info in infos:
        assert info.created_at.tzinfo is not None and info.updated_at >= info.created_at
    # the spec's "search by metadata" snippet
    python_sessions = [s for s in infos if "python" in s.metadata.get("topic", "").lower()]
    assert len(python_sessions) == 3


async def test_size_bytes_follows_truncation(amanager: AsyncSessionManager) -> None:
    s = await amanager.create_session("a")
    s.add_message({"role": "user", "content": "x" * 100, "timestamp": "2024-01-01T00:00:00"})
    s.add_message({"role": "user", "content": "é" * 10, "timestamp": "2024-01-01T00:00:01"})
    await amanager.save_session(s)
    info = await amanager.get_session_info("a")
    assert info is not None and info.size_bytes == (4 + 100 + 19) + (4 + 20 + 19)
    s.truncate_messages(1)
    await amanager.save_session(s)
    info = await amanager.get_session_info("a")
    assert info is not None and info.size_bytes == 4 + 20 + 19 and info.message_count == 1


async def test_token_count(amanager: AsyncSessionManager) -> None:
    s = await amanager.create_session("a")
    assert await s.get_token_count() == 0
    s.add_message({"role": "user", "content": "x" * 396})  # 400 chars with role -> 100 + 4
    assert await s.get_token_count() == 104
    await amanager.save_session(s)
    s.add_message({"role": "user", "content": "x" * 396})
    assert await s.get_token_count() == 208
    resumed = await amanager.load_session("a")
    assert await resumed.get_token_count() == 104


async def test_set_messages_replaces_all_or_nothing(amanager: AsyncSessionManager) -> None:
    s = await amanager.create_session("a")
    s.add_message(user("old"))
    await amanager.save_session(s)
    with pytest.raises(SessionError):
        s.set_messages([user("new"), {"role": "", "content": "bad"}])
    assert [m["content"] for m in await s.get_messages()] == ["old"]
    s.set_messages([user("n1"), user("n2")])
    await amanager.save_session(s)
    got = await (await amanager.load_session("a")).get_messages()
    assert [m["content"] for m in got] == ["n1", "n2"]


async def test_save_without_changes_writes_nothing(amanager: AsyncSessionManager) -> None:
    s = await amanager.create_session("a")
    stamp = s.updated_at
    await amanager.save_session(s)
    assert (await amanager.get_session_info("a")).updated_at == stamp  # type: ignore[union-attr]


async def test_session_of_another_manager_is_refused(store: Store) -> None:
    a, b = store.async_manager(), store.async_manager()
    try:
        s = await a.create_session("x")
        with pytest.raises(SessionError):
            await b.save_session(s)
    finally:
        await a.close()
        await b.close()


async def test_closed_manager(store: Store) -> None:
    m = store.async_manager()
    s = await m.create_session("x")
    await m.close()
    await m.close()  # idempotent
    with pytest.raises(ManagerClosedError):
        await m.list_sessions()
    with pytest.raises(ManagerClosedError):
        s.add_message(user("late"))


async def test_async_context_manager(store: Store) -> None:
    async with store.async_manager() as m:
        await m.create_session("x")
    assert m.closed


async def test_ids_of_deleted_messages_are_never_reused(store: Store) -> None:
    """B's clear is bounded by the newest message B had seen; messages A saved after its
    own clear must survive it, which needs ids that are never handed out again."""
    a, b = store.async_manager(autosave_interval=0), store.async_manager(autosave_interval=0)
    try:
        sa_ = await a.create_session("s")
        for i in range(3):
            sa_.add_message(user(f"old-{i}"))
        await a.save_session(sa_)
        sb = await b.load_session("s")
        sa_.clear_messages()
        sa_.add_message(user("new-1"))
        sa_.add_message(user("new-2"))
        await a.save_session(sa_)
        sb.clear_messages()
        await b.save_session(sb)
        got = await (await a.load_session("s")).get_messages()
        assert [m["content"] for m in got] == ["new-1", "new-2"]
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("enabled", [True, False])
async def test_list_sessions_leaves_the_garbage_collector_as_it_found_it(
    amanager: AsyncSessionManager, enabled: bool
) -> None:
    import gc

    from coda_session import SessionInfo

    for i in range(3):
        s = await amanager.create_session(f"s{i}")
        s.add_message(user("x"))
        s.update_metadata({"i": i})
        await amanager.save_session(s)
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        infos = await amanager.list_sessions()
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()
    # built without validation, yet the same as validated models
    assert [SessionInfo.model_validate(i.model_dump()) for i in infos] == infos
    assert [(i.name, i.metadata, i.message_count) for i in infos] == [
        (f"s{n}", {"i": n}, 1) for n in range(3)
    ]


async def test_storage_keeps_no_reference_to_results_after_a_call(
    amanager: AsyncSessionManager,
) -> None:
    import gc
    import weakref

    s = await amanager.create_session("chat")
    s.add_message(user("x"))
    await amanager.save_session(s)
    infos = await amanager.list_sessions()
    ref = weakref.ref(infos[0])
    del infos
    gc.collect()
    # the connection's worker thread used to hold the last result until its next call
    assert ref() is None

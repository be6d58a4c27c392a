"""Copy-on-write branching, end to end on real components.

Forks at any position or after a message id, ``fork_session``, isolation in both
directions, ``pop_messages`` (alone and by concurrent managers), navigation (``parent_id``,
``fork_point``, ``root_id``, ``list_branches``, ``get_tree``, ``get_lineage``), what the
SQL backends store (no copied rows, nothing leaked), forks beside writers, truncations and
deletes, and migration 0009 up and down with data (SQLite and PostgreSQL, the real
Alembic CLI).

Most tests take the ``store`` fixture, so they run on every backend. Everything a test
asserts about storage is read back through a separate manager with no message cache
(``reader``) or, on SQL backends, with raw SQL outside the library (``Store.execute``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from coda_session import (
    AsyncSession,
    AsyncSessionManager,
    InvalidMessageError,
    SessionExistsError,
    SessionInfo,
    SessionNotFoundError,
)
from coda_session.manager import repository_of
from coda_session.migrate import HEAD_REVISION, upgrade_async
from coda_session.repository.sql import SqlRepository
from tests.support import BACKENDS, ROOT, SQL_BACKENDS, Store

TS = "2025-01-01T00:00:00"
"""Every test message's timestamp: equal messages then have equal sizes."""

SQLITE_BACKENDS = [p for p in BACKENDS if p.id in ("sqlite", "sqlite-core")]
SQLITE_AND_POSTGRESQL = [p for p in BACKENDS if p.id in ("sqlite", "postgresql")]
SHARED_STORE_BACKENDS = [p for p in BACKENDS if p.id != "custom"]
"""Backends where several managers write one store (not the custom one: CROSS_WRITER)."""


# -- helpers ---------------------------------------------------------------------------


def msg(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text, "timestamp": TS}


def words(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def texts(messages: Sequence[dict[str, Any]]) -> list[Any]:
    return [m["content"] for m in messages]


@contextlib.asynccontextmanager
async def opened(store: Store, **overrides: Any) -> AsyncIterator[AsyncSessionManager]:
    """A manager of its own on the store (autosave off: nothing is written on close)."""
    m = store.async_manager(autosave_interval=0, **overrides)
    try:
        yield m
    finally:
        await m.close()


def reading(store: Store) -> contextlib.AbstractAsyncContextManager[AsyncSessionManager]:
    """A manager that caches no message: every read goes to storage."""
    return opened(store, message_cache_size=0)


async def seed(
    m: AsyncSessionManager, name: str, contents: Sequence[str], **metadata: Any
) -> AsyncSession:
    s = await m.create_session(name, exist_ok=False)
    for text in contents:
        s.add_message(msg(text))
    if metadata:
        s.update_metadata(metadata)
    await m.save_session(s)
    return s


async def shown(m: AsyncSessionManager, name: str) -> list[Any]:
    """The contents a fresh load of ``name`` shows (its counters agreeing)."""
    s = await m.load_session(name)
    got = await s.get_messages()
    info = await m.get_session_info(name)
    assert info is not None
    assert info.message_count == s.message_count == len(got), name
    return texts(got)


async def snapshot(m: AsyncSessionManager, name: str) -> tuple[Any, ...]:
    """What a session shows: contents, ids, metadata and counters, from storage."""
    s = await m.load_session(name)
    pairs = await s.get_messages_with_ids()
    info = await m.get_session_info(name)
    assert info is not None
    assert info.message_count == len(pairs)
    return (
        [(i, d["content"]) for i, d in pairs],
        info.metadata,
        info.message_count,
        info.size_bytes,
        await s.get_token_count(),
    )


def saved_ids(pairs: Sequence[tuple[int | None, dict[str, Any]]]) -> list[int]:
    """The ids of ``get_messages_with_ids()`` pairs, every one of them saved."""
    ids = [i for i, _ in pairs]
    assert all(type(i) is int for i in ids), ids
    return [i for i in ids if i is not None]


def is_sql(store: Store) -> bool:
    return store.backend in ("sqlite", "sqlite-core", "postgresql")


def table_counts(store: Store) -> tuple[int, int, int]:
    """Rows of sessions (holders too), messages and session_segments."""
    return (
        int(store.execute("SELECT count(*) FROM sessions")[0][0]),
        int(store.execute("SELECT count(*) FROM messages")[0][0]),
        int(store.execute("SELECT count(*) FROM session_segments")[0][0]),
    )


def stored_contents(store: Store) -> list[Any]:
    """Every message row's content, in id order."""
    return [r[0] for r in store.execute("SELECT content FROM messages ORDER BY id")]


# -- forking anywhere --------------------------------------------------------------------


async def test_a_new_branch_starts_with_its_newest_messages_in_hand(store: Store) -> None:
    """The branch object create_session returns holds its newest messages as a resume
    would (the storage hands them back with the new row): at the end of its source, in
    its own rows, after a message, and inside what the source inherited."""
    base = words("p", 120)
    async with opened(store) as m:
        await seed(m, "p", base[:100])
        mid = await m.create_session("mid", branch_from="p", fork_point=80)
        mid.add_message(msg("m0"))
        await m.save_session(mid)  # a branch with own rows above a segment
        ids = [i for i, _ in await (await m.load_session("p")).get_messages_with_ids()]
        cases: list[tuple[str, dict[str, Any], list[str]]] = [
            ("p", {}, base[:100]),
            ("p", {"fork_point": 50}, base[:50]),
            ("p", {"fork_point": -1}, base[:99]),
            ("p", {"fork_after": ids[9]}, base[:10]),
            ("mid", {}, [*base[:80], "m0"]),
            ("mid", {"fork_point": 30}, base[:30]),
            ("mid", {"fork_after": ids[59]}, base[:60]),
        ]
        for k, (source, kwargs, want) in enumerate(cases):
            branch = await m.create_session(f"b{k}", branch_from=source, **kwargs)
            assert branch.message_count == len(want), (source, kwargs)
            assert texts(await branch.get_messages(limit=3)) == want[-3:], (source, kwargs)
            assert texts(await branch.get_messages()) == want, (source, kwargs)


async def test_fork_point_takes_a_prefix_or_counts_from_the_end(store: Store) -> None:
    base = words("p", 5)
    async with opened(store) as m, reading(store) as reader:
        parent = await seed(m, "p", base, topic="t")
        cases = [(None, 5), (0, 0), (2, 2), (5, 5), (-1, 4), (-2, 3), (-5, 0)]
        for point, expected in cases:
            name = f"b{point}"
            branch = await m.create_session(name, branch_from="p", fork_point=point)
            assert texts(await branch.get_messages()) == base[:expected], point
            assert await shown(reader, name) == base[:expected], point
            assert branch.message_count == expected
            assert (branch.parent_id, branch.fork_point, branch.root_id) == (
                parent.id,
                expected,
                parent.id,
            )
            assert branch.metadata == {"topic": "t"}
            assert not branch.has_unsaved_changes
        # an empty source forks at 0 only
        await seed(m, "empty", [])
        assert await shown(reader, (await m.fork_session("empty", 0)).name) == []
        with pytest.raises(InvalidMessageError):
            await m.fork_session("empty", -1, name="never")
        assert await shown(reader, "p") == base


async def test_invalid_forks_raise_and_write_nothing(store: Store) -> None:
    async with opened(store) as m:
        parent = await seed(m, "p", words("p", 3))
        other = await seed(m, "other", words("o", 5))
        other_id = (await other.get_messages_with_ids())[-1][0]
        assert other_id is not None
        ids = saved_ids(await parent.get_messages_with_ids())
        newest = max(ids)
        # ids are unique in the store, except on custom storage (unique in a session)
        assert other_id not in ids
        # a message the parent showed once but no longer does
        popped = await m.create_session("popped", exist_ok=False)
        popped.add_message(msg("gone"))
        await m.save_session(popped)
        [(gone_id, _)] = await popped.get_messages_with_ids()
        await popped.pop_messages()
        before = await m.list_sessions()
        rows_before = table_counts(store) if is_sql(store) else None
        bad: list[dict[str, Any]] = [
            {"fork_point": 4},
            {"fork_point": -4},
            {"fork_point": 2**63},
            {"fork_point": True},
            {"fork_point": 1.0},
            {"fork_point": "1"},
            {"fork_after": other_id},  # another session's message
            {"fork_after": newest + 1000},
            {"fork_after": 0},
            {"fork_after": -1},
            {"fork_after": str(ids[0])},
            {"fork_after": ids[0], "fork_point": 1},
            {"fork_after": ids[0], "fork_point": 0},
        ]
        for kwargs in bad:
            with pytest.raises(InvalidMessageError):
                await m.create_session("new", branch_from="p", **kwargs)
            with pytest.raises(InvalidMessageError):
                await m.fork_session(parent, name="new", **kwargs)
        with pytest.raises(InvalidMessageError):
            await m.create_session("new", branch_from="popped", fork_after=gone_id)
        for kwargs in (
            {"fork_point": 0},
            {"fork_after": ids[0]},
            {"fork_point": None, "fork_after": 1},
        ):
            with pytest.raises(InvalidMessageError):
                await m.create_session("new", **kwargs)
        with pytest.raises(SessionNotFoundError):
            await m.create_session("new", branch_from="missing")
        with pytest.raises(SessionNotFoundError):
            await m.fork_session("missing")
        with pytest.raises(SessionExistsError):
            await m.create_session("other", branch_from="p")
        assert await m.get_session_info("new") is None
        assert await m.list_sessions() == before
        if rows_before is not None:
            assert table_counts(store) == rows_before
        async with reading(store) as reader:
            assert await shown(reader, "other") == words("o", 5)
            assert await shown(reader, "p") == words("p", 3)


async def test_fork_after_an_id_and_ids_are_shared(store: Store) -> None:
    async with opened(store) as m, reading(store) as reader:
        parent = await seed(m, "p", words("p", 5))
        pairs = await parent.get_messages_with_ids()
        ids = saved_ids(pairs)
        assert ids == sorted(set(ids))
        branch = await m.create_session("b", branch_from="p", fork_after=ids[2])
        assert await branch.get_messages_with_ids() == pairs[:3]
        assert branch.fork_point == 3
        s = await reader.load_session("b")
        assert await s.get_messages_with_ids() == pairs[:3]
        branch.add_message(msg("b-own"))
        assert (await branch.get_messages_with_ids())[-1][0] is None  # unsaved
        await m.save_session(branch)
        own_id = (await branch.get_messages_with_ids())[-1][0]
        assert own_id is not None and own_id > ids[2]
        if store.backend != "custom":  # custom storage numbers each session's own
            assert own_id not in ids
        # from the branch: after an inherited id, after its own one
        c = await m.create_session("c", branch_from="b", fork_after=ids[1])
        assert await c.get_messages_with_ids() == pairs[:2]
        d = await m.fork_session(branch, fork_after=own_id, name="d")
        assert [i for i, _ in await d.get_messages_with_ids()] == [*ids[:3], own_id]
        # the parent's later message is not shown by the branch
        with pytest.raises(InvalidMessageError):
            await m.create_session("e", branch_from="b", fork_after=ids[4])
        # the ids stay when the parent goes
        await m.delete_session("p")
        s = await reader.load_session("b")
        assert [i for i, _ in await s.get_messages_with_ids()] == [*ids[:3], own_id]
        assert await m.get_session_info("e") is None


async def test_fork_of_a_branch_of_a_branch(store: Store) -> None:
    async with opened(store) as m, reading(store) as reader:
        root = await seed(m, "r", words("r", 4))
        a = await m.create_session("a", branch_from="r", fork_point=3)
        a.add_message(msg("a0"))
        a.add_message(msg("a1"))
        await m.save_session(a)
        b = await m.create_session("b", branch_from=a, fork_point=4)  # r0 r1 r2 a0
        b.add_message(msg("b0"))
        await m.save_session(b)
        c = await m.create_session("c", branch_from="b", fork_point=2)
        d = await m.create_session("d", branch_from="b")
        assert await shown(reader, "b") == ["r0", "r1", "r2", "a0", "b0"]
        assert await shown(reader, "c") == ["r0", "r1"]
        assert await shown(reader, "d") == ["r0", "r1", "r2", "a0", "b0"]
        assert {s.root_id for s in (root, a, b, c, d)} == {root.id}
        assert (c.parent_id, d.parent_id, b.parent_id, a.parent_id) == (b.id, b.id, a.id, root.id)
        assert [i.name for i in await d.get_lineage()] == ["r", "a", "b", "d"]


async def test_a_fork_takes_the_saved_state(store: Store) -> None:
    async with opened(store) as m, reading(store) as reader:
        parent = await seed(m, "p", ["a", "b", "c"], k="saved")
        parent.add_message(msg("unsaved"))
        parent.update_metadata({"k": "unsaved", "extra": 1})
        b1 = await m.create_session("b1", branch_from=parent)
        assert texts(await b1.get_messages()) == ["a", "b", "c"]
        assert b1.metadata == {"k": "saved"}
        assert parent.has_unsaved_changes
        assert texts(await parent.get_messages()) == ["a", "b", "c", "unsaved"]
        await m.save_session(parent)
        parent.truncate_messages(1)
        parent.clear_messages()
        b2 = await m.fork_session(parent)
        assert texts(await b2.get_messages()) == ["a", "b", "c", "unsaved"]
        assert b2.metadata == {"k": "unsaved", "extra": 1}
        await m.save_session(parent)
        assert await shown(reader, "p") == []
        assert await shown(reader, "b1") == ["a", "b", "c"]
        assert await shown(reader, b2.name) == ["a", "b", "c", "unsaved"]
        assert (await reader.load_session("b1")).metadata == {"k": "saved"}


async def test_keys_named_id_and_timestamp_come_back_untouched(store: Store) -> None:
    mine = {"role": "user", "content": "x", "id": "mine-7", "timestamp": "2020-02-02T02:02:02"}
    numbered = {"role": "assistant", "content": "y", "id": 12345, "timestamp": TS}
    async with opened(store) as m, reading(store) as reader:
        s = await m.create_session("s")
        s.add_message(mine)
        s.add_message(numbered)
        assert await s.get_messages_with_ids() == [(None, mine), (None, numbered)]
        await m.save_session(s)
        pairs = await s.get_messages_with_ids()
        assert [d for _, d in pairs] == [mine, numbered]
        assert all(type(i) is int for i, _ in pairs)
        assert pairs[0][0] != 12345 or pairs[1][0] != 12345
        branch = await m.create_session("b", branch_from="s", fork_after=pairs[1][0])
        assert await branch.get_messages_with_ids() == pairs
        loaded = await reader.load_session("b")
        assert await loaded.get_messages_with_ids() == pairs
        assert await loaded.get_messages() == [mine, numbered]


# -- fork_session ------------------------------------------------------------------------


async def test_fork_session_names_and_the_regenerate_flow(store: Store) -> None:
    async with opened(store) as m, reading(store) as reader:
        chat = await m.create_session("chat")
        for role, text in [
            ("user", "q1"),
            ("assistant", "a1"),
            ("user", "q2"),
            ("assistant", "a2"),
        ]:
            chat.add_message({"role": role, "content": text, "timestamp": TS})
        await m.save_session(chat)
        first = await m.fork_session("chat")
        second = await m.fork_session(chat)
        for fork in (first, second):
            assert re.fullmatch(r"chat~[0-9a-f]{8}", fork.name), fork.name
            assert await shown(reader, fork.name) == ["q1", "a1", "q2", "a2"]
        assert first.name != second.name
        # regenerate the last answer
        again = await m.fork_session("chat", -1)
        assert texts(await again.get_messages()) == ["q1", "a1", "q2"]
        again.add_message({"role": "assistant", "content": "a2-bis", "timestamp": TS})
        await m.save_session(again)
        assert await shown(reader, again.name) == ["q1", "a1", "q2", "a2-bis"]
        assert await shown(reader, "chat") == ["q1", "a1", "q2", "a2"]
        assert again.fork_point == 3 and again.parent_id == chat.id
        named = await m.fork_session("chat", 1, name="edit")
        assert named.name == "edit" and await shown(reader, "edit") == ["q1"]
        with pytest.raises(SessionExistsError):
            await m.fork_session("chat", name="edit")
        assert await shown(reader, "edit") == ["q1"]
        # the longest names still give valid names, and a fork of a fork too (not on
        # custom: JsonDirStorage's file names, the name in hex, would be too long)
        longs = ("x" * 255, "é" * 254 + "~", "a" * 246 + "~" + "b" * 8)
        for long in longs if store.backend != "custom" else ():
            await seed(m, long, ["l"])
            fork = await m.fork_session(long)
            assert len(fork.name) == 255
            assert fork.name[:246] == long[:246]
            assert re.fullmatch(r"~[0-9a-f]{8}", fork.name[246:]), fork.name
            refork = await m.fork_session(fork)
            assert len(refork.name) == 255 and refork.name != fork.name
            assert await shown(reader, refork.name) == ["l"]


# -- isolation ---------------------------------------------------------------------------


async def _add(m: AsyncSessionManager, s: AsyncSession) -> None:
    s.add_message(msg("later"))
    await m.save_session(s)


async def _truncate(m: AsyncSessionManager, s: AsyncSession) -> None:
    s.truncate_messages(1)
    await m.save_session(s)


async def _truncate_with_add(m: AsyncSessionManager, s: AsyncSession) -> None:
    s.truncate_messages(2)
    s.add_message(msg("after-cut"))
    await m.save_session(s)


async def _clear(m: AsyncSessionManager, s: AsyncSession) -> None:
    s.clear_messages()
    await m.save_session(s)


async def _set(m: AsyncSessionManager, s: AsyncSession) -> None:
    s.set_messages([msg("replaced")])
    await m.save_session(s)


async def _pop(m: AsyncSessionManager, s: AsyncSession) -> None:
    await s.pop_messages(3)


async def _metadata(m: AsyncSessionManager, s: AsyncSession) -> None:
    s.update_metadata({"k": "changed", "new": 1})
    await m.save_session(s)


async def _delete(m: AsyncSessionManager, s: AsyncSession) -> None:
    await m.delete_session(s.name)


OPS: dict[str, Callable[[AsyncSessionManager, AsyncSession], Awaitable[None]]] = {
    "add": _add,
    "truncate": _truncate,
    "truncate+add": _truncate_with_add,
    "clear": _clear,
    "set": _set,
    "pop": _pop,
    "metadata": _metadata,
    "delete": _delete,
}


async def test_changes_to_the_parent_never_reach_its_branches(store: Store) -> None:
    async with opened(store) as m, reading(store) as reader:
        for op_name, op in OPS.items():
            p, b, c = f"p-{op_name}", f"b-{op_name}", f"c-{op_name}"
            parent = await seed(m, p, words("p", 5), k="v")
            branch = await m.create_session(b, branch_from=p, fork_point=3)
            branch.add_message(msg("b-own"))
            await m.save_session(branch)
            await m.create_session(c, branch_from=p)
            before = {n: await snapshot(reader, n) for n in (b, c)}
            await op(m, parent)
            for n in (b, c):
                assert await snapshot(reader, n) == before[n], (op_name, n)
            if op_name == "delete":
                assert await m.get_session_info(p) is None
            else:
                assert await shown(reader, p) == texts(await parent.get_messages()), op_name
            # the branches stay fully usable: pop into the inherited part, fork again
            assert texts(await branch.pop_messages(2)) == ["p2", "b-own"], op_name
            assert await shown(reader, b) == ["p0", "p1"]
            again = await m.fork_session(c, 4)
            assert await shown(reader, again.name) == words("p", 4)
            assert await snapshot(reader, c) == before[c]


async def test_changes_to_a_branch_never_reach_its_parent_or_siblings(store: Store) -> None:
    async with opened(store) as m, reading(store) as reader:
        for op_name, op in OPS.items():
            p, b, c, g = f"p-{op_name}", f"b-{op_name}", f"c-{op_name}", f"g-{op_name}"
            await seed(m, p, words("p", 5), k="v")
            branch = await m.create_session(b, branch_from=p, fork_point=3)
            branch.add_message(msg("b-own"))
            await m.save_session(branch)
            await m.create_session(c, branch_from=p, fork_point=3)
            await m.create_session(g, branch_from=b)  # a branch of the branch
            before = {n: await snapshot(reader, n) for n in (p, c, g)}
            await op(m, branch)
            for n in (p, c, g):
                assert await snapshot(reader, n) == before[n], (op_name, n)
            if op_name != "delete":
                assert await shown(reader, b) == texts(await branch.get_messages()), op_name


async def test_deleting_a_parent_keeps_branches_whole_and_frees_its_name(store: Store) -> None:
    async with opened(store) as m, reading(store) as reader:
        old = await seed(m, "p", words("p", 4), k="v")
        b1 = await m.create_session("b1", branch_from="p", fork_point=2)
        b1.add_message(msg("b1-own"))
        await m.save_session(b1)
        await m.create_session("b2", branch_from="p")
        await m.create_session("b11", branch_from="b1")
        before = {n: await snapshot(reader, n) for n in ("b1", "b2", "b11")}
        await m.delete_session("p")
        assert await m.get_session_info("p") is None
        new = await m.create_session("p", exist_ok=False)
        assert new.id != old.id and new.message_count == 0 and new.metadata == {}
        assert (new.parent_id, new.fork_point, new.root_id) == (None, None, new.id)
        assert await shown(reader, "p") == []
        assert [i.name for i in await m.get_tree("p")] == ["p"]
        assert await m.list_branches("p") == []
        await _add(m, new)
        for n, snap in before.items():
            assert await snapshot(reader, n) == snap, n
        assert (await reader.load_session("b1")).parent_id == old.id
        assert [i.name for i in await m.get_tree("b1")] == ["b1", "b2", "b11"]
        fork = await m.fork_session("b2", 3)
        assert await shown(reader, fork.name) == words("p", 3)


# -- pop_messages ----------------------------------------------------------------------


async def test_pop_takes_unsaved_messages_first_then_storage(store: Store) -> None:
    async with opened(store) as m, opened(store) as other, reading(store) as reader:
        s = await seed(m, "s", ["a", "b", "c"])
        s.add_message(msg("d"))
        s.add_message(msg("e"))
        assert texts(await s.pop_messages(1)) == ["e"]
        assert await shown(reader, "s") == ["a", "b", "c"]  # nothing was written
        assert texts(await s.pop_messages(3)) == ["b", "c", "d"]
        assert texts(await s.get_messages()) == ["a"] and s.message_count == 1
        assert not s.has_unsaved_changes
        assert await shown(reader, "s") == ["a"]
        assert await s.pop_messages(0) == []
        with pytest.raises(InvalidMessageError):
            await s.pop_messages(-1)
        # other unsaved changes are written by the pop's transaction
        s.update_metadata({"k": 1})
        s.add_message(msg("f"))
        s.add_message(msg("g"))
        assert texts(await s.pop_messages(1)) == ["g"]
        assert s.has_unsaved_changes  # the pop was answered from the unsaved messages
        assert texts(await s.pop_messages(2)) == ["a", "f"]
        assert not s.has_unsaved_changes
        assert await shown(reader, "s") == []
        assert (await reader.load_session("s")).metadata == {"k": 1}
        assert await s.pop_messages(5) == []
        # unsaved messages pop without touching storage: a session deleted meanwhile
        # by another manager still hands back its unsaved messages
        t = await seed(m, "t", ["x"])
        t.add_message(msg("y"))
        await other.delete_session("t")
        assert texts(await t.pop_messages(1)) == ["y"]
        with pytest.raises(SessionNotFoundError):
            await t.pop_messages(1)


async def test_pop_more_than_shown_and_into_the_inherited_part(store: Store) -> None:
    async with opened(store) as m, reading(store) as reader:
        await seed(m, "p", words("p", 5))
        b = await m.create_session("b", branch_from="p", fork_point=4)
        b.add_message(msg("b0"))
        await m.save_session(b)
        assert texts(await b.pop_messages(3)) == ["p2", "p3", "b0"]
        assert await shown(reader, "b") == ["p0", "p1"]
        assert await shown(reader, "p") == words("p", 5)
        b.add_message(msg("b1"))
        assert texts(await b.pop_messages(10)) == ["p0", "p1", "b1"]
        assert await shown(reader, "b") == [] and b.message_count == 0
        assert await b.pop_messages(2) == []
        info = await m.get_session_info("b")
        assert info is not None and (info.message_count, info.size_bytes) == (0, 0)
        assert await shown(reader, "p") == words("p", 5)
        # another manager's view: the pop takes the newest in storage now
        s = await seed(m, "s", ["a", "b"])
        async with opened(store) as other:
            late = await other.load_session("s")
            late.add_message(msg("c"))
            await other.save_session(late)
        assert texts(await s.pop_messages(1)) == ["c"]
        assert await shown(reader, "s") == ["a", "b"]


def _check_pops(base: list[str], batches: list[list[Any]], remaining: list[Any]) -> None:
    """Popped batches never overlap, each is a contiguous run of ``base`` oldest first,
    and they with what remains are exactly ``base`` (what remains its prefix)."""
    popped = [t for batch in batches for t in batch]
    assert len(popped) == len(set(popped)), "a message was popped twice"
    assert remaining == base[: len(remaining)]
    assert sorted(popped + remaining, key=base.index) == base
    for batch in batches:
        if batch:
            start = base.index(batch[0])
            assert batch == base[start : start + len(batch)], batch


@pytest.mark.parametrize("backend", SHARED_STORE_BACKENDS)
async def test_concurrent_poppers_on_separate_managers_never_share_a_message(
    store: Store,
) -> None:
    base = words("q", 60)
    async with reading(store) as reader:
        async with opened(store) as m:
            await seed(m, "q", base)
            await seed(m, "p", words("p", 30))
            b = await m.create_session("b", branch_from="p")
            for text in words("b", 10):
                b.add_message(msg(text))
            await m.save_session(b)
        managers = [store.async_manager(autosave_interval=0) for _ in range(4)]
        try:

            async def popper(m: AsyncSessionManager, k: int, name: str) -> list[list[Any]]:
                s = await m.load_session(name)
                batches: list[list[Any]] = []
                for r in range(6):
                    batches.append(texts(await s.pop_messages(1 + (k + r) % 3)))
                    await asyncio.sleep(0)
                return batches

            for name, total in (("q", base), ("b", [*words("p", 30), *words("b", 10)])):
                results = await asyncio.gather(
                    *(popper(x, k, name) for k, x in enumerate(managers))
                )
                batches = [batch for r in results for batch in r]
                remaining = await shown(reader, name)
                _check_pops(total, batches, remaining)
            # 4 poppers x 12 messages each: 48 of 60; all 40 of the branch
            assert len(await shown(reader, "q")) == 12
            assert await shown(reader, "b") == []
            assert await shown(reader, "p") == words("p", 30)
        finally:
            for x in managers:
                await x.close()


@pytest.mark.parametrize("backend", SQLITE_BACKENDS)
def test_concurrent_poppers_in_threads_never_share_a_message(store: Store) -> None:
    base = words("q", 80)
    with store.sync_manager() as m:
        s = m.create_session("q")
        for text in base:
            s.add_message(msg(text))
        m.save_session(s)
    threads_n = 4
    barrier = threading.Barrier(threads_n)
    results: list[list[list[Any]]] = [[] for _ in range(threads_n)]
    errors: list[BaseException] = []

    def popper(k: int) -> None:
        try:
            with store.sync_manager() as mk:
                s = mk.load_session("q")
                barrier.wait(30)
                for r in range(8):
                    results[k].append(texts(s.pop_messages(1 + (k + r) % 3)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=popper, args=(k,)) for k in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with store.sync_manager() as m:
        remaining = texts(m.load_session("q").get_messages())
    _check_pops(base, [b for r in results for b in r], remaining)
    asked = sum(1 + (k + r) % 3 for k in range(threads_n) for r in range(8))
    assert len(remaining) == len(base) - asked


# -- navigation --------------------------------------------------------------------------


async def test_navigation_fields_branches_tree_and_lineage(store: Store) -> None:
    async with opened(store) as m, reading(store) as reader:
        root = await seed(m, "root", words("r", 4))
        a = await m.create_session("a", branch_from="root", fork_point=2)
        a.add_message(msg("a0"))
        await m.save_session(a)
        b = await m.create_session("b", branch_from="a")
        c = await m.create_session("c", branch_from="root", fork_point=0)
        d = await m.create_session("d", branch_from="b", fork_point=1)
        await seed(m, "elsewhere", ["e"])
        expected = {
            "root": (None, None),
            "a": (root.id, 2),
            "b": (a.id, 3),
            "c": (root.id, 0),
            "d": (b.id, 1),
        }
        infos = {i.name: i for i in await m.list_sessions()}
        for name, (parent_id, point) in expected.items():
            info = infos[name]
            assert (info.parent_id, info.fork_point, info.root_id) == (parent_id, point, root.id)
            assert await m.get_session_info(name) == info
            loaded = await reader.load_session(name)
            assert (loaded.parent_id, loaded.fork_point, loaded.root_id) == (
                parent_id,
                point,
                root.id,
            )
            assert loaded.info() == info
        assert infos["elsewhere"].root_id == infos["elsewhere"].id
        assert infos["elsewhere"].parent_id is None
        assert [i.name for i in await m.list_branches("root")] == ["a", "c"]
        assert [i.name for i in await m.list_branches("a")] == ["b"]
        assert [i.name for i in await m.list_branches("b")] == ["d"]
        assert await m.list_branches("d") == []
        with pytest.raises(SessionNotFoundError):
            await m.list_branches("missing")
        with pytest.raises(SessionNotFoundError):
            await m.get_tree("missing")
        tree = await m.get_tree("d")
        assert [i.name for i in tree] == ["root", "a", "b", "c", "d"]
        _parents_first(tree)
        assert tree == [infos[i.name] for i in tree]
        for name in expected:
            assert await m.get_tree(name) == tree
        assert [i.name for i in await m.get_tree("elsewhere")] == ["elsewhere"]
        assert [i.name for i in await d.get_lineage()] == ["root", "a", "b", "d"]
        assert [i.name for i in await c.get_lineage()] == ["root", "c"]
        assert [i.name for i in await root.get_lineage()] == ["root"]
        # a deleted ancestor ends the walk; deleted sessions (and holders) leave the tree
        await m.delete_session("a")
        assert [i.name for i in await d.get_lineage()] == ["b", "d"]
        assert [i.name for i in await m.get_tree("d")] == ["root", "b", "c", "d"]
        assert [i.name for i in await m.list_branches("root")] == ["c"]
        with pytest.raises(SessionNotFoundError):
            await a.get_lineage()
        await m.delete_session("root")
        tree = await m.get_tree("c")
        assert [i.name for i in tree] == ["b", "c", "d"]
        assert {i.root_id for i in tree} == {root.id}
        assert [i.name for i in await (await reader.load_session("d")).get_lineage()] == [
            "b",
            "d",
        ]
        assert [i.name for i in await c.get_lineage()] == ["c"]
        assert sorted(i.name for i in await m.list_sessions()) == ["b", "c", "d", "elsewhere"]
        assert await shown(reader, "d") == ["r0"]
        assert await shown(reader, "b") == ["r0", "r1", "a0"]
        assert await shown(reader, "c") == []


def _parents_first(tree: list[SessionInfo]) -> None:
    position = {i.id: n for n, i in enumerate(tree)}
    for n, info in enumerate(tree):
        if info.parent_id in position:
            assert position[info.parent_id] < n, info.name


async def test_branch_counters_equal_a_plain_session_with_the_same_messages(
    store: Store,
) -> None:
    messages = [
        {"role": "user", "content": "m" * (i * 7 + 1), "timestamp": TS, "n": i} for i in range(6)
    ]
    extra = {"role": "assistant", "content": "ünïcødé ✓" * 3, "timestamp": TS}

    async def same(m: AsyncSessionManager, branch: str, plain: str) -> None:
        infos = {i.name: i for i in await m.list_sessions()}
        for source in (infos, {n: await m.get_session_info(n) for n in (branch, plain)}):
            one, two = source[branch], source[plain]
            assert one is not None and two is not None
            assert (one.message_count, one.size_bytes) == (two.message_count, two.size_bytes)
        s1, s2 = await m.load_session(branch), await m.load_session(plain)
        assert await s1.get_token_count() == await s2.get_token_count()
        assert await s1.get_messages() == await s2.get_messages()

    async with opened(store) as m, reading(store) as reader:
        parent = await m.create_session("p")
        plain = await m.create_session("plain")
        for x in messages:
            parent.add_message(x)
        for x in messages[:4]:
            plain.add_message(x)
        await m.save_session(parent)
        await m.save_session(plain)
        b = await m.create_session("b", branch_from="p", fork_point=4)
        await same(reader, "b", "plain")
        for s in (b, plain):
            s.add_message(extra)
            await m.save_session(s)
        await same(reader, "b", "plain")
        for s in (b, plain):
            await s.pop_messages(3)  # into the inherited part
        await same(reader, "b", "plain")
        await _clear(m, parent)
        await same(reader, "b", "plain")
        for s in (b, plain):
            s.truncate_messages(1)
            await m.save_session(s)
        await same(reader, "b", "plain")


async def test_list_sessions_never_shows_holder_rows(store: Store) -> None:
    async with opened(store) as m:
        await seed(m, "p", words("p", 5))
        await m.create_session("b", branch_from="p", fork_point=3)
        await m.create_session("c", branch_from="b", fork_point=2)
        await _truncate(m, await m.load_session("p"))  # p2 (b's) moves to a holder
        await m.delete_session("b")  # b's rows (c's) to a holder
        names = [i.name for i in await m.list_sessions()]
        assert sorted(names) == ["c", "p"]
        assert [i.name for i in await m.get_tree("c")] == ["p", "c"]
        if is_sql(store):
            holders = store.execute("SELECT id, name FROM sessions WHERE holder")
            assert holders, "expected hidden holder rows"
            for holder_id, holder_name in holders:
                with pytest.raises(SessionNotFoundError):
                    await m.load_session(session_id=holder_id)
                with pytest.raises(InvalidMessageError):  # no name can reach it
                    await m.get_session_info(holder_name)
        async with reading(store) as reader:
            assert await shown(reader, "c") == ["p0", "p1"]


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.id == "sqlite-core"])
async def test_list_sessions_is_one_statement(store: Store) -> None:
    """On the SQLAlchemy path every statement passes SQLAlchemy's cursor events: listing a
    store full of branches and holders runs one statement, as listing one session does."""
    statements: list[str] = []

    def seen(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        statements.append(statement)

    async def count_listing(m: AsyncSessionManager) -> tuple[int, list[str]]:
        # the background search indexer's statements are not the listing's
        repo = repository_of(m)
        if isinstance(repo, SqlRepository):
            await repo.settle_search_index()
        statements.clear()
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", seen)
        try:
            infos = await m.list_sessions()
        finally:
            sa.event.remove(sa.engine.Engine, "before_cursor_execute", seen)
        queries = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
        return len(infos), queries

    async with opened(store) as m:
        await seed(m, "p", words("p", 3))
        assert (await count_listing(m))[0] == 1
        _, one = await count_listing(m)
        for k in range(10):
            await m.create_session(f"b{k}", branch_from="p", fork_point=k % 4)
        await m.create_session("bb", branch_from="b3")
        await _truncate(m, await m.load_session("p"))
        await m.delete_session("b3")
        listed, many = await count_listing(m)
        assert listed == 11
        assert len(one) == len(many) == 1, many


# -- what the SQL backends store ---------------------------------------------------------


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_a_fork_writes_no_message_row(store: Store) -> None:
    async with opened(store) as m:
        await seed(m, "p", words("p", 20))
        sessions, rows, segments = table_counts(store)
        for k, point in enumerate((None, 0, 10, -1)):
            await m.create_session(f"b{k}", branch_from="p", fork_point=point)
        await m.create_session("bb", branch_from="b2", fork_point=5)
        after = table_counts(store)
        assert after[0] == sessions + 5
        assert after[1] == rows, "a fork copied message rows"
        assert after[2] >= segments
        assert stored_contents(store) == words("p", 20)


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_rows_only_branches_show_are_kept_the_rest_deleted(store: Store) -> None:
    async with opened(store) as m, reading(store) as reader:
        parent = await seed(m, "p", words("p", 6))
        b = await m.create_session("b", branch_from="p", fork_point=3)
        b.add_message(msg("b0"))
        await m.save_session(b)
        await _clear(m, parent)
        assert stored_contents(store) == ["p0", "p1", "p2", "b0"]
        assert await shown(reader, "b") == ["p0", "p1", "p2", "b0"]
        assert await shown(reader, "p") == []
        # truncate: the parent keeps its newest, the branch its part, nothing else stays
        q = await seed(m, "q", words("q", 6))
        await m.create_session("qb", branch_from="q", fork_point=2)
        await _truncate(m, q)
        assert [c for c in stored_contents(store) if str(c).startswith("q")] == ["q0", "q1", "q5"]
        # a pop into the inherited part frees rows nobody else shows
        await m.delete_session("p")
        assert await b.pop_messages(2) == [msg("p2"), msg("b0")]
        assert [c for c in stored_contents(store) if str(c)[0] in "pb"] == ["p0", "p1"]
        assert await shown(reader, "b") == ["p0", "p1"]


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_deleting_every_session_of_a_tree_leaves_nothing(store: Store) -> None:
    orders = [
        ["r", "a", "b", "c", "d"],  # parents first
        ["d", "c", "b", "a", "r"],  # branches first
        ["a", "d", "r", "c", "b"],  # from the middle
    ]
    async with opened(store) as m:
        for order in orders:
            r = await seed(m, "r", words("r", 6), k=1)
            a = await m.create_session("a", branch_from="r", fork_point=4)
            await _add(m, a)
            b = await m.create_session("b", branch_from="a", fork_point=5)
            await _add(m, b)
            await m.create_session("c", branch_from="r", fork_point=2)
            await m.create_session("d", branch_from="b")
            await _truncate(m, r)
            await a.pop_messages(2)
            for name in order:
                await m.delete_session(name)
            assert await m.list_sessions() == []
            assert table_counts(store) == (0, 0, 0), order


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_a_chain_of_forks_stores_rows_linear_in_its_length(store: Store) -> None:
    """An agent regenerating at every turn: each session a fork of the one before with
    one message of its own. 200 forks store one segment each (copies of every ancestor's
    segments would store 20,100), and every level shows its whole conversation. (The
    benchmarks take chains to 1,000 and beyond; 200 keeps the suite's run short.)"""
    depth = 200
    mid = depth // 2
    async with opened(store) as m:
        await seed(m, "c0", ["m0"])
        for k in range(1, depth + 1):
            s = await m.create_session(f"c{k}", branch_from=f"c{k - 1}")
            s.add_message(msg(f"m{k}"))
            await m.save_session(s)
        sessions, rows, segments = table_counts(store)
        assert (sessions, rows) == (depth + 1, depth + 1)
        assert segments == depth, "a fork copied its source's segments"
        async with reading(store) as reader:
            for k in (1, 2, mid, depth):
                assert await shown(reader, f"c{k}") == words("m", k + 1), k
            deepest = await reader.load_session(f"c{depth}")
            assert texts(await deepest.get_messages(50)) == words("m", depth + 1)[-50:]
        # the deepest fork, at the end and in its middle, adds at most two segments
        await m.create_session("f-end", branch_from=f"c{depth}")
        await m.create_session("f-mid", branch_from=f"c{depth}", fork_point=depth // 2)
        assert table_counts(store)[2] <= depth + 2
        async with reading(store) as reader:
            assert await shown(reader, "f-mid") == words("m", depth // 2)
        # changes in the middle of the chain reach none of the others
        middle = await m.load_session(f"c{mid}")
        middle.truncate_messages(3)
        await m.save_session(middle)
        await m.delete_session(f"c{mid + 1}")
        async with reading(store) as reader:
            assert await shown(reader, f"c{mid}") == [f"m{mid - 2}", f"m{mid - 1}", f"m{mid}"]
            assert await shown(reader, f"c{mid + 2}") == words("m", mid + 3)
            assert await shown(reader, f"c{depth}") == words("m", depth + 1)
        for info in await m.list_sessions():
            await m.delete_session(info.name)
        assert table_counts(store) == (0, 0, 0)


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_a_sliding_window_under_branches_keeps_storage_flat(store: Store) -> None:
    """A session kept to its newest messages turn after turn under branches: its old rows
    join one holder the branches' segments continue from, so neither holders nor
    segments pile up, and every branch keeps what it showed."""
    async with opened(store) as m, reading(store) as reader:
        w = await seed(m, "w", words("w", 10))
        await m.create_session("b-end", branch_from="w")
        await m.create_session("b-mid", branch_from="w", fork_point=5)
        b = await m.create_session("b-own", branch_from="w")
        b.add_message(msg("own"))
        await m.save_session(b)
        await m.create_session("bb", branch_from="b-own", fork_point=8)
        views = {name: await shown(reader, name) for name in ("b-end", "b-mid", "b-own", "bb")}
        for turn in range(30):
            w.add_message(msg(f"t{turn}"))
            w.truncate_messages(10)
            await m.save_session(w)
            for name, want in views.items():
                assert await shown(reader, name) == want, (turn, name)
            assert await shown(reader, "w") == [*words("w", 10), *words("t", turn + 1)][-10:]
            sessions, _, segments = table_counts(store)
            assert sessions <= 5 + 1, f"turn {turn}: {sessions - 5} holders"
            assert segments <= 8, f"turn {turn}: {segments} segments"
        for info in await m.list_sessions():
            await m.delete_session(info.name)
        assert table_counts(store) == (0, 0, 0)


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_a_holder_is_continued_only_by_the_rows_that_follow_its_own(store: Store) -> None:
    """A branch's segment on a holder (its source's rows, held after the source cleared)
    followed by a segment on another session's own rows: when that session stops
    showing them, they go to a holder of their own, not onto the end of the first one.
    Joined, the segment's rows would come from two sessions whose places (``ord``,
    ``cum_size``) do not continue each other, and a truncation or fork inside it (found
    by place) read it as damaged. Found by the random cross-process test."""
    async with opened(store) as m, reading(store) as reader:
        a = await seed(m, "a", words("a", 10))
        b = await m.create_session("b", branch_from="a")
        for text in words("b", 4):
            b.add_message(msg(text))
        await m.save_session(b)
        await m.create_session("c", branch_from="b")  # inherits b's segment on a
        a.clear_messages()  # a's rows held for b's (and c's) segment
        await m.save_session(a)
        b.clear_messages()  # b's rows held for c's segment
        await m.save_session(b)
        whole = [*words("a", 10), *words("b", 4)]
        assert await shown(reader, "c") == whole
        # every segment's rows are consecutive places of their owner
        for owner, lo, hi in store.execute("SELECT owner_id, lo, hi FROM session_segments"):
            places = [
                int(p)
                for (p,) in store.execute(
                    "SELECT ord FROM messages WHERE session_id = ? AND id > ? AND id <= ? "
                    "ORDER BY id",
                    owner,
                    lo,
                    hi,
                )
            ]
            assert places == list(range(places[0], places[0] + len(places))), places
        d = await m.create_session("d", branch_from="c", fork_point=12)
        assert await shown(reader, "d") == whole[:12]
        c = await m.load_session("c")
        c.truncate_messages(3)
        await m.save_session(c)
        assert await shown(reader, "c") == whole[-3:]
        assert await shown(reader, "d") == whole[:12]
        d.truncate_messages(5)
        await m.save_session(d)
        assert await shown(reader, "d") == whole[7:12]
        assert stored_contents(store) == whole[7:]  # exactly the rows c and d show
        for info in await m.list_sessions():
            await m.delete_session(info.name)
        assert table_counts(store) == (0, 0, 0)


@pytest.mark.parametrize("backend", SQLITE_AND_POSTGRESQL)
async def test_session_view_shows_what_each_session_shows(store: Store) -> None:
    """The ``session_view`` database view (for sqlite3, Datasette, psql): per session,
    the messages get_messages returns, in order, with their positions and ids."""
    async with opened(store) as m:
        r = await seed(m, "r", words("r", 6))
        a = await m.create_session("a", branch_from="r", fork_point=4)
        await _add(m, a)
        await m.create_session("b", branch_from="a", fork_point=3)
        await m.create_session("c", branch_from="a")
        await m.create_session("empty", branch_from="r", fork_point=0)
        await _truncate_with_add(m, r)  # r0..r3 held for the branches
        await m.delete_session("a")  # a's "later" held for c
        packed = await m.create_session("packed")
        packed.add_message(msg("x" * 5000))
        await m.save_session(packed)
    async with reading(store) as reader:
        for info in await reader.list_sessions():
            s = await reader.load_session(info.name)
            want = await s.get_messages_with_ids()
            got = store.execute(
                "SELECT position, message_id, role, content, session_name FROM session_view "
                "WHERE session_id = ? ORDER BY position",
                info.id,
            )
            assert [g[0] for g in got] == list(range(1, len(want) + 1)), info.name
            assert [g[1] for g in got] == [i for i, _ in want], info.name
            assert all(g[4] == info.name for g in got), info.name
            if info.name != "packed":  # a compressed content is NULL there (see README)
                assert [(g[2], g[3]) for g in got] == [
                    (d["role"], d["content"]) for _, d in want
                ], info.name
        names = {row[0] for row in store.execute("SELECT DISTINCT session_name FROM session_view")}
        assert names == {"r", "b", "c", "packed"}  # no holder, no empty session


@pytest.mark.parametrize("backend", SQLITE_AND_POSTGRESQL)
async def test_forks_inside_a_session_find_the_cut_by_place_also_for_rows_of_other_programs(
    store: Store,
) -> None:
    """A fork inside a session finds its cut and the size before it from each row's place
    and running size (``messages.ord``, ``cum_size``); rows another program inserts get
    theirs from a trigger, so forks and truncations there stay exact."""
    async with opened(store) as m, reading(store) as reader:
        s = await seed(m, "p", words("p", 40))
        sid = s.id
        for i in range(3):  # as another program would, without ord or cum_size
            store.execute(
                "INSERT INTO messages (session_id, role, content, timestamp, size_bytes, "
                "char_count, root_id) VALUES (?, 'user', ?, ?, 10, 2, ?)",
                sid,
                f"x{i}",
                TS,
                sid,
            )
        store.execute(
            "UPDATE sessions SET message_count = message_count + 3, size_bytes = size_bytes "
            "+ 30, last_message_id = (SELECT max(id) FROM messages) WHERE id = ?",
            sid,
        )
        rows = store.execute(
            "SELECT ord, cum_size, size_bytes FROM messages WHERE session_id = ? ORDER BY id",
            sid,
        )
        assert [r[0] for r in rows] == list(range(1, 44))
        assert [r[1] for r in rows] == [sum(x[2] for x in rows[: i + 1]) for i in range(43)]
        everything = [*words("p", 40), "x0", "x1", "x2"]
        for k, point in enumerate((1, 20, 39, 41, -1, -30)):
            b = await m.create_session(f"b{k}", branch_from="p", fork_point=point)
            want = everything[:point]
            assert await shown(reader, f"b{k}") == want, point
            info = await reader.get_session_info(f"b{k}")
            assert info is not None and b.message_count == len(want)
            assert info.size_bytes == sum(r[2] for r in rows[: len(want)]), point
        p = await m.load_session("p")
        p.truncate_messages(5)
        await m.save_session(p)
        assert await shown(reader, "p") == everything[-5:]
        assert await shown(reader, "b2") == everything[:39]


# -- forks beside writers ----------------------------------------------------------------

CONCURRENT_BACKENDS = SQL_BACKENDS
FORKS = 16
"""Forks each concurrency test makes while its writer runs."""
DELETE_DELAYS = (0.0, 0.002, 0.005, 0.01, 0.02)
"""Seconds the delete waits in each round of the fork-beside-delete test: the forks run
into it at every stage, and the later rounds let some of them finish first."""


@pytest.mark.parametrize("backend", CONCURRENT_BACKENDS)
async def test_forks_while_the_parent_grows_are_prefixes(store: Store) -> None:
    async with opened(store) as wm, opened(store) as fm, reading(store) as reader:
        await seed(wm, "p", ["s0"])
        done = asyncio.Event()
        saved = asyncio.Event()  # set by each save of the writer (and when it stops)

        async def writer() -> int:
            s = await wm.load_session("p")
            i = 0
            try:
                while not done.is_set() and i < 400:  # until the forker is done
                    s.add_message(msg(f"w{i}"))
                    if i % 5 == 4:
                        s.add_message(msg(f"w{i}+"))
                    await wm.save_session(s)
                    saved.set()
                    await asyncio.sleep(0)
                    i += 1
            finally:
                done.set()
                saved.set()
            return i

        async def forker() -> list[tuple[str, int | None]]:
            made: list[tuple[str, int | None]] = []
            try:
                for k in range(FORKS):
                    # each fork after a save of the writer, which goes on meanwhile: forks
                    # quicker than a save would otherwise all see one length
                    await saved.wait()
                    if not done.is_set():
                        saved.clear()
                    point = (None, 1)[k % 2]
                    await fm.create_session(f"f{k}", branch_from="p", fork_point=point)
                    made.append((f"f{k}", point))
                    await asyncio.sleep(0)
            finally:
                done.set()
            return made

        writes, made = await asyncio.gather(writer(), forker())
        final = await shown(reader, "p")
        assert len(final) == 1 + writes + writes // 5
        lengths = set()
        for name, point in made:
            got = await shown(reader, name)
            assert got == final[: len(got)], name
            if point == 1:
                assert got == ["s0"]
            lengths.add(len(got))
        assert len(lengths) > 2, "the forks never overlapped the writer"


@pytest.mark.parametrize("backend", CONCURRENT_BACKENDS)
async def test_forks_while_the_parent_is_truncated_and_cleared(store: Store) -> None:
    """Each fork shows one state the parent was saved in (a prefix of it, at a position)."""
    async with opened(store) as wm, opened(store) as fm, reading(store) as reader:
        await seed(wm, "p", ["s0", "s1"])
        states: set[tuple[Any, ...]] = {("s0", "s1")}
        done = asyncio.Event()

        async def writer() -> None:
            s = await wm.load_session("p")
            model = ["s0", "s1"]
            i = 0
            while not done.is_set() and i < 400:  # until the forker is done
                for j in range(3):
                    s.add_message(msg(f"w{i}.{j}"))
                    model.append(f"w{i}.{j}")
                if i % 3 == 1:
                    s.truncate_messages(2)
                    model = model[-2:]
                elif i % 3 == 2:
                    s.clear_messages()
                    s.add_message(msg(f"c{i}"))
                    model = [f"c{i}"]
                await wm.save_session(s)
                states.add(tuple(model))
                await asyncio.sleep(0)
                i += 1

        async def forker() -> list[tuple[str, int | None]]:
            made: list[tuple[str, int | None]] = []
            try:
                for k in range(FORKS):
                    point = (None, 1)[k % 2]  # the parent never shows fewer than 1
                    await fm.create_session(f"f{k}", branch_from="p", fork_point=point)
                    made.append((f"f{k}", point))
                    await asyncio.sleep(0)
            finally:
                done.set()
            return made

        _, made = await asyncio.gather(writer(), forker())
        for name, point in made:
            got = tuple(await shown(reader, name))
            if point is None:
                assert got in states, (name, got)
            else:
                assert any(got == state[:point] for state in states), (name, got)
        # nothing leaked: deleting them all leaves no row
        for info in await reader.list_sessions():
            await reader.delete_session(info.name)
        assert table_counts(store) == (0, 0, 0)


def _state(i: int) -> list[str]:
    return words(f"s{i}.", 2 if i % 2 == 0 else 5)


@pytest.mark.parametrize("backend", SQLITE_AND_POSTGRESQL)
async def test_negative_fork_points_beside_a_writer_replacing_the_messages(
    store: Store,
) -> None:
    """The parent always shows 2 or 5 messages: every ``fork_session(p, -1)`` must
    succeed and show all but the last message of one state the parent was saved in."""
    async with opened(store) as wm, opened(store) as fm, reading(store) as reader:
        await seed(wm, "p", _state(0))
        done = asyncio.Event()

        async def writer() -> None:
            i = 1
            s = await wm.load_session("p")
            while not done.is_set() and i < 400:  # until the forker is done
                s.set_messages([msg(t) for t in _state(i)])
                await wm.save_session(s)
                await asyncio.sleep(0)
                i += 1

        async def forker() -> list[str | BaseException]:
            made: list[str | BaseException] = []
            try:
                for _ in range(FORKS):
                    try:
                        made.append((await fm.fork_session("p", -1)).name)
                    except InvalidMessageError as exc:
                        made.append(exc)
                    await asyncio.sleep(0)
            finally:
                done.set()
            return made

        _, made = await asyncio.gather(writer(), forker())
        failures: list[str] = []
        for name in made:
            if isinstance(name, BaseException):
                failures.append(f"raised {name}")
                continue
            got = await shown(reader, name)
            state = int(got[0][1:].split(".")[0])
            if got != _state(state)[:-1]:
                failures.append(f"{name} shows {got}, the parent showed {_state(state)}")
        assert not failures, failures


@pytest.mark.parametrize("backend", CONCURRENT_BACKENDS)
async def test_forks_while_the_parent_is_deleted_are_whole_or_not_found(store: Store) -> None:
    managers = [store.async_manager(autosave_interval=0) for _ in range(3)]
    try:
        async with opened(store) as dm, reading(store) as reader:
            made = 0
            for r in range(len(DELETE_DELAYS)):
                content = words(f"r{r}-", 5)
                await seed(dm, "p", content)
                # the branch of each round's parent stays whole after its delete
                branch = await dm.create_session(f"keep{r}", branch_from="p", fork_point=3)
                await _add(dm, branch)
                names = [f"f{r}-{k}" for k in range(2 * len(managers))]

                async def fork(m: AsyncSessionManager, name: str, delay: int) -> bool:
                    for _ in range(delay):
                        await asyncio.sleep(0)
                    try:
                        await m.create_session(name, branch_from="p")
                    except SessionNotFoundError:
                        return False
                    return True

                async def delete(delay: float) -> None:
                    await asyncio.sleep(delay)
                    await dm.delete_session("p")

                forks = [fork(managers[k % len(managers)], name, k) for k, name in enumerate(names)]
                _, *outcomes = await asyncio.gather(delete(DELETE_DELAYS[r]), *forks)
                for name, ok in zip(names, outcomes, strict=True):
                    if ok:
                        made += 1
                        assert await shown(reader, name) == content, name
                    else:
                        assert await reader.get_session_info(name) is None, name
                assert await dm.get_session_info("p") is None
            for r in range(len(DELETE_DELAYS)):
                assert await shown(reader, f"keep{r}") == [*words(f"r{r}-", 3), "later"]
                for info in await reader.list_sessions():
                    if info.name.startswith(f"f{r}-"):
                        assert await shown(reader, info.name) == words(f"r{r}-", 5)
            assert made > 0
            for info in await reader.list_sessions():
                await reader.delete_session(info.name)
            assert table_counts(store) == (0, 0, 0)
    finally:
        for x in managers:
            await x.close()


# -- migration 0009 ----------------------------------------------------------------------


def alembic_on(store: Store, *args: str) -> None:
    """The real Alembic CLI on the store's database (SQLite file or PostgreSQL URL)."""
    where = f"url={store.url}" if store.url is not None else f"storage_path={store.path}"
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", where, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)


def columns(store: Store, table: str) -> set[str]:
    if store.url is None:
        return {r[1] for r in store.execute(f"PRAGMA table_info({table})")}
    return {
        r[0]
        for r in store.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", table
        )
    }


def tables(store: Store) -> set[str]:
    if store.url is None:
        return {r[0] for r in store.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    return {
        r[0]
        for r in store.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    }


@pytest.mark.parametrize("backend", SQLITE_AND_POSTGRESQL)
async def test_migration_0009_downgrade_turns_branches_into_copies(store: Store) -> None:
    async with opened(store) as m:
        r = await seed(m, "r", words("r", 6), k="root")
        a = await m.create_session("a", branch_from="r", fork_point=4)
        for text in ("a0", "a1"):
            a.add_message(msg(text))
        await m.save_session(a)
        b = await m.create_session("b", branch_from="a", fork_point=5)  # r0..r3 a0
        b.add_message(msg("b0"))
        b.update_metadata({"k": "b"})
        await m.save_session(b)
        await m.create_session("c", branch_from="r")
        await m.create_session("e", branch_from="r", fork_point=0)
        await _truncate(m, r)  # r keeps r5; r0..r4 are held for the branches
        await (await m.load_session("c")).pop_messages(1)  # c: r0..r4
        await m.delete_session("a")  # a1 goes, a0 is held for b
        plain = await m.create_session("plain")
        plain.add_message({"role": "user", "content": "p", "id": "mine", "timestamp": TS})
        await m.save_session(plain)
    async with reading(store) as reader:
        infos = {i.name: i for i in await reader.list_sessions()}
        before = {name: await reader.load_session(name) for name in infos}
        expected = {name: await s.get_messages() for name, s in before.items()}
    assert texts(expected["b"]) == ["r0", "r1", "r2", "r3", "a0", "b0"]
    assert texts(expected["c"]) == words("r", 5)
    assert texts(expected["r"]) == ["r5"]
    assert expected["e"] == []
    assert sorted(expected) == ["b", "c", "e", "plain", "r"]

    alembic_on(store, "downgrade", "0008")
    assert store.execute("SELECT version_num FROM alembic_version") == [("0008",)]
    assert "session_segments" not in tables(store)
    assert not {"holder", "root_id", "parent_id", "fork_point"} & columns(store, "sessions")
    sessions = store.execute(
        "SELECT id, name, message_count, size_bytes, last_message_id FROM sessions"
    )
    assert sorted(row[1] for row in sessions) == sorted(expected)  # no holder row left
    for sid, name, count, size, last_id in sessions:
        rows = store.execute(
            "SELECT id, role, content, timestamp, size_bytes FROM messages "
            "WHERE session_id = ? ORDER BY id",
            sid,
        )
        want = expected[name]
        assert [(x[1], x[2], x[3]) for x in rows] == [
            (w["role"], w["content"], w["timestamp"]) for w in want
        ], name
        assert count == len(want) == infos[name].message_count, name
        assert size == sum(x[4] for x in rows) == infos[name].size_bytes, name
        assert all(x[0] <= last_id for x in rows), name
    assert store.execute(
        "SELECT count(*) FROM messages WHERE session_id NOT IN (SELECT id FROM sessions)"
    ) == [(0,)]

    # the database at 0008, with sessions (copies now), upgrades: each its own tree.
    # SQLite by the CLI, PostgreSQL by the library's own upgrade (Alembic in-process,
    # what opening a manager runs): both paths, one subprocess less
    if store.url is None:
        alembic_on(store, "upgrade", "head")
    else:
        assert await upgrade_async(store.config) == HEAD_REVISION
    assert store.execute("SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]
    rows = store.execute("SELECT id, root_id, parent_id, fork_point, holder FROM sessions")
    assert len(rows) == len(expected)
    for sid, root, parent, point, holder in rows:
        assert (root, parent, point, bool(holder)) == (sid, None, None, False)
    assert store.execute(
        "SELECT count(*) FROM messages WHERE root_id IS NULL OR root_id <> session_id"
    ) == [(0,)]
    assert table_counts(store)[2] == 0  # no segment
    async with opened(store) as m, reading(store) as reader:
        for name, want in expected.items():
            s = await reader.load_session(name)
            assert await s.get_messages() == want, name
            assert (s.parent_id, s.fork_point, s.root_id) == (None, None, s.id), name
            assert s.metadata == before[name].metadata
            info = await reader.get_session_info(name)
            assert info is not None and info.size_bytes == infos[name].size_bytes
        b2 = await m.load_session("b")
        await _add(m, b2)
        fork = await m.fork_session("b", -1, name="b-again")
        assert await shown(reader, "b-again") == texts(expected["b"])
        assert await shown(reader, "b") == [*texts(expected["b"]), "later"]
        assert fork.parent_id == b2.id
        assert [i.name for i in await m.get_tree("b")] == ["b", "b-again"]
        assert await m.list_branches("r") == []


# -- migration 0010 ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", SQLITE_AND_POSTGRESQL)
async def test_migration_0010_down_writes_links_out_as_segments_and_up_again(
    store: Store,
) -> None:
    """Down to 0009 every inheritance link becomes copies of the segments it inherits
    (what 0009 stored: each session's flat list), with nothing lost and every view the
    same; up again, the flat lists are read as they are and forks link again."""
    async with opened(store) as m:
        await seed(m, "c0", ["m0", "m1"])
        for k in range(1, 6):
            s = await m.create_session(f"c{k}", branch_from=f"c{k - 1}")
            s.add_message(msg(f"m{k + 1}"))
            await m.save_session(s)
        await m.create_session("mid", branch_from="c5", fork_point=3)
        popped = await m.load_session("c2")
        await popped.pop_messages(1)  # c3 takes copies of what it inherited from c2
        await m.delete_session("c4")  # c5 too, from c4
    async with reading(store) as reader:
        expected = {i.name: await shown(reader, i.name) for i in await reader.list_sessions()}
        ids = {
            name: [i for i, _ in await (await reader.load_session(name)).get_messages_with_ids()]
            for name in expected
        }
    assert expected["c5"] == words("m", 7)
    assert expected["mid"] == words("m", 3)
    assert store.execute("SELECT count(*) FROM sessions WHERE inherit_id IS NOT NULL") != [(0,)]

    alembic_on(store, "downgrade", "0009")
    assert store.execute("SELECT version_num FROM alembic_version") == [("0009",)]
    assert not {"inherit_id", "inherit_upto", "inherit_count", "inherit_size"} & columns(
        store, "sessions"
    )
    # each session's view from 0009's flat lists, by raw SQL: its segments, then its rows
    for name, want in expected.items():
        rows = store.execute(
            "SELECT m.id, m.content FROM sessions s JOIN session_segments g "
            "ON g.session_id = s.id JOIN messages m ON m.session_id = g.owner_id "
            "AND m.id > g.lo AND m.id <= g.hi WHERE s.name = ? "
            "UNION ALL SELECT m.id, m.content FROM sessions s JOIN messages m "
            "ON m.session_id = s.id WHERE s.name = ? ORDER BY 1",
            name,
            name,
        )
        assert [r[1] for r in rows] == want, name
        assert [r[0] for r in rows] == ids[name], name

    if store.url is None:
        alembic_on(store, "upgrade", "head")
    else:
        assert await upgrade_async(store.config) == HEAD_REVISION
    assert store.execute("SELECT version_num FROM alembic_version") == [(HEAD_REVISION,)]
    async with opened(store) as m, reading(store) as reader:
        for name, want in expected.items():
            assert await shown(reader, name) == want, name
        stored = table_counts(store)[1]
        await m.create_session("again", branch_from="c5")
        assert table_counts(store)[1] == stored
        assert await shown(reader, "again") == expected["c5"]
        for info in await m.list_sessions():
            await m.delete_session(info.name)
        assert table_counts(store) == (0, 0, 0)

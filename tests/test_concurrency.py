"""Concurrent writers: nothing lost, nothing duplicated, each writer's order kept.

Everything is checked by reading back through a *fresh* manager on the same storage.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import defaultdict
from typing import Any

import pytest

from coda_session import AsyncSessionManager, SessionManager
from tests.support import CROSS_WRITER, Store

TASKS = 50
PER_TASK = 6
THREADS = 8
PER_THREAD = 15


def msg(writer: str, seq: int) -> dict[str, Any]:
    return {"role": "user", "content": f"{writer}:{seq}", "writer": writer, "seq": seq}


def check_writers(messages: list[dict[str, Any]], writers: list[str], per_writer: int) -> None:
    """Every writer's messages present exactly once, in the order it added them."""
    contents = [m["content"] for m in messages]
    assert len(contents) == len(set(contents)), "duplicated messages"
    assert len(messages) == len(writers) * per_writer, (
        f"expected {len(writers) * per_writer} messages, found {len(messages)}"
    )
    seen: dict[str, list[int]] = defaultdict(list)
    for m in messages:
        assert m["content"] == f"{m['writer']}:{m['seq']}"
        seen[m["writer"]].append(m["seq"])
    assert sorted(seen) == sorted(writers)
    for writer in writers:
        assert seen[writer] == list(range(per_writer)), f"{writer}: {seen[writer]}"


async def read_all(store: Store, name: str) -> list[dict[str, Any]]:
    fresh = store.async_manager(message_cache_size=0)
    try:
        session = await fresh.load_session(name)
        messages = await session.get_messages()
        info = await fresh.get_session_info(name)
        assert info is not None
        assert info.message_count == len(messages) == session.message_count
        return messages
    finally:
        await fresh.close()


async def _yield_randomly(rng: random.Random) -> None:
    for _ in range(rng.randrange(3)):
        await asyncio.sleep(0)


# -- asyncio tasks -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_many_tasks_one_session(store: Any, amanager: AsyncSessionManager) -> None:
    session = await amanager.create_session("shared")
    rng = random.Random(1)

    async def writer(w: int) -> None:
        for seq in range(PER_TASK):
            session.add_message(msg(f"t{w}", seq))
            await _yield_randomly(rng)
            await amanager.save_session(session)

    await asyncio.gather(*(writer(w) for w in range(TASKS)))

    assert not session.has_unsaved_changes
    assert session.message_count == TASKS * PER_TASK
    writers = [f"t{w}" for w in range(TASKS)]
    # the writing object itself agrees with storage
    check_writers(await session.get_messages(), writers, PER_TASK)
    stored = await read_all(store, "shared")
    check_writers(stored, writers, PER_TASK)
    assert stored == await session.get_messages()


@pytest.mark.asyncio
async def test_many_tasks_own_sessions(store: Any, amanager: AsyncSessionManager) -> None:
    rng = random.Random(2)

    async def writer(w: int) -> None:
        session = await amanager.create_session(f"own-{w}")
        for seq in range(PER_TASK):
            session.add_message(msg(f"t{w}", seq))
            await _yield_randomly(rng)
            await amanager.save_session(session)
        assert session.message_count == PER_TASK

    await asyncio.gather(*(writer(w) for w in range(TASKS)))

    infos = await amanager.list_sessions()
    assert sorted(i.name for i in infos) == sorted(f"own-{w}" for w in range(TASKS))
    assert all(i.message_count == PER_TASK for i in infos)
    for w in range(TASKS):
        check_writers(await read_all(store, f"own-{w}"), [f"t{w}"], PER_TASK)


@pytest.mark.asyncio
async def test_many_tasks_create_same_name(store: Any, amanager: AsyncSessionManager) -> None:
    """Concurrent create-or-resume of one name yields one session, never an error."""

    async def open_and_write(w: int) -> str:
        session = await amanager.create_session("race")
        session.add_message(msg(f"t{w}", 0))
        await amanager.save_session(session)
        return session.id

    ids = await asyncio.gather(*(open_and_write(w) for w in range(TASKS)))
    assert len(set(ids)) == 1
    assert [i.name for i in await amanager.list_sessions()] == ["race"]
    check_writers(await read_all(store, "race"), [f"t{w}" for w in range(TASKS)], 1)


@pytest.mark.not_on_custom(CROSS_WRITER)
@pytest.mark.asyncio
async def test_two_managers_append_to_same_session(store: Any) -> None:
    first = store.async_manager()
    second = store.async_manager()
    try:
        a = await first.create_session("duo")
        b = await second.create_session("duo")
        assert a.id == b.id
        rng = random.Random(3)

        async def writer(manager: AsyncSessionManager, session: Any, tag: str) -> None:
            for seq in range(20):
                session.add_message(msg(tag, seq))
                await _yield_randomly(rng)
                await manager.save_session(session)

        await asyncio.gather(writer(first, a, "A"), writer(second, b, "B"))

        stored = await read_all(store, "duo")
        check_writers(stored, ["A", "B"], 20)
        # each object, after a final load, sees the other's messages as well
        for manager in (first, second):
            again = await manager.load_session("duo")
            assert await again.get_messages() == stored
    finally:
        await first.close()
        await second.close()


@pytest.mark.not_on_custom(CROSS_WRITER)
@pytest.mark.asyncio
async def test_two_managers_interleaved_batches(store: Any) -> None:
    """Batches added before either saves, saved in alternation: both fully kept."""
    first = store.async_manager()
    second = store.async_manager()
    try:
        a = await first.create_session("batches")
        b = await second.load_session("batches")
        for seq in range(10):
            a.add_message(msg("A", seq))
            b.add_message(msg("B", seq))
            if seq % 3 == 2:
                await first.save_session(a)
                await second.save_session(b)
        await asyncio.gather(first.save_session(a), second.save_session(b))
        assert not a.has_unsaved_changes and not b.has_unsaved_changes
        for manager in (first, second):
            assert (await manager.load_session("batches")).message_count == 20
        check_writers(await read_all(store, "batches"), ["A", "B"], 10)
    finally:
        await first.close()
        await second.close()


# -- the sync shim from threads --------------------------------------------------------


def _run_threads(target: Any, count: int) -> None:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            target(i)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


def test_threads_own_sessions(store: Any, manager: SessionManager) -> None:
    def work(i: int) -> None:
        session = manager.create_session(f"thread-{i}")
        for seq in range(PER_THREAD):
            session.add_message(msg(f"th{i}", seq))
            manager.save_session(session)
        assert session.message_count == PER_THREAD

    _run_threads(work, THREADS)

    assert sorted(i.name for i in manager.list_sessions()) == sorted(
        f"thread-{i}" for i in range(THREADS)
    )
    for i in range(THREADS):
        stored = asyncio.run(read_all(store, f"thread-{i}"))
        check_writers(stored, [f"th{i}"], PER_THREAD)


def test_threads_shared_session(store: Any, manager: SessionManager) -> None:
    session = manager.create_session("thread-shared")

    def work(i: int) -> None:
        for seq in range(PER_THREAD):
            session.add_message(msg(f"th{i}", seq))
            manager.save_session(session)

    _run_threads(work, THREADS)

    writers = [f"th{i}" for i in range(THREADS)]
    assert not session.has_unsaved_changes
    check_writers(session.get_messages(), writers, PER_THREAD)
    check_writers(asyncio.run(read_all(store, "thread-shared")), writers, PER_THREAD)


@pytest.mark.not_on_custom(CROSS_WRITER)
def test_threads_each_with_own_sync_manager(store: Any) -> None:
    """Several SessionManagers (one per thread) writing into one session name."""

    def work(i: int) -> None:
        with store.sync_manager() as own:
            session = own.create_session("many-managers")
            for seq in range(PER_THREAD):
                session.add_message(msg(f"th{i}", seq))
                own.save_session(session)

    _run_threads(work, THREADS)
    check_writers(
        asyncio.run(read_all(store, "many-managers")),
        [f"th{i}" for i in range(THREADS)],
        PER_THREAD,
    )


def test_threads_mixed_readers_and_writers(store: Any, manager: SessionManager) -> None:
    """Readers on their own session objects never see a torn or reordered state."""
    writer_session = manager.create_session("read-while-write")
    stop = threading.Event()

    def work(i: int) -> None:
        if i % 2 == 0:
            for seq in range(PER_THREAD):
                writer_session.add_message(msg(f"w{i}", seq))
                manager.save_session(writer_session)
            return
        while not stop.is_set():
            snapshot = manager.load_session("read-while-write").get_messages()
            per_writer: dict[str, list[int]] = defaultdict(list)
            for m in snapshot:
                per_writer[m["writer"]].append(m["seq"])
            for seqs in per_writer.values():
                assert seqs == list(range(len(seqs))), seqs
            if len(snapshot) == (THREADS // 2) * PER_THREAD:
                return

    timer = threading.Timer(60, stop.set)
    timer.start()
    try:
        _run_threads(work, THREADS)
    finally:
        timer.cancel()
    assert not stop.is_set(), "readers never saw every message"
    check_writers(
        asyncio.run(read_all(store, "read-while-write")),
        [f"w{i}" for i in range(0, THREADS, 2)],
        PER_THREAD,
    )


@pytest.mark.slow
@pytest.mark.asyncio
async def test_concurrent_first_open_of_a_fresh_database(tmp_path: Any) -> None:
    """Several managers opening one brand-new SQLite file at the same moment all succeed
    (the file is created, switched to WAL and migrated once; the others wait for it)."""
    for trial in range(30):
        config = {"session": {"storage_path": str(tmp_path / f"fresh-{trial}")}}
        managers = [AsyncSessionManager(config) for _ in range(8)]
        try:
            results = await asyncio.gather(*(m.open() for m in managers), return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            assert not failures, (
                f"trial {trial}: {len(failures)} of 8 opens failed: {failures[0]!r}"
            )
            for i, manager in enumerate(managers):
                session = await manager.create_session(f"m{i}")
                session.add_message(msg(f"m{i}", 0))
                await manager.save_session(session)
            assert len(await managers[0].list_sessions()) == 8
        finally:
            await asyncio.gather(*(m.close() for m in managers))

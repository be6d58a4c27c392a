"""One AsyncSessionManager used from several event loops in several threads at once.

What the Agents SDK's ``run_sync`` from threads does: each thread runs its own loop (or
one ``asyncio.run`` per call) over one shared manager. Every save that returned must be
stored, and nothing may fail with an error that is not the library's. Before the fix,
on SQLite, five threads saving through a manager first used on a loop that had closed
failed in 4 of 8 rounds ("cannot start a transaction within a transaction", an untyped
``SystemError``) and lost an acknowledged message in 5; custom storage hung (its lock
belonged to one loop) and the ``sqlite-core`` path hung too (SQLAlchemy's pool).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from coda_session import AsyncSessionManager, SessionError
from coda_session.loopsafe import LoopSafeLock
from tests.support import Store, user

THREADS = 5
WRITES = 8


def _threads(target: Any) -> list[BaseException]:
    """Run ``target(i)`` in THREADS threads started together; the exceptions they raised."""
    barrier = threading.Barrier(THREADS)
    failed: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:  # reported by the test
            failed.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return failed


def _in_loops(writes: Callable[[int], Coroutine[Any, Any, None]]) -> list[BaseException]:
    """``asyncio.run(writes(i))`` in THREADS threads started together, each thread with a
    loop of its own; the exceptions they raised."""
    return _threads(lambda i: asyncio.run(writes(i)))


@contextmanager
def _closing(manager: AsyncSessionManager) -> Iterator[AsyncSessionManager]:
    try:
        yield manager
    finally:
        asyncio.run(manager.close())


class _Acks:
    """The messages whose save returned, in any thread."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.lock = threading.Lock()

    async def save(self, manager: AsyncSessionManager, session: Any, text: str) -> None:
        session.add_message(user(text))
        await manager.save_session(session)
        with self.lock:
            self.texts.append(text)

    async def write(self, manager: AsyncSessionManager, name: str, text: str) -> None:
        """Resume ``name`` (made if missing), add ``text`` and save."""
        await self.save(manager, await manager.create_session(name), text)


def _stored(manager: AsyncSessionManager, name: str) -> list[str]:
    async def read() -> list[str]:
        session = await manager.load_session(name)
        return [m["content"] for m in await session.get_messages()]

    return asyncio.run(read())


def _check(manager: AsyncSessionManager, name: str, acked: list[str], failed: Any) -> None:
    assert failed == [], f"errors in the threads: {failed!r}"
    stored = _stored(manager, name)
    assert sorted(stored) == sorted(acked), "an acknowledged save is missing (or doubled)"
    assert len(stored) == len(set(stored))


def test_threads_with_loops_after_the_first_loop_closed(store: Store) -> None:
    """The issue's repro: first used on a loop that has since closed, then five threads,
    each with its own loop, save into one session through the one manager."""
    manager = store.async_manager(autosave_interval=0)
    acks = _Acks()
    acked = acks.texts

    async def first() -> None:
        session = await manager.create_session("shared")
        session.add_message(user("before"))
        await manager.save_session(session)

    asyncio.run(first())
    acked.append("before")

    async def writes(i: int) -> None:
        for k in range(WRITES):
            await acks.write(manager, "shared", f"t{i}-{k}")

    with _closing(manager):
        _check(manager, "shared", acked, _in_loops(writes))


def test_threads_each_running_a_loop_per_write(store: Store) -> None:
    """First used inside the threads, each thread running one ``asyncio.run`` per write:
    loops come and go in every thread while the others write."""
    manager = store.async_manager(autosave_interval=0)
    acks = _Acks()
    acked = acks.texts

    def work(i: int) -> None:
        for k in range(3):
            asyncio.run(acks.write(manager, "per-write", f"t{i}-{k}"))

    with _closing(manager):
        _check(manager, "per-write", acked, _threads(work))


def test_one_session_object_saved_from_several_loops(store: Store) -> None:
    """One session object, changed and saved from five threads' loops at once: its save
    lock serves every loop, so no message is sent twice or dropped."""
    manager = store.async_manager(autosave_interval=0)
    session = asyncio.run(manager.create_session("one-object"))

    async def writes(i: int) -> None:
        for k in range(WRITES):
            session.add_message(user(f"t{i}-{k}"))
            await manager.save_session(session)

    with _closing(manager):
        failed = _in_loops(writes)
        expected = [f"t{i}-{k}" for i in range(THREADS) for k in range(WRITES)]
        _check(manager, "one-object", expected, failed)
        assert not session.has_unsaved_changes
        assert session.message_count == len(expected)


def test_reads_and_writes_from_several_loops(store: Store) -> None:
    """Readers and writers on different loops at once: reads never fail and see whole
    saves (a prefix of the writer's messages, in order)."""
    manager = store.async_manager(autosave_interval=0)
    asyncio.run(manager.create_session("read-write"))

    async def write() -> None:
        session = await manager.load_session("read-write")
        for k in range(WRITES):
            session.add_message(user(f"w-{k}"))
            await manager.save_session(session)

    async def read() -> None:
        for _ in range(WRITES):
            session = await manager.load_session("read-write")
            got = [m["content"] for m in await session.get_messages()]
            assert got == [f"w-{k}" for k in range(len(got))]
            await manager.list_sessions()

    async def work(i: int) -> None:
        await (write() if i == 0 else read())

    with _closing(manager):
        _check(manager, "read-write", [f"w-{k}" for k in range(WRITES)], _in_loops(work))


def test_close_from_one_loop_while_others_write(store: Store) -> None:
    """A manager closed by one thread while others write: a write either lands (and is
    stored) or raises the library's own error; never an untyped one."""
    manager = store.async_manager()  # close() flushes what the writers left unsaved
    acks = _Acks()
    acked = acks.texts
    asyncio.run(manager.create_session("closing"))

    async def writes(i: int) -> None:
        if i == 0:
            await asyncio.sleep(0)
            await manager.close()
            return
        for k in range(WRITES):
            await acks.write(manager, "closing", f"t{i}-{k}")

    failed = _in_loops(writes)
    assert all(isinstance(e, SessionError) for e in failed), failed
    with _closing(store.async_manager()) as reopened:
        stored = _stored(reopened, "closing")
        assert set(acked) <= set(stored)


@pytest.mark.parametrize("pool", [1, 2])
def test_sqlite_loop_connection_shared_by_threads(tmp_path: Any, pool: int) -> None:
    """SQLite with and without the loop connection: its transactions never interleave
    between threads (each thread that finds it in use runs on a worker instead)."""
    manager = AsyncSessionManager(
        {
            "session": {
                "storage_path": str(tmp_path / "s"),
                "autosave_interval": 0,
                "connection_pool_size": pool,
            }
        }
    )
    acks = _Acks()
    acked = acks.texts

    async def writes(i: int) -> None:
        session = await manager.create_session(f"own-{i}")
        for k in range(WRITES * 3):
            await acks.save(manager, session, f"t{i}-{k}")

    with _closing(manager):
        failed = _in_loops(writes)
        assert failed == []
        stored = [c for i in range(THREADS) for c in _stored(manager, f"own-{i}")]
        assert sorted(stored) == sorted(acked)


# -- the lock behind it ---------------------------------------------------------------


def test_loop_safe_lock_serves_waiters_of_several_loops_in_order() -> None:
    lock = LoopSafeLock()
    order: list[int] = []
    held = threading.Event()
    release = threading.Event()

    async def holder() -> None:
        await lock.acquire()
        held.set()
        await asyncio.to_thread(release.wait)
        order.append(0)
        lock.release()

    async def waiter(i: int) -> None:
        async with lock:
            order.append(i)

    first = threading.Thread(target=asyncio.run, args=(holder(),))
    first.start()
    held.wait()
    others = [threading.Thread(target=asyncio.run, args=(waiter(i),)) for i in (1, 2, 3)]
    for t in others:
        t.start()
    while lock.waiting < 3:
        threading.Event().wait(0.001)
    release.set()
    for t in [first, *others]:
        t.join(timeout=30)
    assert order[0] == 0 and sorted(order[1:]) == [1, 2, 3]
    assert not lock.locked()


async def test_loop_safe_lock_waiter_cancelled_as_it_is_handed_the_lock() -> None:
    lock = LoopSafeLock()
    await lock.acquire()
    waiting = asyncio.ensure_future(lock.acquire())
    await asyncio.sleep(0)
    lock.release()  # hands it to the waiter (woken on its loop later)
    waiting.cancel()  # before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not lock.locked()  # passed on, not lost
    async with lock:
        assert lock.locked()


async def test_loop_safe_lock_waiter_cancelled_while_waiting() -> None:
    lock = LoopSafeLock()
    await lock.acquire()
    waiting = asyncio.ensure_future(lock.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    lock.release()
    assert not lock.locked()

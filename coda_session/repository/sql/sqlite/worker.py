"""A thread of our own per SQLite connection: jobs in, results back to the caller's loop.

Each :class:`Worker` owns one stdlib ``sqlite3`` connection, made and used only on its
thread, and runs the jobs handed to it in order, each to its end. The caller awaits a
future of its own running loop (any loop: nothing here is bound to one), so a whole
transaction costs one hand-off, not one per statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Worker"]

T = TypeVar("T")


class _Job:
    # The outcome travels in the job, not in the future: a future (and the loop's handle
    # that wakes its waiter) outlives the await by a moment, and would keep a big result
    # (10k SessionInfo objects) alive into the caller's next step
    __slots__ = ("args", "fn", "future", "loop", "outcome")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[None],
    ) -> None:
        self.fn, self.args, self.loop, self.future = fn, args, loop, future
        self.outcome: tuple[bool, Any] | None = None


def _wake(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.set_result(None)


class Worker:
    """One daemon thread that owns one ``sqlite3`` connection.

    ``connect`` is called on the thread and makes the connection; every job is then
    ``fn(connection, *args)``. A daemon: a store its owner forgot to close never keeps the
    interpreter from exiting (what a commit wrote is safe in the WAL either way).
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self._connect = connect
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self._running: _Job | None = None
        self._running_lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """True while a job runs or waits."""
        return self._running is not None or not self._jobs.empty()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            if job.future.cancelled():  # its caller gave up before it started
                continue
            with self._running_lock:
                self._running = job
            try:
                if self._conn is None:
                    self._conn = self._connect()
                job.outcome = (True, job.fn(self._conn, *job.args))
            except BaseException as exc:
                job.outcome = (False, exc)
            finally:
                with self._running_lock:
                    self._running = None
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
                job.loop.call_soon_threadsafe(_wake, job.future)
            del job  # nothing of it stays referenced while the thread waits for the next
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def call(self, fn: Callable[..., T], *args: Any, interruptible: bool = False) -> T:
        """Run ``fn(connection, *args)`` on the thread and wait for it.

        If the caller is cancelled, a job that has not started is dropped; one that runs
        goes on to its end (a write commits or rolls back whole), unless
        ``interruptible`` (a read), which is then interrupted so it does not hold the
        connection for a result nobody wants.
        """
        if self._stopped:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        job = _Job(fn, args, loop, future)
        self._jobs.put(job)
        try:
            await future
            outcome, job.outcome = job.outcome, None
            assert outcome is not None
            ok, value = outcome
            del outcome
            if not ok:
                raise value
            result: T = value
            return result
        except asyncio.CancelledError:
            if interruptible:
                with self._running_lock:
                    if self._running is job and self._conn is not None:
                        self._conn.interrupt()
            raise

    def stop(self) -> None:
        """Close the connection once the jobs already handed over are done."""
        if not self._stopped:
            self._stopped = True
            self._jobs.put(None)

    async def aclose(self) -> None:
        """:meth:`stop`, and wait for the thread to finish without blocking the loop."""
        self.stop()
        while self._thread.is_alive():  # noqa: ASYNC110 - a thread, not a task
            await asyncio.sleep(0.001)

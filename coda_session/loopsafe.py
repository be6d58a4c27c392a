"""A lock for tasks of any event loop, in any thread.

``asyncio.Lock`` belongs to the loop it first waits on, and is not thread-safe: one manager
used at the same time from several threads, each running its own loop (an agent
framework's ``run_sync`` from threads, or ``asyncio.run`` per call), needs a lock whose
waiters may sit on different loops.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from types import TracebackType

__all__ = ["LoopSafeLock", "loop_shutting_down"]


def loop_shutting_down(loop: asyncio.AbstractEventLoop) -> bool:
    """True once ``loop.shutdown_asyncgens()`` ran (``asyncio.run`` is returning): an async
    generator started now is never closed by the loop (asyncio warns about it), so a pool
    made now must close its connections itself. asyncio keeps the flag private; a loop
    without it counts as running."""
    return bool(getattr(loop, "_asyncgens_shutdown_called", False))


class LoopSafeLock:
    """A lock that tasks of several event loops (in several threads) may share.

    Not reentrant, and not owned: :meth:`release` may be called from any thread or loop,
    so a task may hand the lock to work that finishes it (a save's write releases the lock
    when it lands, even if the task that started it was cancelled). Waiters are served in
    order; the lock passes straight to the next one, woken on its own loop.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._locked = False
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = (
            collections.deque()
        )

    def locked(self) -> bool:
        """True while someone holds the lock (or it is being handed to a waiter)."""
        return self._locked

    @property
    def waiting(self) -> int:
        """How many tasks wait for the lock now."""
        return len(self._waiters)

    async def acquire(self) -> None:
        """Wait for the lock and take it."""
        with self._mutex:
            if not self._locked:
                self._locked = True
                return
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, future))
        try:
            await future
        except BaseException:
            with self._mutex:
                waiting = any(f is future for _, f in self._waiters)
                if waiting:
                    self._waiters = collections.deque(
                        (lp, f) for lp, f in self._waiters if f is not future
                    )
            if not waiting and future.done() and not future.cancelled():
                # handed the lock, but cancelled before it could run: pass it on
                self.release()
            # (handed it while the future was being cancelled: _grant passes it on)
            raise

    def release(self) -> None:
        """Release the lock: the next waiter gets it."""
        with self._mutex:
            while self._waiters:
                loop, future = self._waiters.popleft()
                try:
                    loop.call_soon_threadsafe(self._grant, future)
                except RuntimeError:
                    continue  # its loop is closed: nobody waits there any more
                return  # still locked: it is the waiter's now
            self._locked = False

    def _grant(self, future: asyncio.Future[None]) -> None:
        if future.done():  # cancelled before its turn came
            self.release()
        else:
            future.set_result(None)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

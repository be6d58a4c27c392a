"""The blocking runtime: a private event loop run by the calling thread.

What the blocking API (:mod:`coda_session.sync`) and the blocking operator functions
(:mod:`coda_session.migrate`) stand on: :class:`LoopRunner` (the loop, one call at a time,
a helper thread for callers that already run a loop), SIGINT held during a call, and
closing what was left open when the interpreter exits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import signal
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol, TypeVar

from .errors import ManagerClosedError, SessionError
from .exithook import before_threads_join

__all__ = [
    "CANCEL_WAIT",
    "CLOSE_WAIT",
    "FORKED",
    "HelperThread",
    "LoopRunner",
    "close_at_exit",
    "forget_at_exit",
    "interrupts_held",
    "run_blocking",
]

T = TypeVar("T")

logger = logging.getLogger("coda_session")


class Closeable(Protocol):
    def close(self) -> None: ...


_live: weakref.WeakSet[Closeable] = weakref.WeakSet()

#: What a call of a blocking manager inherited across ``fork()`` raises in the child: the
#: manager's lock, loop and connections belong to the parent (another of its threads may
#: have held them at the fork, and would never release them here).
FORKED = (
    "this manager was created in another process (the child of a fork() inherited it): "
    "open a new manager in the child"
)
_pid = os.getpid()


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()
    # the parent's managers are not this process's to close at exit (their connections
    # and threads stayed behind)
    _live.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_all_at_exit() -> None:
    for manager in list(_live):
        # at exit there is nobody left to tell about a failure
        with contextlib.suppress(Exception):
            manager.close()


def close_at_exit(closeable: Closeable) -> None:
    """Close ``closeable`` when the interpreter exits, unless it is forgotten first
    (:func:`forget_at_exit`) or garbage-collected."""
    # before the interpreter joins threads, so managers never closed by their owner are
    # closed cleanly (their files checkpointed) instead of abandoned
    before_threads_join(_close_all_at_exit)
    _live.add(closeable)


def forget_at_exit(closeable: Closeable) -> None:
    """Undo :func:`close_at_exit` (the object was closed by its owner)."""
    _live.discard(closeable)


#: How long close() waits for a call another thread has under way before cancelling it,
#: and then for the cancelled call to let go of the loop.
CLOSE_WAIT = 10.0
CANCEL_WAIT = 5.0


class LoopRunner:
    """The blocking API's private event loop, run by the thread that calls.

    A call takes the runner's lock and runs the loop in the calling thread until its
    coroutine is done, so calls from several threads run one at a time and no thread
    hand-off is paid: that hand-off (two thread wake-ups) measured 85-115 µs here, more
    than a whole durable append. A thread that already runs an event loop of its own (a
    notebook) cannot run a second one, so its calls are handed to a helper thread that
    runs the loop for it. Between calls the loop does not run; the manager's autosave
    runs from its own timer thread through :meth:`call` like any other caller.
    """

    def __init__(self) -> None:
        self._pid = _pid
        self._loop = asyncio.new_event_loop()
        # a manager dropped without close() (and not reached by the exit hook yet): its
        # loop is closed when the runner goes, instead of warning from the collector
        weakref.finalize(self, _close_idle_loop, self._loop)
        self._lock = threading.Lock()
        self._task: asyncio.Task[Any] | None = None
        self._stopped = False
        self._closing = False
        self._deferred: list[Callable[[], Awaitable[Any]] | None] = []
        self._owner: int | None = None  # the thread running a call (holding the lock)
        self._helper: HelperThread | None = None
        self._helper_lock = threading.Lock()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self._pid != _pid:  # inherited across fork(): its lock may never be released
            raise SessionError(FORKED)
        running = asyncio._get_running_loop()
        if running is self._loop:
            raise SessionError("the blocking API cannot be called from its own event loop")
        if running is not None:
            handed: T = self._helper_thread().call(self._run, fn, args)
            return handed
        return self._run(fn, args)

    def _run(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        try:
            with self._lock, interrupts_held(self._interrupt):
                self._owner = threading.get_ident()
                try:
                    if self._stopped:
                        raise ManagerClosedError("the session manager is closed")
                    return self._run_locked(fn, args)
                finally:
                    self._run_deferred()
                    self._owner = None
        finally:
            # a signal handler may close the manager in the moment between the check above
            # and the lock's release: that close runs now, not at the next call
            if self._deferred and not self._stopped:
                with self._lock:
                    self._run_deferred()

    def _run_deferred(self) -> None:
        if self._deferred:  # closed from inside a call (a signal handler)
            try:
                self._finish_locked(self._deferred.pop())
            except Exception as exc:  # the call's own outcome is what it reports
                logger.warning("closing the session manager failed: %s", exc)

    def _run_locked(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        task = self._task = self._loop.create_task(_awaited(fn, args))
        try:
            result: T = self._loop.run_until_complete(task)
            return result
        except asyncio.CancelledError:
            self._settle()  # a save's shielded write lands before anything else runs
            if self._closing:  # cancelled by a close() that could wait no longer
                raise ManagerClosedError(
                    "the session manager was closed during this call"
                ) from None
            raise
        except BaseException:
            if not task.done():  # interrupted (Ctrl-C): unwind the call now
                task.cancel()
                with contextlib.suppress(BaseException):
                    self._loop.run_until_complete(task)
            raise
        finally:
            self._task = None

    def _settle(self) -> None:
        pending = asyncio.all_tasks(self._loop)
        if pending:
            self._loop.run_until_complete(asyncio.wait(pending, timeout=CLOSE_WAIT))

    def _interrupt(self) -> None:
        # Ctrl-C during a call: cancel it as asyncio.run() would; it ends at its next
        # await, never inside a transaction, and the caller then gets KeyboardInterrupt.
        # Scheduled, not done here: a signal handler runs between any two bytecodes, and
        # cancelling from there could land inside asyncio's own callbacks.
        task = self._task
        if task is not None and asyncio._get_running_loop() is self._loop:
            self._loop.call_soon_threadsafe(task.cancel)  # a no-op once that call is over

    def _helper_thread(self) -> HelperThread:
        with self._helper_lock:
            if self._stopped:
                raise ManagerClosedError("the session manager is closed")
            if self._helper is None:
                self._helper = HelperThread()
            return self._helper

    def close(self, last: Callable[[], Awaitable[Any]] | None = None) -> bool:
        """Run ``last`` (the manager's close) as the final call, then stop for good: later
        calls raise :class:`ManagerClosedError`.

        A call another thread has under way finishes first; after ``CLOSE_WAIT`` seconds
        it is cancelled (it raises :class:`ManagerClosedError`), and if it still holds the
        loop ``CANCEL_WAIT`` seconds later (blocked outside the loop's reach), this returns
        and the close runs in that thread when its call ends (logged). Called from inside
        one of this runner's calls (a signal handler), it returns at once and the close
        runs when that call ends (and this returns False).
        """
        if self._pid != _pid:
            # inherited across fork(): the loop, its lock and what it holds are the
            # parent's; dropping them touches nothing of the parent's
            self._stopped = True
            return True
        self._closing = True
        if asyncio._get_running_loop() is self._loop or self._owner == threading.get_ident():
            # inside one of our calls (a signal handler), also outside its loop: waiting
            # for the lock this thread holds would wait for itself
            self._deferred.append(last)
            return False
        if asyncio._get_running_loop() is not None:
            with self._helper_lock:
                if self._helper is None:
                    self._helper = HelperThread()
                helper = self._helper
            helper.call(self._close, last)
        else:
            with interrupts_held(None):
                self._close(last)
        with self._helper_lock:
            done, self._helper = self._helper, None
        if done is not None:
            done.stop()
        return True

    def _close(self, last: Callable[[], Awaitable[Any]] | None) -> None:
        if not self._lock.acquire(timeout=CLOSE_WAIT):
            task = self._task
            if task is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    self._loop.call_soon_threadsafe(task.cancel)
            if not self._lock.acquire(timeout=CANCEL_WAIT):
                # the thread running that call closes the manager when the call ends
                self._deferred.append(last)
                if not self._lock.acquire(blocking=False):
                    logger.warning(
                        "session manager close: another thread's call is not ending; "
                        "the manager closes when it does"
                    )
                    return
                # the call ended just now, maybe before it could see the request
                last = self._deferred.pop() if self._deferred else None
        try:
            self._finish_locked(last)
        finally:
            self._lock.release()

    def _finish_locked(self, last: Callable[[], Awaitable[Any]] | None) -> None:
        if self._stopped:
            return
        loop = self._loop
        try:
            if last is not None:
                self._run_locked(last, ())
        finally:
            self._stopped = True
            try:
                # anything a call left behind (a save still landing after Ctrl-C) ends first
                leftover = asyncio.all_tasks(loop)
                if leftover:
                    loop.run_until_complete(asyncio.wait(leftover, timeout=10))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()


@contextlib.contextmanager
def interrupts_held(on_interrupt: Callable[[], None] | None) -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) while the main thread runs the manager's loop.

    Python raises ``KeyboardInterrupt`` between any two bytecodes of the main thread:
    inside a transaction's bookkeeping it could leave the transaction open or a saved
    batch unrecorded (sent again by the next save). While held, Ctrl-C calls
    ``on_interrupt`` (which cancels the call at its next await) and is delivered to the
    previous handler once the call is over. Other threads never receive signals.
    A SIGINT the process ignores (``SIG_IGN``, as for ``cmd &`` from a non-interactive
    shell) stays ignored: it neither cancels the call nor is delivered later.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None or previous == signal.SIG_IGN:
        # installed outside Python (cannot be put back), or ignored: leave it as it is
        yield
        return
    caught: list[tuple[int, Any]] = []

    def hold(signum: int, frame: Any) -> None:
        if not caught and on_interrupt is not None:
            on_interrupt()
        caught.append((signum, frame))

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            if callable(previous):
                previous(*caught[0])
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGINT)


def _close_idle_loop(loop: asyncio.AbstractEventLoop) -> None:
    if not loop.is_running() and not loop.is_closed():
        loop.close()


async def _awaited(fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
    return await fn(*args)


class HelperThread:
    """A thread that makes calls for threads that already run an event loop."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # no job is queued after the stop sentinel
        self._stopped = False
        self._thread = threading.Thread(target=self._work, name="coda-session-helper", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        def job() -> None:
            try:
                result.set_result(fn(*args))
            except BaseException as exc:
                result.set_exception(exc)

        with self._lock:
            if self._stopped:
                raise ManagerClosedError("the session manager is closed")
            self._jobs.put(job)
        return result.result()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._jobs.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=15)


def run_blocking(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run one coroutine function to completion on a short-lived private loop."""
    runner = LoopRunner()
    try:
        return runner.call(fn, *args)
    finally:
        runner.close()

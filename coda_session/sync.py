"""SessionManager and Session: the blocking API, a thin mirror of the async one.

Every call that may do I/O runs the async implementation to completion on the manager's
own private event loop; nothing is implemented twice. It works in plain scripts, from
several threads, and from code that already runs an event loop (a notebook), since that
loop is never the one used.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import queue
import signal
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from .config import SessionConfig
from .errors import ManagerClosedError, SessionError
from .manager import AsyncSessionManager, build_repository
from .models import SessionInfo
from .repository.protocol import Repository
from .session import AsyncSession
from .storage import SessionStorage, running_storage
from .transfer import Source, Target

__all__ = ["Session", "SessionManager", "run_blocking"]

T = TypeVar("T")

logger = logging.getLogger("coda_session")

_live: weakref.WeakSet[SessionManager] = weakref.WeakSet()
_hook_lock = threading.Lock()
_hook_installed = False


def _close_all_at_exit() -> None:
    for manager in list(_live):
        # at exit there is nobody left to tell about a failure
        with contextlib.suppress(Exception):
            manager.close()


def _install_exit_hook() -> None:
    global _hook_installed
    with _hook_lock:
        if _hook_installed:
            return
        # runs before the interpreter joins threads, so managers never closed by their
        # owner are closed cleanly (their files checkpointed) instead of abandoned
        register = getattr(threading, "_register_atexit", None)
        if register is not None:
            register(_close_all_at_exit)
        else:  # pragma: no cover - CPython has had it since 3.9
            import atexit

            atexit.register(_close_all_at_exit)
        _hook_installed = True


#: How long close() waits for a call another thread has under way before cancelling it,
#: and then for the cancelled call to let go of the loop.
CLOSE_WAIT = 10.0
CANCEL_WAIT = 5.0


class _LoopRunner:
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
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._task: asyncio.Task[Any] | None = None
        self._stopped = False
        self._closing = False
        self._deferred: list[Callable[[], Awaitable[Any]] | None] = []
        self._helper: _Helper | None = None
        self._helper_lock = threading.Lock()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        running = asyncio._get_running_loop()
        if running is self._loop:
            raise SessionError("the blocking API cannot be called from its own event loop")
        if running is not None:
            handed: T = self._helper_thread().call(self._run, fn, args)
            return handed
        return self._run(fn, args)

    def _run(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        with self._lock, _interrupts_held(self._interrupt):
            if self._stopped:
                raise ManagerClosedError("the session manager is closed")
            try:
                return self._run_locked(fn, args)
            finally:
                if self._deferred:  # closed from inside this call (a signal handler)
                    try:
                        self._finish_locked(self._deferred.pop())
                    except Exception as exc:  # this call's own outcome is what it reports
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

    def _helper_thread(self) -> _Helper:
        with self._helper_lock:
            if self._stopped:
                raise ManagerClosedError("the session manager is closed")
            if self._helper is None:
                self._helper = _Helper()
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
        self._closing = True
        if asyncio._get_running_loop() is self._loop:  # inside one of our calls
            self._deferred.append(last)
            return False
        if asyncio._get_running_loop() is not None:
            with self._helper_lock:
                if self._helper is None:
                    self._helper = _Helper()
                helper = self._helper
            helper.call(self._close, last)
        else:
            with _interrupts_held(None):
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
def _interrupts_held(on_interrupt: Callable[[], None] | None) -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) while the main thread runs the manager's loop.

    Python raises ``KeyboardInterrupt`` between any two bytecodes of the main thread:
    inside a transaction's bookkeeping it could leave the transaction open or a saved
    batch unrecorded (sent again by the next save). While held, Ctrl-C calls
    ``on_interrupt`` (which cancels the call at its next await) and is delivered to the
    previous handler once the call is over. Other threads never receive signals.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:  # installed outside Python: cannot be put back, leave it
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


async def _awaited(fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
    return await fn(*args)


class _Helper:
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
    runner = _LoopRunner()
    try:
        return runner.call(fn, *args)
    finally:
        runner.close()


class Session:
    """A conversation, as returned by :class:`SessionManager`: the same names and signatures
    as :class:`AsyncSession`, none of them awaitable. Thread-safe."""

    def __init__(self, manager: SessionManager, inner: AsyncSession) -> None:
        self._manager = manager
        self._inner = inner

    @property
    def id(self) -> str:
        """The session's id."""
        return self._inner.id

    @property
    def name(self) -> str:
        """The session's unique name."""
        return self._inner.name

    @property
    def created_at(self) -> datetime:
        """When the session was created (aware, UTC)."""
        return self._inner.created_at

    @property
    def updated_at(self) -> datetime:
        """When the session was last saved (aware, UTC)."""
        return self._inner.updated_at

    @property
    def metadata(self) -> dict[str, Any]:
        """A copy of the session's metadata, unsaved updates included."""
        return self._inner.metadata

    @property
    def message_count(self) -> int:
        """How many messages the session shows now (stored and unsaved)."""
        return self._inner.message_count

    @property
    def has_unsaved_changes(self) -> bool:
        """True when ``save_session`` would write something."""
        return self._inner.has_unsaved_changes

    @property
    def messages(self) -> list[dict[str, Any]]:
        """All messages (``get_messages()``); assigning replaces them (``set_messages``)."""
        return self.get_messages()

    @messages.setter
    def messages(self, messages: Iterable[Mapping[str, Any]]) -> None:
        self.set_messages(messages)

    def info(self) -> SessionInfo:
        """The :class:`SessionInfo` of the saved state as this object last saw it."""
        return self._inner.info()

    def add_message(self, message: Mapping[str, Any]) -> None:
        """Append a message (see :meth:`AsyncSession.add_message`)."""
        self._inner.add_message(message)

    def set_messages(self, messages: Iterable[Mapping[str, Any]]) -> None:
        """Replace every message (validated first: one bad message changes nothing)."""
        self._inner.set_messages(messages)

    def clear_messages(self) -> None:
        """Remove every message (written by the next save)."""
        self._inner.clear_messages()

    def truncate_messages(self, max_messages: int) -> None:
        """Keep only the newest ``max_messages`` messages (written by the next save)."""
        self._inner.truncate_messages(max_messages)

    def update_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Merge ``metadata`` into the session's metadata (top-level keys replace)."""
        self._inner.update_metadata(metadata)

    def get_messages(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The messages oldest first as plain dicts; the newest ``limit`` with a limit."""
        cached = self._inner._cached_messages(limit)
        if cached is not None:
            return cached
        return self._manager._call(self._inner.get_messages, limit)

    def get_token_count(self) -> int:
        """An estimate of the tokens the messages take (see :meth:`AsyncSession.get_token_count`)."""
        return self._manager._call(self._inner.get_token_count)

    def __repr__(self) -> str:
        return f"<Session {self.name!r} messages={self.message_count}>"


class SessionManager:
    """The blocking session manager for scripts and notebooks.

    The same methods as :class:`AsyncSessionManager`, not awaitable. Use it as a context
    manager or call :meth:`close`; a manager left open is closed when the interpreter exits.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | SessionConfig | None = None,
        storage: SessionStorage | Repository | None = None,
    ) -> None:
        settings = SessionConfig.from_mapping(config)
        self._async = AsyncSessionManager(
            settings, build_repository(settings, storage, private_loop=True)
        )
        # the loop runs only during calls, so the autosave timer lives in a thread of its own
        self._async._autosave_in_loop = False
        self._lock = threading.Lock()
        self._runner: _LoopRunner | None = _LoopRunner()
        self._autosave_stop = threading.Event()
        self._autosaver: threading.Thread | None = None
        if settings.autosave_interval > 0:
            self._autosaver = threading.Thread(
                target=self._autosave, name="coda-session-autosave", daemon=True
            )
            self._autosaver.start()
        _install_exit_hook()
        _live.add(self)

    def _autosave(self) -> None:
        interval = self._async.config.autosave_interval
        while not self._autosave_stop.wait(interval):
            try:
                self._call(self._async._autosave_once)
            except ManagerClosedError:
                return
            except Exception:
                continue  # the flush logged it and keeps it on the session for its next call

    @property
    def config(self) -> SessionConfig:
        """The validated configuration."""
        return self._async.config

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._async.closed

    def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        runner = self._runner
        if runner is None:
            raise ManagerClosedError("the session manager is closed")
        if running_storage() is self._async._repository:
            raise SessionError("a storage method cannot call the manager that is running it")
        return runner.call(functools.partial(fn, *args, **kwargs))

    def _wrap(self, inner: AsyncSession) -> Session:
        return Session(self, inner)

    @staticmethod
    def _inner(session: Session | str | None) -> AsyncSession | str | None:
        return session._inner if isinstance(session, Session) else session

    def open(self) -> None:
        """Open storage now (otherwise done by the first call that needs it)."""
        self._call(self._async.open)

    def create_session(
        self, name: str, branch_from: str | Session | None = None, *, exist_ok: bool = True
    ) -> Session:
        """Create a session, or resume the existing one of that name (see
        :meth:`AsyncSessionManager.create_session`)."""
        return self._wrap(
            self._call(
                self._async.create_session, name, self._inner(branch_from), exist_ok=exist_ok
            )
        )

    def load_session(self, name: str | None = None, *, session_id: str | None = None) -> Session:
        """Resume an existing session by name or id (``SessionNotFoundError`` if missing)."""
        return self._wrap(self._call(self._async.load_session, name, session_id=session_id))

    def save_session(self, session: Session) -> None:
        """Write the session's unsaved changes in one transaction."""
        if not isinstance(session, Session) or session._manager is not self:
            raise SessionError("save_session takes a session of this manager")
        self._call(self._async.save_session, session._inner)

    def list_sessions(self) -> list[SessionInfo]:
        """Every session's :class:`SessionInfo` (one query), oldest first."""
        return self._call(self._async.list_sessions)

    def get_session_info(self, name: str) -> SessionInfo | None:
        """One session's info without loading its messages, or None."""
        return self._call(self._async.get_session_info, name)

    def delete_session(self, name: str, *, missing_ok: bool = False) -> None:
        """Delete a session and its messages."""
        self._call(self._async.delete_session, name, missing_ok=missing_ok)

    def export_session(self, name: str, target: Target, *, format: str = "jsonl") -> int:
        """Write a session to a path or text file, streamed (see the async twin)."""
        return self._call(self._async.export_session, name, target, format=format)

    def import_session(
        self, source: Source, *, name: str | None = None, format: str | None = None
    ) -> Session:
        """Read an exported session in one transaction, streamed (see the async twin)."""
        return self._wrap(self._call(self._async.import_session, source, name=name, format=format))

    def export_store(self, target: Target) -> int:
        """Write every session to one JSON Lines stream; returns how many."""
        return self._call(self._async.export_store, target)

    def import_store(self, source: Source) -> list[str]:
        """Import every session of an :meth:`export_store` stream; returns their names."""
        return self._call(self._async.import_store, source)

    def close(self) -> None:
        """Flush unsaved sessions (unless autosave is off), release storage and stop the
        manager's threads. Idempotent; calls made after this raise
        :class:`ManagerClosedError`.

        A call another thread has under way finishes first; one still running after 10 s
        is cancelled (it raises ``ManagerClosedError``), and one that cannot be cancelled
        (blocked outside the event loop) closes the manager itself when it ends, 5 s later
        this returns. Called from a signal handler during one of this manager's calls, it
        returns at once and the manager closes when that call ends."""
        with self._lock:
            runner, self._runner = self._runner, None
        if runner is None:
            return
        self._autosave_stop.set()
        closed_now = False
        try:
            closed_now = runner.close(self._async.close)
        finally:
            _live.discard(self)
            autosaver = self._autosaver
            if closed_now and autosaver is not None and autosaver is not threading.current_thread():
                autosaver.join(timeout=CLOSE_WAIT + CANCEL_WAIT)

    def __enter__(self) -> SessionManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

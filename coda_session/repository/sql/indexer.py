"""Writing the search index in the background, after the writes commit.

With ``index_in_background`` (the default), a save of the library's inserts its messages
*pending* (``messages.indexed IS NULL``, see :mod:`.search`) and returns: analysing the
text in Python and writing the index entries cost a 20,000-message save 2.4x its time
without an index when they ran inside its transaction. A :class:`BackgroundIndexer` then
writes them: a thread of its own, with its own event loop and its own connection to the
store (:class:`IndexWorker`, a second repository), indexes the pending rows in
transactions of :data:`BATCH_ROWS` rows and removes the orphans deletes left.

Nothing is less correct meanwhile: a search evaluates the pending rows in Python (see
:func:`.search.search`), so it finds everything saved; a crash leaves rows pending, which
a later run indexes. The indexer wakes when the writes it was told of left
:data:`.search.FLUSH_AT` rows pending, or after :data:`IDLE_SECONDS` without another write
(so a chat's single-message saves are indexed a few dozen at a time, not one transaction
each), and :meth:`BackgroundIndexer.close` indexes what is left before the manager closes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

from .search import FLUSH_AT

__all__ = ["BATCH_ROWS", "IDLE_SECONDS", "BackgroundIndexer", "IndexWorker", "in_own_thread"]

logger = logging.getLogger("coda_session")

#: rows one background transaction indexes at most: it holds the write lock while it
#: writes them (~20 us a row on SQLite, the terms computed before it takes the lock), so a
#: save waits at most ~20 ms
BATCH_ROWS = 1000
#: seconds without a write after which fewer than FLUSH_AT pending rows are indexed
IDLE_SECONDS = 1.0
#: how often a task waiting for the indexer (close, settle) looks whether it is done
POLL_SECONDS = 0.005


class IndexWorker(Protocol):
    """The indexer's own connection to the store (a repository opened in its thread)."""

    async def index_step(self, limit: int) -> int:
        """Index up to ``limit`` pending rows and remove a batch of orphans, in one
        transaction; returns how much it did (0: nothing was left to do)."""
        ...

    async def aclose(self) -> None: ...


_live: weakref.WeakSet[BackgroundIndexer] = weakref.WeakSet()
_held: list[BackgroundIndexer] = []


def _before_fork() -> None:
    # SQLite keeps a process's file locks in memory that fork() copies: a fork landing
    # inside an indexer's transaction would leave its lock held in the child, locking the
    # child's own managers out of the file. The fork waits for the step under way.
    for indexer in sorted(_live, key=id):
        indexer.step_lock.acquire()
        _held.append(indexer)


def _after_fork_in_parent() -> None:
    while _held:
        _held.pop().step_lock.release()


def _after_fork_in_child() -> None:
    # the parent's indexer threads are not the child's: a write in the child starts a
    # thread of its own
    _held.clear()
    for indexer in list(_live):
        indexer.forget_threads()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


class BackgroundIndexer:
    """A thread that indexes the rows the writes of one repository left pending.

    ``make`` opens the worker (called in the thread, on its event loop). :meth:`written`
    is called after each write commits; :meth:`settle` waits until everything the writes
    reported is indexed; :meth:`close` settles, then stops the thread."""

    def __init__(self, make: Callable[[], IndexWorker]) -> None:
        self._make = make
        self._cond = threading.Condition()
        self._owed = 0  # rows written pending since the last run began
        self._sweep = False  # a delete left orphans to remove
        self._last_write = 0.0
        self._running = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._failed = False
        #: held during each step (its transactions): a fork() waits for it
        self.step_lock = threading.Lock()
        _live.add(self)

    def forget_threads(self) -> None:
        """In a child process after ``fork()``: start afresh (nothing runs here)."""
        self._cond = threading.Condition()
        self.step_lock = threading.Lock()
        self._thread = None
        self._running = False

    def written(self, rows: int, *, deleted: bool = False) -> None:
        """A write of ours committed, leaving ``rows`` pending (``deleted``: it deleted
        messages, whose entries stay as orphans until a run removes them)."""
        if rows <= 0 and not deleted:
            return
        with self._cond:
            if self._closing:
                return
            self._owed += max(rows, 0)
            self._sweep = self._sweep or deleted
            self._last_write = time.monotonic()
            thread = self._thread
            if thread is None or not thread.is_alive():
                thread = self._thread = threading.Thread(
                    target=self._main, name="coda-session-indexer", daemon=True
                )
                thread.start()
            self._cond.notify_all()

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until every row the writes reported so far is indexed (or a run failed:
        they stay pending, found by searches all the same); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._last_write = 0.0  # no point waiting for more writes
            self._cond.notify_all()
            while self._owed or self._sweep or self._running:
                if self._thread is None or not self._thread.is_alive():
                    return True
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self) -> None:
        """Index what the writes left pending, then stop the thread (blocking)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- the thread ---------------------------------------------------------------------

    def _due(self) -> bool:
        """Whether a run should start now (called with the condition held)."""
        if self._closing or self._sweep or self._owed >= FLUSH_AT:
            return bool(self._owed or self._sweep)
        return bool(self._owed) and time.monotonic() - self._last_write >= IDLE_SECONDS

    def _wait(self) -> bool:
        """Wait until a run is due; False when the indexer is closing with nothing left."""
        with self._cond:
            while not self._due():
                if self._closing:
                    return False
                wait = None
                if self._owed:
                    wait = max(IDLE_SECONDS - (time.monotonic() - self._last_write), 0.001)
                self._cond.wait(wait)
            self._owed = 0
            self._sweep = False
            self._running = True
            return True

    def _main(self) -> None:
        asyncio.run(self._loop())

    async def _step(self, worker: IndexWorker) -> int:
        # this thread's loop runs nothing else, so the lock is never held across another
        # task's await
        with self.step_lock:
            return await worker.index_step(BATCH_ROWS)

    async def _loop(self) -> None:
        worker: IndexWorker | None = None
        try:
            while self._wait():
                try:
                    if worker is None:
                        worker = self._make()
                    while await self._step(worker):
                        pass
                    self._failed = False
                except Exception as exc:
                    # the rows stay pending (found by every search, indexed by a later
                    # run): a failure here must never reach the writes that woke it
                    if not self._failed:
                        logger.warning("indexing saved messages for search failed: %s", exc)
                    self._failed = True
                    if worker is not None:
                        await _close_quietly(worker)
                        worker = None
                finally:
                    with self._cond:
                        self._running = False
                        self._cond.notify_all()
        finally:
            if worker is not None:
                await _close_quietly(worker)
            with self._cond:
                self._running = False
                self._owed = 0
                self._sweep = False
                self._cond.notify_all()


async def in_own_thread(fn: Callable[[], object]) -> None:
    """``fn()`` on a thread of its own, awaited without blocking the loop; its exception
    is raised here. Not the loop's default executor: at interpreter exit, when the
    managers left open are closed, it is already shut down. Polled, not woken with
    ``call_soon_threadsafe``: a blocking manager's loop inherited by a ``fork()`` child
    that ran for a while was seen never to wake from that (the child keeps the loop's
    epoll and self-pipe), and a close must not hang on it."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="coda-session-indexer-wait", daemon=True)
    thread.start()
    while thread.is_alive():  # noqa: ASYNC110 - an asyncio.Event is woken as above
        await asyncio.sleep(POLL_SECONDS)
    if failure:
        raise failure[0]


async def _close_quietly(worker: IndexWorker) -> None:
    try:
        await worker.aclose()
    except Exception as exc:
        logger.debug("closing the search indexer's connection: %s", exc)

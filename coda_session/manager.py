"""AsyncSessionManager: the one implementation of the session API (the sync one wraps it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import uuid
import warnings
import weakref
from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import date, datetime
from types import TracebackType
from typing import Any

from . import finding, transfer
from . import session as session_api
from .codec import MAX_NAME_LENGTH, check_name
from .config import SessionConfig
from .errors import (
    InvalidMessageError,
    ManagerClosedError,
    SessionError,
    SessionExistsError,
    SessionNotFoundError,
    UnsavedChangesWarning,
)
from .exithook import before_threads_join
from .loopsafe import LoopSafeLock
from .models import SessionInfo, SessionList, SessionRecord
from .repository import capabilities
from .repository.custom import SessionStorage
from .repository.factory import open_repository
from .repository.filters import SessionFilter, encode_cursor, make_filter
from .repository.memory import MemoryRepository
from .repository.protocol import Repository
from .repository.searching import SearchIndexReport
from .repository.storage_adapter import StorageAdapter
from .search.results import SearchResult
from .session import AsyncSession, SessionHost
from .timeutil import utcnow
from .transfer import Source, Target

__all__ = [
    "AsyncSessionManager",
    "autosave_once",
    "blocking_manager",
    "describe",
    "repository_of",
]

logger = logging.getLogger("coda_session")

#: Messages read together with the session row on resume, so the usual
#: ``get_messages(limit=...)`` that follows needs no second read.
RESUME_PREFETCH = 50

_pid = os.getpid()


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _names(sessions: list[AsyncSession]) -> str:
    shown = ", ".join(repr(s.name) for s in sessions[:10])
    more = len(sessions) - 10
    return shown + (f" and {more} more" if more > 0 else "")


class _Core:
    """What a manager's sessions and its safety nets (the end of an event loop, the
    interpreter's exit) need of it, without keeping the manager object itself alive: its
    configuration, storage, state, and the sessions with unsaved changes, held strongly
    until saved, discarded or flushed, so a session object nobody references any more
    never takes its changes with it."""

    def __init__(self, config: SessionConfig, repository: Repository) -> None:
        self.config = config
        self.repository = repository
        self.pid = _pid  # a child of fork() gets SessionError from this manager
        self.opened = False
        self.closed = False
        self.abandoned = False  # the manager object was collected without close()
        self.blocking = False  # a SessionManager's: its own exit hook closes it
        self.sessions: weakref.WeakSet[AsyncSession] = weakref.WeakSet()
        self.unsaved: dict[AsyncSession, None] = {}  # insertion-ordered, strong
        self.lock = threading.Lock()
        # one sentinel per event loop the manager ran on, closed as that loop shuts down;
        # kept in a list it empties then (the generator refers to its loop, which must
        # not outlive its use: asyncio.run per call makes a loop per call)
        self.loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, list[AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()

    def check_open(self) -> None:
        if self.pid != _pid:
            # its connections, their threads and its locks stayed in the parent
            raise SessionError(
                "this manager was created in another process (the child of a fork() "
                "inherited it): open a new manager in the child"
            )
        if self.closed:
            raise ManagerClosedError("the session manager is closed")

    def keep(self, session: AsyncSession, unsaved: bool) -> None:
        with self.lock:
            if unsaved and not self.closed:
                self.unsaved[session] = None
                _holding.add(self)
            else:
                self.unsaved.pop(session, None)
                if not self.unsaved:
                    _holding.discard(self)

    def pending(self) -> list[AsyncSession]:
        """The sessions with unsaved changes, oldest change first."""
        with self.lock:
            return list(self.unsaved)

    def release_all(self) -> None:
        with self.lock:
            self.unsaved.clear()
            _holding.discard(self)

    async def flush(self, reason: str, final: bool = False) -> list[BaseException]:
        """Save every session with unsaved changes; report, never swallow, failures.

        The final flush (on close) retries sessions whose autosave failed, and returns the
        errors nobody has heard of yet, so ``close()`` can raise them.
        """
        errors: list[BaseException] = []
        for session in self.pending():
            error = await session_api.flush(session, reason, final=final)
            if error is not None:
                errors.append(error)
        return errors

    def warn_dropped(
        self, sessions: list[AsyncSession], what: str, why: str, stacklevel: int = 3
    ) -> None:
        if sessions:
            warnings.warn(
                UnsavedChangesWarning(
                    f"{what} dropped the unsaved changes of {len(sessions)} session(s) "
                    f"({_names(sessions)}): {why}. Save them first (save_session), or "
                    "call discard_changes() on a session to drop its changes on purpose"
                ),
                stacklevel=stacklevel,
            )

    async def settle(self, why: str) -> None:
        """The manager object is gone and was never closed: flush what autosave allows,
        warn about the rest, release storage."""
        held = self.pending()
        if self.config.autosave_interval > 0:
            await self.flush(f"flush as {why}", final=True)
        lost = [s for s in self.pending() if s in held]
        flushed = [s for s in held if s not in lost]
        self.closed = True
        self.release_all()
        if self.opened:
            try:
                await self.repository.aclose()
            except Exception as exc:  # nobody is left to raise it to
                logger.warning("closing the storage of an abandoned manager failed: %s", exc)
        self.warn_dropped(
            lost,
            f"a session manager that was never closed, as {why},",
            "autosave_interval is 0, so nothing saves them"
            if self.config.autosave_interval <= 0
            else "saving them failed (logged)",
            stacklevel=2,  # no caller of the user's to point at: a loop's end, or exit
        )
        if flushed:
            warnings.warn(
                ResourceWarning(
                    f"a session manager was never closed: its unsaved changes of "
                    f"{_names(flushed)} were saved as {why}; close it (async with "
                    "AsyncSessionManager(...) as manager:, or await manager.close())"
                ),
                stacklevel=1,
            )

    async def loop_ends(self) -> None:
        """An event loop this manager ran on is shutting down (``asyncio.run`` returns)."""
        if self.closed or self.pid != _pid:
            return
        if self.abandoned:
            await self.settle("its event loop shut down")
        elif self.config.autosave_interval > 0 and self.pending():
            # the manager lives on (used from another loop later): an autosave pass now,
            # while this loop still runs
            await self.flush("autosave as an event loop shuts down")


def _abandon(core: _Core) -> None:
    # the manager object was collected: a loop it ran on settles it as it shuts down,
    # or the interpreter's exit does
    core.abandoned = True


async def _sentinel(core: _Core, holder: list[Any]) -> AsyncGenerator[None, None]:
    # started on each loop the manager runs on; asyncio.run's shutdown_asyncgens() closes
    # it while the loop still runs, so unsaved changes can still be flushed there
    try:
        yield
    finally:
        holder.clear()
        await core.loop_ends()


#: Managers with unsaved changes, not closed: held (and their sessions with them) until
#: the changes are saved or discarded, the manager closes, or the interpreter exits
_holding: set[_Core] = set()


def _settle_at_exit() -> None:
    """Interpreter exit: flush (autosave on) or name (autosave off) the unsaved changes
    of managers never closed. A blocking manager still referenced is closed by its own
    hook (runtime.close_at_exit), which runs its calls in turn with other threads'."""
    for core in list(_holding):
        if core.closed or core.pid != _pid or (core.blocking and not core.abandoned):
            continue
        try:
            asyncio.run(core.settle("the interpreter exits"))
        except Exception as exc:  # at exit there is nobody left to raise it to
            logger.warning("flushing sessions at exit failed: %s", exc)


class AsyncSessionManager:
    """Creates, resumes, branches, saves, lists and deletes sessions; async-first.

    ::

        async with AsyncSessionManager({"session": {"storage_path": "~/.coda/sessions"}}) as m:
            session = await m.create_session("my-chat")   # or resumes it
            session.add_message({"role": "user", "content": "Hello!"})
            await m.save_session(session)                 # one transaction, the delta only

    Args:
        config: the spec's ``{"session": {...}}`` dict, a :class:`SessionConfig`, or None
            for the defaults (SQLite in ``~/.coda/sessions``). Backends: ``sqlite``
            (default), ``postgresql`` (``database_url``), ``memory`` (this manager only).
        storage: a :class:`SessionStorage` of your own, or a repository, instead of the
            configured backend.

    Storage is opened on first use (the database is created and migrated then). Use it as
    ``async with AsyncSessionManager(cfg) as manager:`` or call :meth:`close`, which
    flushes sessions with unsaved changes (unless ``autosave_interval`` is 0: then an
    :class:`~coda_session.UnsavedChangesWarning` names what is dropped). A session object
    with unsaved changes is held by the manager until it is saved, discarded
    (``discard_changes()``) or the manager closes, so dropping it loses nothing; a
    manager never closed is flushed when its event loop shuts down (``asyncio.run``
    returning) or at interpreter exit. It runs on asyncio and may be used from several
    event loops, in several threads, at the same time. ``repr()`` shows the backend,
    where it stores (passwords hidden), whether it is open, and its session objects.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | SessionConfig | None = None,
        storage: SessionStorage | Repository | None = None,
    ) -> None:
        self._config = SessionConfig.from_mapping(config)
        self._repository: Repository = open_repository(self._config, storage)
        core = self._core = _Core(self._config, self._repository)
        self._host = SessionHost(self._config, self._repository, core.check_open, core.keep)
        # asyncio's locks belong to one event loop: this one serves every loop and thread
        # that uses the manager, so storage is opened exactly once
        self._open_lock = LoopSafeLock()
        self._autosave_task: asyncio.Task[None] | None = None
        # the blocking API runs its loop only during calls and times autosaves itself
        self._autosave_in_loop = True
        weakref.finalize(self, _abandon, core).atexit = False
        # before the interpreter joins threads, as the blocking API's own hook
        before_threads_join(_settle_at_exit)

    @property
    def config(self) -> SessionConfig:
        """The validated configuration."""
        return self._config

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._core.closed

    def _check_open(self) -> None:
        self._core.check_open()

    async def open(self) -> None:
        """Open storage now (otherwise done by the first call that needs it)."""
        self._check_open()
        if self._core.opened:
            return
        loop = asyncio.get_running_loop()
        async with self._open_lock:
            if not self._core.opened:
                await self._repository.open()
                self._core.opened = True
        self._start_autosave(loop)

    async def _watch_loop(self) -> None:
        """Start this loop's sentinel, once per loop (see :func:`_sentinel`)."""
        core = self._core
        if core.blocking:
            return  # its private loop closes with it; its exit hook closes it
        loop = asyncio.get_running_loop()
        with core.lock:
            if loop in core.loops:
                return
            holder: list[AsyncGenerator[None, None]] = []
            sentinel = _sentinel(core, holder)
            holder.append(sentinel)
            core.loops[loop] = holder
        await sentinel.__anext__()

    def _start_autosave(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._config.autosave_interval <= 0 or not self._autosave_in_loop or self.closed:
            return
        task = self._autosave_task
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        # the first loop may be gone (asyncio.run per call): autosave on the one in use
        if task is not None and not task.get_loop().is_closed():
            task.get_loop().call_soon_threadsafe(task.cancel)
        # the task holds the core, not this object, so a manager nobody references any
        # more is still collected (and its loop's sentinel settles it)
        self._autosave_task = loop.create_task(_autosave(self._core), name="coda-session-autosave")

    def _session(self, record: SessionRecord) -> AsyncSession:
        session = AsyncSession(self._host, record)
        self._core.sessions.add(session)
        return session

    async def _ready(self) -> Repository:
        core = self._core
        core.check_open()
        if not core.opened:
            await self.open()
        if not core.blocking and asyncio.get_running_loop() not in core.loops:
            await self._watch_loop()  # this loop's first call
        return self._repository

    def _own(self, session: AsyncSession) -> AsyncSession:
        if not isinstance(session, AsyncSession):
            raise SessionError(f"expected a session object, got {type(session).__name__}")
        if session_api.host_of(session) is not self._host:
            raise SessionError(f"session {session.name!r} belongs to another manager")
        return session

    async def create_session(
        self,
        name: str,
        branch_from: str | AsyncSession | None = None,
        *,
        exist_ok: bool = True,
        fork_point: int | None = None,
        fork_after: int | None = None,
    ) -> AsyncSession:
        """Create a session, or resume the existing one of that name.

        Args:
            name: the session's unique name.
            branch_from: the name (or session object) of a session to branch from: the new
                session starts with its *saved* messages and metadata and is independent
                afterwards. A branch is always new: an existing ``name`` raises
                :class:`SessionExistsError`; a missing source :class:`SessionNotFoundError`.
                A branch copies no message (copy-on-write): it costs the same for a source
                of ten messages or of a hundred thousand.
            exist_ok: with False, an existing ``name`` raises :class:`SessionExistsError`
                instead of being resumed.
            fork_point: with ``branch_from``, branch at a position instead of the end: the
                branch starts with the source's first ``fork_point`` saved messages (0 to
                its count; a negative one counts from the end, as in a slice:
                ``fork_point=-1`` leaves out the last message).
            fork_after: with ``branch_from``, branch right after the message of that id
                (from ``get_messages_with_ids()``): the branch starts with the source's
                messages up to and including it.

        A position out of range, an id the source does not show, or both keywords raise
        :class:`InvalidMessageError` before anything is written. The new session is stored
        at once, so its name is taken from then on.
        """
        name = check_name(name)
        if branch_from is None:
            if fork_point is not None or fork_after is not None:
                raise InvalidMessageError("fork_point and fork_after need branch_from")
        else:
            source = branch_from.name if isinstance(branch_from, AsyncSession) else branch_from
            source = check_name(source, "branch_from", lookup=True)
            _check_fork(fork_point, fork_after)
        repo = await self._ready()
        tail = min(RESUME_PREFETCH, self._config.message_cache_size)
        now = utcnow()
        record = SessionRecord(
            id=str(uuid.uuid4()),
            name=name,
            created_at=now,
            updated_at=now,
            metadata={},
            message_count=0,
            size_bytes=0,
            last_message_id=0,
        )
        if branch_from is not None:
            found = await repo.load_session(name=source)
            if found is None:
                raise SessionNotFoundError(f"cannot branch from {source!r}: no such session")
            record.root_id = found.root_id  # the branch joins its source's tree
            # a negative fork_point is resolved by the storage, against the count it holds
            # the source at (another writer may change it meanwhile)
            # the branch comes back with its newest messages in hand, like a resume
            created = await repo.create_session(
                record, copy_from=found.id, fork_point=fork_point, fork_after=fork_after, tail=tail
            )
            return self._session(created)
        existing = await repo.load_session(name=name, tail=tail)
        if existing is None:
            try:
                return self._session(await repo.create_session(record))
            except SessionExistsError:
                if not exist_ok:
                    raise
                existing = await repo.load_session(name=name, tail=tail)
                if existing is None:
                    raise
        elif not exist_ok:
            raise SessionExistsError(f"session {name!r} already exists")
        return self._session(existing)

    async def fork_session(
        self,
        source: str | AsyncSession,
        fork_point: int | None = None,
        *,
        fork_after: int | None = None,
        name: str | None = None,
    ) -> AsyncSession:
        """Branch ``source`` in one call, for regenerate and edit flows.

        ``fork_session(source, k)`` gives a new session that shows the source's first ``k``
        saved messages: add the regenerated answer (or the edited message) to it.
        ``fork_session(source, -1)`` leaves out the last message. Without ``name`` the
        branch is named ``"<source>~<8 hex digits>"`` (random; the source's name is
        shortened to fit). Otherwise as ``create_session(name, branch_from=source, ...)``.
        """
        source_name = source.name if isinstance(source, AsyncSession) else source
        if name is None:
            check_name(source_name, "source", lookup=True)
            suffix = "~" + uuid.uuid4().hex[:8]
            name = source_name[: MAX_NAME_LENGTH - len(suffix)] + suffix
        return await self.create_session(
            name, branch_from=source, exist_ok=False, fork_point=fork_point, fork_after=fork_after
        )

    async def list_branches(self, name: str) -> list[SessionInfo]:
        """The sessions branched directly from ``name``, oldest first (one query after
        finding it; SessionNotFoundError if there is none)."""
        found = await self._find(name)
        repo = await self._ready()
        return [
            i
            for i in await capabilities.list_tree(repo, found.root_id or found.id)
            if i.parent_id == found.id
        ]

    async def get_tree(self, name: str) -> list[SessionInfo]:
        """Every session of ``name``'s branching tree (the sessions sharing its
        ``root_id``), oldest first, so parents come before their branches; one query
        after finding it. SessionNotFoundError if there is none."""
        found = await self._find(name)
        repo = await self._ready()
        return await capabilities.list_tree(repo, found.root_id or found.id)

    async def _find(self, name: str) -> SessionRecord:
        name = check_name(name, lookup=True)
        repo = await self._ready()
        found = await repo.load_session(name=name)
        if found is None:
            raise SessionNotFoundError(f"no session with name {name!r}")
        return found

    async def load_session(
        self, name: str | None = None, *, session_id: str | None = None
    ) -> AsyncSession:
        """Resume an existing session by name or by id (``SessionNotFoundError`` if missing).

        Reads the session row and its newest few messages, never all of them.
        """
        if (name is None) == (session_id is None):
            raise SessionError("give exactly one of name or session_id")
        if name is not None:
            name = check_name(name, lookup=True)
        elif type(session_id) is not str or not session_id:
            raise SessionNotFoundError(f"no session with id {session_id!r}")
        repo = await self._ready()
        tail = min(RESUME_PREFETCH, self._config.message_cache_size)
        found = await repo.load_session(name=name, session_id=session_id, tail=tail)
        if found is None:
            what = f"name {name!r}" if name is not None else f"id {session_id!r}"
            raise SessionNotFoundError(f"no session with {what}")
        return self._session(found)

    async def save_session(self, session: AsyncSession) -> None:
        """Write the session's unsaved changes in one transaction: only the delta (new
        messages, a truncation, changed metadata keys), all or nothing."""
        self._own(session)
        await self._ready()
        session_api.check_usable(session)
        await session_api.save(session)

    async def list_sessions(
        self,
        *,
        metadata: Mapping[str, Any] | None = None,
        tags: str | Sequence[str] | None = None,
        name_prefix: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        updated_after: datetime | None = None,
        updated_before: datetime | None = None,
        parent: str | None = None,
        root: str | None = None,
        roots_only: bool = False,
        order: str = "created",
        descending: bool | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> SessionList:
        """The sessions' :class:`SessionInfo`, filtered, ordered and paged (one query on a
        SQL database; the same sessions in the same order on every backend).

        Without arguments: every session, oldest created first (what it always returned).
        ``metadata``: each key must be present with an equal value (nested mappings
        descend; values compare as JSON: ``True`` is not ``1``, ``1`` is ``1.0``).
        ``tags``: a tag or tags, each one a string of ``metadata["tags"]``.
        ``name_prefix``: names starting with it (case-sensitive). ``created_*`` /
        ``updated_*``: aware datetimes, ``after`` inclusive, ``before`` exclusive.
        ``parent``: branches of the named session; ``root``: the named session's whole
        branching tree; ``roots_only``: no branches (an unknown name matches nothing).
        ``order``: ``"created"`` (oldest first), ``"updated"`` (newest first) or
        ``"name"``; ``descending`` reverses it. ``limit``: a page of at most that many,
        whose ``next_cursor`` (None on the last page) gives the next page when passed
        back as ``cursor`` with the same filters. See the README ("Listing and filtering
        sessions") for how paging behaves while sessions change.
        InvalidQueryError for a bad argument, InvalidCursorError for a bad cursor.
        """
        flt = make_filter(
            metadata=metadata,
            tags=tags,
            name_prefix=name_prefix,
            created_after=created_after,
            created_before=created_before,
            updated_after=updated_after,
            updated_before=updated_before,
            parent=parent,
            root=root,
            roots_only=roots_only,
            order=order,
            descending=descending,
            limit=limit,
            cursor=cursor,
        )
        repo = await self._ready()
        everything = flt.order == "created" and not flt.descending and flt.limit is None
        if everything and flt.unfiltered and flt.after is None:
            # what list_sessions() always returned, by the same single query
            return SessionList(await repo.list_sessions())
        return await _filtered_page(repo, flt)

    async def get_session_info(self, name: str) -> SessionInfo | None:
        """One session's info without loading its messages, or None if there is none."""
        name = check_name(name, lookup=True)
        repo = await self._ready()
        found = await repo.load_session(name=name)
        return None if found is None else found.info()

    async def delete_session(self, name: str, *, missing_ok: bool = False) -> None:
        """Delete a session and its messages (``SessionNotFoundError`` if missing, unless
        ``missing_ok``); its name is free at once. Branches made from it stay whole: the
        messages they show are kept for them, the others are deleted."""
        name = check_name(name, lookup=True)
        repo = await self._ready()
        found = await repo.load_session(name=name)
        deleted = found is not None and await repo.delete_session(found.id)
        if found is not None:
            # unsaved changes of this manager's objects of it have nowhere to go now: they
            # were dropped on purpose, and no longer keep those objects (or close) waiting
            for session in self._core.pending():
                if session.id == found.id:
                    session_api.forget(session)
        if not deleted and not missing_ok:
            raise SessionNotFoundError(f"no session with name {name!r}")

    async def export_session(
        self, name: str, target: Target, *, format: str | None = None, overwrite: bool = False
    ) -> int:
        """Write a session (its saved state) to a path or text file, streamed.

        ``format`` is ``"jsonl"`` or ``"json"`` (both described in the README, with a format
        version); None (default): ``"json"`` for a path ending in ``.json``, else
        ``"jsonl"``. A path is written to a private (0600) temporary file and renamed into
        place when complete; an existing file raises :class:`ExportFileExistsError` unless
        ``overwrite``. Returns the number of messages written.
        """
        repo = await self._ready()
        return await transfer.export_session(repo, name, target, format, overwrite)

    async def import_session(
        self, source: Source, *, name: str | None = None, format: str | None = None
    ) -> AsyncSession:
        """Read a session written by :meth:`export_session` (or any JSON object with a
        ``"messages"`` list) under its own name or ``name``, in one transaction, streamed.

        A malformed or truncated file raises :class:`FileFormatError` naming the line and
        writes nothing; a missing one, :class:`ImportFileNotFoundError`; an existing name,
        :class:`SessionExistsError`. The format (``"jsonl"`` or ``"json"``) is detected
        from the content when ``format`` is None.
        """
        repo = await self._ready()
        return self._session(
            await transfer.import_session(
                repo, self._config, source, name, format, self._check_open
            )
        )

    async def export_store(self, target: Target, *, overwrite: bool = False) -> int:
        """Write every session to one JSON Lines stream; returns how many. An existing
        file raises :class:`ExportFileExistsError` unless ``overwrite``."""
        repo = await self._ready()
        return await transfer.export_store(repo, target, overwrite)

    async def import_store(self, source: Source) -> list[str]:
        """Import every session of a stream written by :meth:`export_store`, each in its own
        transaction; returns their names. On an error, the sessions imported before it stay
        (the error's notes name them) and the failing one writes nothing."""
        repo = await self._ready()
        return await transfer.import_store(repo, self._config, source, self._check_open)

    async def search(
        self,
        query: str,
        *,
        session: str | None = None,
        role: str | Sequence[str] | None = None,
        after: datetime | date | str | None = None,
        before: datetime | date | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: str | Sequence[str] | None = None,
        order: str = "relevance",
        limit: int = 20,
        cursor: str | None = None,
        per_session: bool = False,
        markers: tuple[str, str] = ("[", "]"),
        window: int = 1000,
    ) -> SearchResult:
        """Full-text search of the saved messages of every session (or those chosen).

        ``query`` uses the grammar of the README's Search section: words (all must
        match), ``"phrases"``, ``prefix*``, ``-excluded``, ``a OR b``, and the filters
        ``role:``, ``tag:``, ``session:``, ``after:``, ``before:``. Any string is a valid
        query; one without a word to match returns the newest messages that pass its
        filters. The keyword filters hold together with the query's own: ``session`` (a
        name: everything it shows, inherited messages included; SessionNotFoundError if
        there is none), ``role`` and ``tags`` (a string or several: any of the roles,
        every tag in the session's ``metadata["tags"]``), ``after`` (inclusive) and
        ``before`` (exclusive) on the message's timestamp, ``metadata`` (sessions whose
        metadata has these keys with these values).

        ``order="relevance"`` ranks the newest ``window`` matching messages by BM25 (the
        result's ``window`` says when there were more); ``"newest"`` orders them newest
        first. A message several sessions show is one hit naming them all (``shown_in``);
        ``per_session=True`` gives instead each session's best hit once. Pass a result's
        ``next_cursor`` as ``cursor`` (with the same other arguments) for the next page:
        pages stay as they were while messages are added. Snippets mark matches with
        ``markers``. Searches what is stored: changes not saved yet are not found.
        Arguments other than the query are checked first (InvalidQueryError; a bad or
        another search's cursor: InvalidCursorError).
        """
        args = finding.check_search(
            query,
            session=session,
            role=role,
            after=after,
            before=before,
            metadata=metadata,
            tags=tags,
            order=order,
            limit=limit,
            cursor=cursor,
            per_session=per_session,
            markers=markers,
            window=window,
        )
        repo = await self._ready()
        return await finding.run_search(repo, args)

    async def rebuild_search_index(self) -> int:
        """Index every stored message again, in bulk (after an upgrade that changed the
        text analysis, or to repair what :meth:`check_search_index` reports); returns how
        many messages were indexed. Memory and custom storage keep no index: 0."""
        repo = await self._ready()
        return await finding.rebuild_index(repo)

    async def check_search_index(self) -> SearchIndexReport:
        """Compare the search index with the stored messages, changing neither: messages
        not indexed yet (``pending``: written by another program; still found), index
        entries of messages gone (``orphaned``) or changed (``stale``), and the analysis
        version the index was built with. ``report.ok`` when nothing needs a rebuild."""
        repo = await self._ready()
        return await finding.check_index(repo)

    async def close(self) -> None:
        """Flush unsaved sessions (when ``autosave_interval`` > 0) and release storage.

        With autosave off, unsaved changes are not written: an
        :class:`~coda_session.UnsavedChangesWarning` names the sessions whose changes are
        dropped (``discard_changes()`` drops them on purpose, without it). If a final
        flush fails, storage is released all the same and the first error is raised.
        Idempotent.
        """
        core = self._core
        if core.closed:
            return
        if core.pid != _pid:  # inherited across fork(): drop it, touch nothing of the parent's
            core.closed = True
            return
        task, self._autosave_task = self._autosave_task, None
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif task is not None and not task.get_loop().is_closed():
            task.get_loop().call_soon_threadsafe(task.cancel)
        errors: list[BaseException] = []
        if core.opened and self._config.autosave_interval > 0:
            errors = await core.flush("flush on close", final=True)
        core.closed = True  # from here on no flush can run
        dropped = core.pending()
        core.release_all()
        try:
            if core.opened:
                await self._repository.aclose()
        finally:
            if self._config.autosave_interval <= 0:
                core.warn_dropped(
                    dropped,
                    "closing the session manager",
                    "autosave_interval is 0, so close() saves nothing",
                )
        if errors:
            raise errors[0]

    aclose = close

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {describe(self)}>"

    async def __aenter__(self) -> AsyncSessionManager:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _check_fork(fork_point: object, fork_after: object) -> None:
    if fork_point is not None and fork_after is not None:
        raise InvalidMessageError("give fork_point or fork_after, not both")
    for what, value in (("fork_point", fork_point), ("fork_after", fork_after)):
        if value is not None and type(value) is not int:
            raise InvalidMessageError(f"{what} must be an integer, got {value!r:.40}")


def blocking_manager(
    config: SessionConfig, storage: SessionStorage | Repository | None
) -> AsyncSessionManager:
    """The manager behind a blocking :class:`~coda_session.SessionManager`: its storage
    may run on the private loop directly, and autosave is timed by the caller (the loop
    runs only during calls), through :func:`autosave_once`."""
    manager = AsyncSessionManager(config, open_repository(config, storage, private_loop=True))
    manager._autosave_in_loop = False
    manager._core.blocking = True
    return manager


async def _autosave(core: _Core) -> None:
    while True:
        await asyncio.sleep(core.config.autosave_interval)
        if core.opened and not core.closed:
            await core.flush("autosave")


async def autosave_once(manager: AsyncSessionManager) -> None:
    """One autosave pass, for a caller that times autosaves itself."""
    core = manager._core
    if core.opened and not core.closed:
        await core.flush("autosave")


def _location(repository: Repository) -> str:
    if isinstance(repository, StorageAdapter):
        return f"custom storage={type(repository.storage).__name__}"
    if isinstance(repository, MemoryRepository):
        return "backend=memory"
    url = getattr(repository, "url", None)  # the SQL repository (not imported here)
    if url is None:
        return f"storage={type(repository).__name__}"
    backend = url.get_backend_name()
    database = url.database or ""
    if backend == "sqlite" and database and not database.startswith("file:"):
        return f"backend=sqlite file={database!r}"
    # the password never shows (a repr lands in logs and tracebacks)
    return f"backend={backend} url={url.render_as_string(hide_password=True)!r}"


def describe(manager: AsyncSessionManager) -> str:
    """What a manager's ``repr()`` says: backend, where (no password), state, and its
    session objects (those alive, and those held with unsaved changes)."""
    core = manager._core
    state = "closed" if core.closed else "open" if core.opened else "not-opened-yet"
    return (
        f"{_location(manager._repository)} state={state} "
        f"session_objects={len(core.sessions)} unsaved={len(core.unsaved)}"
    )


def repository_of(manager: AsyncSessionManager) -> Repository:
    """The repository a manager runs on."""
    return manager._repository


async def _filtered_page(repo: Repository, flt: SessionFilter) -> SessionList:
    """One page of a filtered listing, with the cursor of the next."""
    # order "updated": the first page pins its time, later pages leave out what was
    # updated after it (it moved: listing it again would show it twice)
    upto = flt.updated_upto
    if upto is None and flt.order == "updated":
        upto = utcnow()
    page = await capabilities.find_sessions(repo, flt)
    cursor = None
    if page.more and page.sessions:
        cursor = encode_cursor(flt, page.sessions[-1], upto)
    return SessionList(page.sessions, next_cursor=cursor)

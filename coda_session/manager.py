"""AsyncSessionManager: the one implementation of the session API (the sync one wraps it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from . import session as session_api
from . import transfer
from .codec import MAX_NAME_LENGTH, check_name
from .config import SessionConfig
from .errors import (
    InvalidMessageError,
    ManagerClosedError,
    SessionError,
    SessionExistsError,
    SessionNotFoundError,
)
from .models import SessionInfo, SessionRecord
from .repository.custom import SessionStorage
from .repository.protocol import Repository, open_repository
from .session import AsyncSession, SessionHost
from .timeutil import utcnow
from .transfer import Source, Target

__all__ = ["AsyncSessionManager", "autosave_once", "blocking_manager", "repository_of"]

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


class AsyncSessionManager:
    """Creates, resumes, saves, lists and deletes sessions; async-first.

    Args:
        config: the spec's ``{"session": {...}}`` dict, a :class:`SessionConfig`, or None
            for the defaults (SQLite in ``~/.coda/sessions``).
        storage: a :class:`SessionStorage` of your own, or a repository, instead of the
            configured backend.

    Storage is opened on first use (the database is created and migrated then). Use it as
    ``async with AsyncSessionManager(cfg) as manager:`` or call :meth:`close`.
    It runs on asyncio (the SQLite driver is asyncio-only).
    """

    def __init__(
        self,
        config: Mapping[str, Any] | SessionConfig | None = None,
        storage: SessionStorage | Repository | None = None,
    ) -> None:
        self._config = SessionConfig.from_mapping(config)
        self._pid = _pid  # a child of fork() gets SessionError from this manager
        self._repository: Repository = open_repository(self._config, storage)
        self._host = SessionHost(self._config, self._repository, self._check_open)
        self._opened = False
        self._closed = False
        # asyncio locks belong to one event loop: one per loop, so that a manager used
        # from several loops in turn (asyncio.run per call) never waits on a dead one
        self._open_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._sessions: weakref.WeakSet[AsyncSession] = weakref.WeakSet()
        self._autosave_task: asyncio.Task[None] | None = None
        # the blocking API runs its loop only during calls and times autosaves itself
        self._autosave_in_loop = True

    @property
    def config(self) -> SessionConfig:
        """The validated configuration."""
        return self._config

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def _check_open(self) -> None:
        if self._pid != _pid:
            # its connections, their threads and its locks stayed in the parent
            raise SessionError(
                "this manager was created in another process (the child of a fork() "
                "inherited it): open a new manager in the child"
            )
        if self._closed:
            raise ManagerClosedError("the session manager is closed")

    async def open(self) -> None:
        """Open storage now (otherwise done by the first call that needs it)."""
        self._check_open()
        if self._opened:
            return
        loop = asyncio.get_running_loop()
        lock = self._open_locks.get(loop)
        if lock is None:
            lock = self._open_locks[loop] = asyncio.Lock()
        async with lock:
            if not self._opened:
                await self._repository.open()
                self._opened = True
        self._start_autosave(loop)

    def _start_autosave(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._config.autosave_interval <= 0 or not self._autosave_in_loop or self._closed:
            return
        task = self._autosave_task
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        # the first loop may be gone (asyncio.run per call): autosave on the one in use
        if task is not None and not task.get_loop().is_closed():
            task.get_loop().call_soon_threadsafe(task.cancel)
        self._autosave_task = loop.create_task(self._autosave(), name="coda-session-autosave")

    def _session(self, record: SessionRecord) -> AsyncSession:
        session = AsyncSession(self._host, record)
        self._sessions.add(session)
        return session

    async def _autosave(self) -> None:
        while True:
            await asyncio.sleep(self._config.autosave_interval)
            await self._flush("autosave")

    async def _flush(self, reason: str, final: bool = False) -> list[BaseException]:
        """Save every live session with unsaved changes; report, never swallow, failures.

        The final flush (on close) retries sessions whose autosave failed, and returns the
        errors nobody has heard of yet, so ``close()`` can raise them.
        """
        errors: list[BaseException] = []
        for session in list(self._sessions):
            error = await session_api.flush(session, reason, final=final)
            if error is not None:
                errors.append(error)
        return errors

    async def _ready(self) -> Repository:
        self._check_open()
        if not self._opened or self._closed:
            await self.open()
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
            i for i in await repo.list_tree(found.root_id or found.id) if i.parent_id == found.id
        ]

    async def get_tree(self, name: str) -> list[SessionInfo]:
        """Every session of ``name``'s branching tree (the sessions sharing its
        ``root_id``), oldest first, so parents come before their branches; one query
        after finding it. SessionNotFoundError if there is none."""
        found = await self._find(name)
        repo = await self._ready()
        return await repo.list_tree(found.root_id or found.id)

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

    async def list_sessions(self) -> list[SessionInfo]:
        """Every session's :class:`SessionInfo` (one query), oldest first."""
        repo = await self._ready()
        return await repo.list_sessions()

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

    async def close(self) -> None:
        """Flush unsaved sessions (when ``autosave_interval`` > 0) and release storage.

        With autosave off, unsaved changes are not written. If a final flush fails, storage
        is released all the same and the first error is raised. Idempotent.
        """
        if self._closed:
            return
        if self._pid != _pid:  # inherited across fork(): drop it, touch nothing of the parent's
            self._closed = True
            return
        task, self._autosave_task = self._autosave_task, None
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif task is not None and not task.get_loop().is_closed():
            task.get_loop().call_soon_threadsafe(task.cancel)
        errors: list[BaseException] = []
        if self._opened and self._config.autosave_interval > 0:
            errors = await self._flush("flush on close", final=True)
        self._closed = True  # from here on no flush can run
        if self._opened:
            await self._repository.aclose()
        if errors:
            raise errors[0]

    aclose = close

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
    return manager


async def autosave_once(manager: AsyncSessionManager) -> None:
    """One autosave pass, for a caller that times autosaves itself."""
    if manager._opened and not manager._closed:
        await manager._flush("autosave")


def repository_of(manager: AsyncSessionManager) -> Repository:
    """The repository a manager runs on."""
    return manager._repository

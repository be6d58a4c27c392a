"""SessionManager and Session: the blocking API, a thin mirror of the async one.

Every call that may do I/O runs the async implementation to completion on the manager's
own private event loop; nothing is implemented twice. It works in plain scripts, from
several threads, and from code that already runs an event loop (a notebook), since that
loop is never the one used.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from types import TracebackType
from typing import Any, TypeVar, overload

from .config import SessionConfig
from .errors import ManagerClosedError, SessionError
from .manager import autosave_once, blocking_manager, describe, repository_of
from .models import Message, MessageEntry, MessageInput, SessionInfo, SessionList
from .repository.custom import SessionData, SessionStorage
from .repository.protocol import Repository
from .repository.searching import SearchIndexReport
from .repository.storage_adapter import running_storage
from .runtime import CANCEL_WAIT, CLOSE_WAIT, LoopRunner, close_at_exit, forget_at_exit
from .search.results import SearchResult
from .session import AsyncSession, cached_messages
from .session import describe as describe_session
from .transfer import Source, Target

__all__ = ["Session", "SessionManager"]

T = TypeVar("T")


class Session:
    """A conversation, as returned by :class:`SessionManager`: the same names and signatures
    as :class:`AsyncSession`, none of them awaitable. Thread-safe. While it has unsaved
    changes its manager holds it (dropping it loses nothing); :meth:`discard_changes`
    drops them on purpose.

    ``Session(name, messages=..., metadata=...)``, the form the API reference's custom
    storage returns from ``load``, builds a :class:`SessionData` (what ``save`` receives),
    not a session of a manager: a manager's sessions come from its methods.
    """

    _manager: SessionManager
    _inner: AsyncSession

    # __new__ rather than __init__, so that type checkers see the second form's result too
    @overload
    def __new__(cls, manager: SessionManager, inner: AsyncSession, /) -> Session: ...

    @overload
    def __new__(cls, name: str, /, **fields: Any) -> SessionData: ...  # type: ignore[misc]

    def __new__(cls, *args: Any, **fields: Any) -> Any:  # type: ignore[misc]
        if args and isinstance(args[0], str):
            return SessionData(*args, **fields)
        self = super().__new__(cls)
        if args or fields:  # none: copy.copy() and pickle, which set the state next
            if len(args) != 2 or fields:
                raise TypeError(
                    "a SessionManager makes its Session objects; Session(name, messages=..., "
                    "metadata=...) builds a SessionData for a custom storage's load"
                )
            self._manager, self._inner = args
        return self

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
    def parent_id(self) -> str | None:
        """The id of the session this one was branched from (None for no branch)."""
        return self._inner.parent_id

    @property
    def fork_point(self) -> int | None:
        """How many of its parent's messages the branch started with (None for no branch)."""
        return self._inner.fork_point

    @property
    def root_id(self) -> str:
        """The key of the session's branching tree: the id of its first session."""
        return self._inner.root_id

    @property
    def metadata(self) -> dict[str, Any]:
        """A read-only snapshot of the session's metadata, unsaved updates included;
        changing it in place raises :class:`~coda_session.ReadOnlyError` (use
        :meth:`update_metadata`)."""
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
    def messages(self) -> list[Message]:
        """All messages (``get_messages()``); assigning replaces them (``set_messages``)."""
        return self.get_messages()

    @messages.setter
    def messages(self, messages: Iterable[MessageInput]) -> None:
        self.set_messages(messages)

    def info(self) -> SessionInfo:
        """The :class:`SessionInfo` of the saved state as this object last saw it."""
        return self._inner.info()

    def add_message(self, message: MessageInput) -> None:
        """Append a message (see :meth:`AsyncSession.add_message`)."""
        self._inner.add_message(message)

    def set_messages(self, messages: Iterable[MessageInput]) -> None:
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

    def discard_changes(self) -> None:
        """Drop the unsaved changes: the object shows its saved state again (see
        :meth:`AsyncSession.discard_changes`)."""
        self._inner.discard_changes()

    def get_messages(self, limit: int | None = None) -> list[Message]:
        """The messages oldest first, exactly as added; the newest ``limit`` with a limit
        (see :meth:`AsyncSession.get_messages`)."""
        cached = cached_messages(self._inner, limit)
        if cached is not None:
            return cached
        return self._manager._call(self._inner.get_messages, limit)

    def get_token_count(self) -> int:
        """An estimate of the tokens the messages take (see :meth:`AsyncSession.get_token_count`)."""
        return self._manager._call(self._inner.get_token_count)

    def get_messages_with_ids(self, limit: int | None = None) -> list[tuple[int | None, Message]]:
        """``(message_id, message)`` pairs (see :meth:`AsyncSession.get_messages_with_ids`)."""
        return self._manager._call(self._inner.get_messages_with_ids, limit)

    def get_entries(self, limit: int | None = None) -> list[MessageEntry]:
        """``(id, timestamp, message)`` per message (see :meth:`AsyncSession.get_entries`)."""
        return self._manager._call(self._inner.get_entries, limit)

    def pop_messages(self, n: int = 1) -> list[Message]:
        """Remove and return the newest ``n`` messages, atomically (see
        :meth:`AsyncSession.pop_messages`)."""
        return self._manager._call(self._inner.pop_messages, n)

    def get_lineage(self) -> list[SessionInfo]:
        """The sessions from the tree's root down to this one (see
        :meth:`AsyncSession.get_lineage`)."""
        return self._manager._call(self._inner.get_lineage)

    def __repr__(self) -> str:
        return f"<Session {describe_session(self._inner)}>"


class SessionManager:
    """The blocking session manager for scripts and notebooks.

    ::

        with SessionManager({"session": {"storage_path": "~/.coda/sessions"}}) as manager:
            session = manager.create_session("my-chat")   # creates, or resumes it
            session.add_message({"role": "user", "content": "Hello!"})
            manager.save_session(session)                 # one transaction, the delta only
            for info in manager.list_sessions():
                print(info.name, info.message_count)

    Args:
        config: the spec's ``{"session": {...}}`` dict, a :class:`SessionConfig`, or None
            for the defaults (SQLite in ``~/.coda/sessions``). Backends: ``sqlite``
            (default), ``postgresql`` (``database_url``), ``memory`` (this manager only).
        storage: a :class:`SessionStorage` of your own instead of the configured backend.

    Sessions: :meth:`create_session` (also branches: ``branch_from=``),
    :meth:`fork_session`, :meth:`load_session`, :meth:`save_session`,
    :meth:`list_sessions`, :meth:`get_session_info`, :meth:`delete_session`,
    :meth:`list_branches`, :meth:`get_tree`; files: :meth:`export_session`,
    :meth:`import_session`, :meth:`export_store`, :meth:`import_store`.

    The same methods as :class:`AsyncSessionManager`, not awaitable; thread-safe (calls
    run one at a time). Use it as a context manager or call :meth:`close`, which flushes
    sessions with unsaved changes (with ``autosave_interval = 0`` it writes nothing and an
    :class:`~coda_session.UnsavedChangesWarning` names what is dropped). A session object
    with unsaved changes is held until it is saved, discarded (``discard_changes()``) or
    the manager closes, so dropping it loses nothing; a manager left open is closed when
    the interpreter exits. ``repr()`` shows the backend, where it stores (passwords
    hidden), whether it is open, and its session objects.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | SessionConfig | None = None,
        storage: SessionStorage | Repository | None = None,
    ) -> None:
        settings = SessionConfig.from_mapping(config)
        # the loop runs only during calls, so the autosave timer lives in a thread of its own
        self._async = blocking_manager(settings, storage)
        self._lock = threading.Lock()
        self._runner: LoopRunner | None = LoopRunner()
        self._autosave_stop = threading.Event()
        self._autosaver: threading.Thread | None = None
        if settings.autosave_interval > 0:
            self._autosaver = threading.Thread(
                target=self._autosave, name="coda-session-autosave", daemon=True
            )
            self._autosaver.start()
        close_at_exit(self)

    def _autosave(self) -> None:
        interval = self._async.config.autosave_interval
        while not self._autosave_stop.wait(interval):
            try:
                self._call(autosave_once, self._async)
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
        if running_storage() is repository_of(self._async):
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
        self,
        name: str,
        branch_from: str | Session | None = None,
        *,
        exist_ok: bool = True,
        fork_point: int | None = None,
        fork_after: int | None = None,
    ) -> Session:
        """Create a session, or resume the existing one of that name, or branch one (see
        :meth:`AsyncSessionManager.create_session`)."""
        return self._wrap(
            self._call(
                self._async.create_session,
                name,
                self._inner(branch_from),
                exist_ok=exist_ok,
                fork_point=fork_point,
                fork_after=fork_after,
            )
        )

    def fork_session(
        self,
        source: str | Session,
        fork_point: int | None = None,
        *,
        fork_after: int | None = None,
        name: str | None = None,
    ) -> Session:
        """Branch ``source`` in one call (see :meth:`AsyncSessionManager.fork_session`)."""
        inner = self._inner(source)
        assert inner is not None
        return self._wrap(
            self._call(
                self._async.fork_session, inner, fork_point, fork_after=fork_after, name=name
            )
        )

    def list_branches(self, name: str) -> list[SessionInfo]:
        """The sessions branched directly from ``name`` (see
        :meth:`AsyncSessionManager.list_branches`)."""
        return self._call(self._async.list_branches, name)

    def get_tree(self, name: str) -> list[SessionInfo]:
        """Every session of ``name``'s branching tree, oldest first (see
        :meth:`AsyncSessionManager.get_tree`)."""
        return self._call(self._async.get_tree, name)

    def load_session(self, name: str | None = None, *, session_id: str | None = None) -> Session:
        """Resume an existing session by name or id (``SessionNotFoundError`` if missing)."""
        return self._wrap(self._call(self._async.load_session, name, session_id=session_id))

    def save_session(self, session: Session) -> None:
        """Write the session's unsaved changes in one transaction."""
        if not isinstance(session, Session) or session._manager is not self:
            raise SessionError("save_session takes a session of this manager")
        self._call(self._async.save_session, session._inner)

    def list_sessions(
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
        """The sessions' :class:`SessionInfo`, filtered, ordered and paged: see
        :meth:`AsyncSessionManager.list_sessions`. Without arguments: every session,
        oldest created first."""
        return self._call(
            self._async.list_sessions,
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

    def get_session_info(self, name: str) -> SessionInfo | None:
        """One session's info without loading its messages, or None."""
        return self._call(self._async.get_session_info, name)

    def delete_session(self, name: str, *, missing_ok: bool = False) -> None:
        """Delete a session and its messages."""
        self._call(self._async.delete_session, name, missing_ok=missing_ok)

    def export_session(
        self, name: str, target: Target, *, format: str | None = None, overwrite: bool = False
    ) -> int:
        """Write a session to a path or text file, streamed (see the async twin)."""
        return self._call(
            self._async.export_session, name, target, format=format, overwrite=overwrite
        )

    def import_session(
        self, source: Source, *, name: str | None = None, format: str | None = None
    ) -> Session:
        """Read an exported session in one transaction, streamed (see the async twin)."""
        return self._wrap(self._call(self._async.import_session, source, name=name, format=format))

    def export_store(self, target: Target, *, overwrite: bool = False) -> int:
        """Write every session to one JSON Lines stream; returns how many (see the async
        twin)."""
        return self._call(self._async.export_store, target, overwrite=overwrite)

    def import_store(self, source: Source) -> list[str]:
        """Import every session of an :meth:`export_store` stream; returns their names."""
        return self._call(self._async.import_store, source)

    def search(
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
        """See :meth:`AsyncSessionManager.search`."""
        return self._call(
            self._async.search,
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

    def rebuild_search_index(self) -> int:
        """See :meth:`AsyncSessionManager.rebuild_search_index`."""
        return self._call(self._async.rebuild_search_index)

    def check_search_index(self) -> SearchIndexReport:
        """See :meth:`AsyncSessionManager.check_search_index`."""
        return self._call(self._async.check_search_index)

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
            forget_at_exit(self)
            autosaver = self._autosaver
            if closed_now and autosaver is not None and autosaver is not threading.current_thread():
                autosaver.join(timeout=CLOSE_WAIT + CANCEL_WAIT)

    def __enter__(self) -> SessionManager:
        return self

    def __repr__(self) -> str:
        return f"<SessionManager {describe(self._async)}>"

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

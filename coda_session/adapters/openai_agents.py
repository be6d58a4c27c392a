"""An OpenAI Agents SDK session stored by coda_session (``pip install
"coda-session[openai-agents]"``).

``CodaSession`` follows the SDK's ``Session`` protocol (``agents.memory.session``): pass it
as ``Runner.run(agent, input, session=...)`` (``run_sync`` and ``run_streamed`` too) and the
Runner loads and saves the conversation through it. One SDK session is one coda_session
session of the same name (``session_id``); its items are stored exactly as the SDK gives
them (no key added or dropped, keys in their order), which the Runner relies on when it
reads back what it wrote to recover an interrupted write.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from types import TracebackType
from typing import Any, cast

from agents.items import TResponseInputItem
from agents.memory.session_settings import SessionSettings, resolve_session_limit

from ..config import SessionConfig
from ..errors import SessionError, SessionNotFoundError
from ..manager import AsyncSessionManager
from ..models import SessionInfo
from ..search.results import SearchResult
from ..session import AsyncSession

__all__ = ["CodaSession"]


class CodaSession:
    """An Agents SDK session (the ``Session`` protocol) over an :class:`AsyncSessionManager`.

    ::

        session = CodaSession.from_url("chat-42", "sqlite+aiosqlite:///chats.db")
        result = await Runner.run(agent, "Hello", session=session)
        await session.close()   # closes the manager it made

    Args:
        session_id: the SDK's session id; the coda_session session of that name holds the
            items (created by the first ``add_items``; reads of a session never written
            return nothing and create nothing).
        manager: the manager to store through. The caller owns it: :meth:`close` leaves it
            open, close it yourself. :meth:`from_config` and :meth:`from_url` make a manager
            the session owns instead, closed by :meth:`close` (or ``async with``).
        session_settings: the SDK's settings; ``limit`` is the number of newest items
            ``get_items()`` returns when called without one (None: all of them).

    Every call reads the session's current state from storage, so several ``CodaSession``
    objects (in other tasks, threads, event loops or processes) on the same session see
    each other's writes. The manager can be used from several event loops, so the same
    object works with ``Runner.run_sync`` (its own loop) as with ``Runner.run``.
    """

    session_id: str
    session_settings: SessionSettings | None

    def __init__(
        self,
        session_id: str,
        manager: AsyncSessionManager,
        *,
        session_settings: SessionSettings | None = None,
    ) -> None:
        if not isinstance(manager, AsyncSessionManager):
            raise SessionError(
                f"expected an AsyncSessionManager, got {type(manager).__name__} "
                "(use CodaSession.from_config or CodaSession.from_url for a config or URL)"
            )
        self.session_id = session_id
        self.session_settings = session_settings or SessionSettings()
        self._manager = manager
        self._owns_manager = False

    @classmethod
    def from_config(
        cls,
        session_id: str,
        config: Mapping[str, Any] | SessionConfig | None = None,
        *,
        session_settings: SessionSettings | None = None,
    ) -> CodaSession:
        """A session over a new manager made from ``config`` (the spec's ``{"session":
        {...}}`` dict, a :class:`SessionConfig`, or None for the defaults), owned by the
        session: :meth:`close` closes it."""
        made = cls(session_id, AsyncSessionManager(config), session_settings=session_settings)
        made._owns_manager = True
        return made

    @classmethod
    def from_url(
        cls,
        session_id: str,
        database_url: str,
        *,
        session_settings: SessionSettings | None = None,
    ) -> CodaSession:
        """A session over a new manager storing in ``database_url``
        (``sqlite+aiosqlite:///path.db``, ``postgresql+asyncpg://...``), owned by the session:
        :meth:`close` closes it."""
        return cls.from_config(
            session_id,
            {"session": {"database_url": database_url}},
            session_settings=session_settings,
        )

    @property
    def manager(self) -> AsyncSessionManager:
        """The manager underneath: listing, search, export and the rest of the library."""
        return self._manager

    async def _load(self) -> AsyncSession | None:
        try:
            return await self._manager.load_session(self.session_id)
        except SessionNotFoundError:
            return None

    # -- the SDK's Session protocol ---------------------------------------------------------

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The items oldest first, exactly as added. With ``limit`` (or, without one, the
        settings' ``limit``) the newest ``limit`` of them, still oldest first, read from
        the end of the session (not every item); ``limit`` 0 or below returns none."""
        wanted = resolve_session_limit(limit, self.session_settings)
        if wanted is not None and wanted <= 0:
            return []
        session = await self._load()
        if session is None:
            return []
        return cast(list[TResponseInputItem], await session.get_messages(wanted))

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` in one transaction: all of them are stored or none (an item
        the library refuses raises :class:`~coda_session.InvalidMessageError` before
        anything is written). Creates the session on its first write."""
        if not items:
            return
        session = await self._manager.create_session(self.session_id)
        try:
            for item in items:
                session.add_message(cast(Mapping[str, Any], item))
            await self._manager.save_session(session)
        except BaseException:
            # the manager would otherwise keep the refused batch and write it at close;
            # while a cancelled caller's save still runs it lands or fails on its own
            with contextlib.suppress(SessionError):
                session.discard_changes()
            raise

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove the newest stored item and return it (None when there is none). Atomic:
        two callers popping at the same time, in any task, thread or process, never get
        the same item."""
        session = await self._load()
        if session is None:
            return None
        popped = await session.pop_messages(1)
        return cast(TResponseInputItem, popped[0]) if popped else None

    async def clear_session(self) -> None:
        """Remove every item (the session itself, its metadata and its branches stay)."""
        session = await self._load()
        if session is None:
            return
        session.clear_messages()
        try:
            await self._manager.save_session(session)
        except BaseException:
            with contextlib.suppress(SessionError):
                session.discard_changes()
            raise

    # -- beyond the protocol ----------------------------------------------------------------

    async def fork(self, fork_point: int | None = None, *, name: str | None = None) -> CodaSession:
        """Branch this session: a new session showing its first ``fork_point`` items (all
        of them with None; a negative one counts from the end), copying none
        (copy-on-write). Named ``name``, or ``"<session_id>~<8 hex digits>"``. The branch
        uses the same manager (not owned by the branch) and settings."""
        branch = await self._manager.fork_session(self.session_id, fork_point, name=name)
        return CodaSession(branch.name, self._manager, session_settings=self.session_settings)

    async def search(self, query: str, **filters: Any) -> SearchResult:
        """Full-text search of this session's items: :meth:`AsyncSessionManager.search`
        with ``session=session_id`` (the other keyword filters as there)."""
        return await self._manager.search(query, session=self.session_id, **filters)

    async def info(self) -> SessionInfo | None:
        """The session's :class:`~coda_session.SessionInfo` (None before its first write)."""
        return await self._manager.get_session_info(self.session_id)

    async def close(self) -> None:
        """Close the manager if this session made it (:meth:`from_config`,
        :meth:`from_url`); a manager given to the constructor is left open."""
        if self._owns_manager:
            await self._manager.close()

    async def __aenter__(self) -> CodaSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<CodaSession {self.session_id!r} over {self._manager!r}>"

"""A LangChain chat message history stored by coda_session (``pip install
"coda-session[langchain]"``).

``CodaChatMessageHistory`` is a ``langchain_core.chat_history.BaseChatMessageHistory``: hand it
to ``RunnableWithMessageHistory`` (or call it yourself) and the conversation is stored in the
coda_session session of the same name (``session_id``). Each message is stored as the dict
LangChain's own ``message_to_dict`` gives (``{"type": "ai", "data": {...}}``), exactly, and
read back with ``messages_from_dict``, so every message type comes back equal: its id,
``additional_kwargs``, ``response_metadata``, tool calls, usage, content parts and name.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    BaseMessage,
    convert_to_messages,
    message_to_dict,
    messages_from_dict,
)

from ..errors import SessionError, SessionNotFoundError
from ..manager import AsyncSessionManager
from ..session import AsyncSession
from ..sync import Session, SessionManager

__all__ = ["CodaChatMessageHistory", "from_stored"]

T = TypeVar("T")


def from_stored(items: Sequence[Mapping[str, Any]]) -> list[BaseMessage]:
    """LangChain messages from stored items: the ``message_to_dict`` form (``type`` and
    ``data``) through ``messages_from_dict``; a chat message of the plain API (``role`` and
    ``content``, as ``session.add_message({"role": "user", ...})`` stores it) through
    ``convert_to_messages``. Anything else raises ``ValueError`` (LangChain's own)."""
    messages: list[BaseMessage] = []
    for item in items:
        if "role" not in item and isinstance(item.get("data"), Mapping):
            messages.extend(messages_from_dict([dict(item)]))
        else:
            messages.extend(convert_to_messages([dict(item)]))
    return messages


def _run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end from blocking code: on a new event loop in this thread, or,
    when this thread already runs a loop (blocking code called from async code), on a new
    loop in a helper thread. The async manager works from loops that come and go."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(asyncio.run(coro))
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)

    helper = threading.Thread(target=run, name="coda-session-langchain")
    helper.start()
    helper.join()
    if failure:
        raise failure[0]
    return outcome[0]


class CodaChatMessageHistory(BaseChatMessageHistory):
    """A LangChain chat message history over a coda_session manager.

    ::

        history = CodaChatMessageHistory("chat-42", manager)
        history.add_messages([HumanMessage("Hi"), AIMessage("Hello!")])   # one save
        history.messages                                                   # both, equal

    Args:
        session_id: the name of the coda_session session holding the messages (created by
            the first write; reading a session never written returns ``[]`` and creates
            nothing).
        manager: a :class:`~coda_session.SessionManager` or an
            :class:`~coda_session.AsyncSessionManager`, owned by the caller (this class
            never closes it).

    Both kinds of manager serve every method. With an :class:`AsyncSessionManager` the
    async methods (``aget_messages``, ``aadd_messages``, ``aclear``) run on the caller's
    loop, and the blocking ones (``messages``, ``add_messages``, ``clear``) run the same
    calls on a loop of their own (in a helper thread when called from inside a running
    loop). With a :class:`SessionManager` the blocking methods call it directly and the
    async ones run them in a worker thread, so the caller's loop is never blocked.

    Every call reads the session's current state from storage, so several histories (in
    other tasks, threads or processes) on one session see each other's writes.
    """

    def __init__(self, session_id: str, manager: AsyncSessionManager | SessionManager) -> None:
        if not isinstance(manager, AsyncSessionManager | SessionManager):
            raise SessionError(
                f"expected a SessionManager or an AsyncSessionManager, got {type(manager).__name__}"
            )
        super().__init__()
        self.session_id = session_id
        self._manager = manager

    @property
    def manager(self) -> AsyncSessionManager | SessionManager:
        """The manager underneath: listing, search, branching and the rest of the library."""
        return self._manager

    # -- blocking ---------------------------------------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The messages, oldest first, each equal to the one added."""
        manager = self._manager
        if isinstance(manager, AsyncSessionManager):
            return _run_blocking(self.aget_messages())
        try:
            session = manager.load_session(self.session_id)
        except SessionNotFoundError:
            return []
        return from_stored(session.get_messages())

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` in one save (one transaction: all of them or none)."""
        manager = self._manager
        if isinstance(manager, AsyncSessionManager):
            _run_blocking(self.aadd_messages(messages))
            return
        if not messages:
            return
        session = manager.create_session(self.session_id)
        _write(manager, session, lambda: _append(session, messages))

    def clear(self) -> None:
        """Remove every message (the session itself, its metadata and branches stay)."""
        manager = self._manager
        if isinstance(manager, AsyncSessionManager):
            _run_blocking(self.aclear())
            return
        try:
            session = manager.load_session(self.session_id)
        except SessionNotFoundError:
            return
        _write(manager, session, session.clear_messages)

    # -- async ------------------------------------------------------------------------------

    async def aget_messages(self) -> list[BaseMessage]:
        """The messages, oldest first, each equal to the one added."""
        manager = self._manager
        if isinstance(manager, SessionManager):
            return await asyncio.to_thread(lambda: self.messages)
        session = await self._aload(manager)
        return [] if session is None else from_stored(await session.get_messages())

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` in one save (one transaction: all of them or none)."""
        manager = self._manager
        if isinstance(manager, SessionManager):
            await asyncio.to_thread(self.add_messages, messages)
            return
        if not messages:
            return
        session = await manager.create_session(self.session_id)
        await _awrite(manager, session, lambda: _append(session, messages))

    async def aclear(self) -> None:
        """Remove every message (the session itself, its metadata and branches stay)."""
        manager = self._manager
        if isinstance(manager, SessionManager):
            await asyncio.to_thread(self.clear)
            return
        session = await self._aload(manager)
        if session is not None:
            await _awrite(manager, session, session.clear_messages)

    async def _aload(self, manager: AsyncSessionManager) -> AsyncSession | None:
        try:
            return await manager.load_session(self.session_id)
        except SessionNotFoundError:
            return None

    def __repr__(self) -> str:
        return f"<CodaChatMessageHistory {self.session_id!r} over {self._manager!r}>"


def _append(session: AsyncSession | Session, messages: Sequence[BaseMessage]) -> None:
    for message in messages:
        session.add_message(message_to_dict(message))


def _write(manager: SessionManager, session: Session, change: Callable[[], None]) -> None:
    try:
        change()
        manager.save_session(session)
    except BaseException:
        # the manager would otherwise keep the refused change and write it at close
        with contextlib.suppress(SessionError):
            session.discard_changes()
        raise


async def _awrite(
    manager: AsyncSessionManager, session: AsyncSession, change: Callable[[], None]
) -> None:
    try:
        change()
        await manager.save_session(session)
    except BaseException:
        # as in _write; a cancelled caller's save still under way lands or fails on its own
        with contextlib.suppress(SessionError):
            session.discard_changes()
        raise

"""A Google ADK session service stored by coda_session (``pip install
"coda-session[google-adk]"``).

``CodaSessionService`` is a ``google.adk.sessions.BaseSessionService``: give it to
``Runner(..., session_service=...)`` and the Runner creates, loads and appends to sessions
through it. What is stored where:

- one ADK session is one coda_session session named
  ``"adk/<app_name>/<user_id>/<session_id>"`` (each part with ``%`` written ``%25`` and
  ``/`` written ``%2F``, so the parts never run together; the whole name is at most 255
  characters). Its metadata holds ``app_name``, ``user_id``, ``session_id``,
  ``last_update_time`` (the ADK revision: the timestamp of the last appended event, or just
  above the previous revision when that event's is not later) and
  ``state`` (the session-scoped state);
- each ADK event is one message ``{"type": "adk_event", "event": <the event's JSON>}``, the
  JSON being ``event.model_dump(mode="json", exclude_none=True)`` as ADK's own database
  service stores it; it reads back as an equal ``Event``;
- app state (``app:`` keys) lives in the metadata of a session named
  ``"adk-state/<app_name>"``, user state (``user:`` keys) in ``"adk-state/<app_name>/<user_id>"``,
  one metadata key per state key (without its prefix), so writers of different keys merge;
- ``temp:`` keys are never stored: they live in the session object of the invocation only.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any, cast

from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import (
    SessionNotFoundError as AdkSessionNotFoundError,
)
from google.adk.events.event import Event
from google.adk.sessions import BaseSessionService, Session, State
from google.adk.sessions.base_session_service import GetSessionConfig, ListSessionsResponse
from pydantic_core import to_jsonable_python

from ..config import SessionConfig
from ..errors import SessionError, SessionExistsError, SessionNotFoundError
from ..manager import AsyncSessionManager
from ..models import SessionInfo
from ..session import AsyncSession

__all__ = ["EVENT_TYPE", "CodaSessionService", "app_state_name", "session_name", "user_state_name"]

#: The ``type`` of the message an ADK event is stored in.
EVENT_TYPE = "adk_event"

# ADK's own wording, so callers matching on it see the same text
_STALE_MESSAGE = (
    "The session has been modified in storage since it was loaded. "
    "Please reload the session before appending more events."
)


def _part(value: str) -> str:
    return value.replace("%", "%25").replace("/", "%2F")


def session_name(app_name: str, user_id: str, session_id: str) -> str:
    """The coda_session session name of an ADK session."""
    return f"adk/{_part(app_name)}/{_part(user_id)}/{_part(session_id)}"


def app_state_name(app_name: str) -> str:
    """The name of the coda_session session whose metadata holds an app's ``app:`` state."""
    return f"adk-state/{_part(app_name)}"


def user_state_name(app_name: str, user_id: str) -> str:
    """The name of the coda_session session whose metadata holds a user's ``user:`` state."""
    return f"adk-state/{_part(app_name)}/{_part(user_id)}"


def _split_state(state: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """``state`` as JSON values split into (app, user, session) deltas, prefixes removed
    and ``temp:`` keys dropped, as ADK's database service splits it."""
    app: dict[str, Any] = {}
    user: dict[str, Any] = {}
    session: dict[str, Any] = {}
    for key, value in cast(dict[str, Any], to_jsonable_python(dict(state))).items():
        if key.startswith(State.APP_PREFIX):
            app[key.removeprefix(State.APP_PREFIX)] = value
        elif key.startswith(State.USER_PREFIX):
            user[key.removeprefix(State.USER_PREFIX)] = value
        elif not key.startswith(State.TEMP_PREFIX):
            session[key] = value
    return app, user, session


def _merged(
    app: Mapping[str, Any], user: Mapping[str, Any], session: Mapping[str, Any]
) -> dict[str, Any]:
    merged = dict(session)
    merged.update({State.APP_PREFIX + k: v for k, v in app.items()})
    merged.update({State.USER_PREFIX + k: v for k, v in user.items()})
    return merged


def _event_of(message: Mapping[str, Any]) -> Event:
    return Event.model_validate(message["event"])


class CodaSessionService(BaseSessionService):
    """An ADK session service over an :class:`AsyncSessionManager`.

    ::

        service = CodaSessionService.from_url("sqlite+aiosqlite:///adk.db")
        runner = Runner(agent=agent, app_name="my_app", session_service=service)
        ...
        await service.close()   # closes the manager it made

    Args:
        manager: the manager to store through. The caller owns it: :meth:`close` leaves it
            open. :meth:`from_config` and :meth:`from_url` make a manager the service owns
            instead, closed by :meth:`close` (or ``async with``).

    Every call reads storage afresh, so services in other processes on the same storage
    see each other's writes. :meth:`append_event` raises ADK's ``StaleSessionError`` when
    the session object is older than what is stored (another writer appended since it was
    loaded), as ADK's ``DatabaseSessionService`` does.
    """

    def __init__(self, manager: AsyncSessionManager) -> None:
        if not isinstance(manager, AsyncSessionManager):
            raise SessionError(
                f"expected an AsyncSessionManager, got {type(manager).__name__} "
                "(use CodaSessionService.from_config or .from_url for a config or URL)"
            )
        self._manager = manager
        self._owns_manager = False

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | SessionConfig | None = None
    ) -> CodaSessionService:
        """A service over a new manager made from ``config`` (the spec's ``{"session":
        {...}}`` dict, a :class:`SessionConfig`, or None for the defaults), closed by
        :meth:`close`."""
        made = cls(AsyncSessionManager(config))
        made._owns_manager = True
        return made

    @classmethod
    def from_url(cls, database_url: str) -> CodaSessionService:
        """A service over a new manager storing in ``database_url``
        (``sqlite+aiosqlite:///path.db``, ``postgresql+asyncpg://...``), closed by
        :meth:`close`."""
        return cls.from_config({"session": {"database_url": database_url}})

    @property
    def manager(self) -> AsyncSessionManager:
        """The manager underneath: search, export and the rest of the library."""
        return self._manager

    # -- storage helpers ----------------------------------------------------------------------

    async def _load(self, name: str) -> AsyncSession | None:
        try:
            return await self._manager.load_session(name)
        except SessionNotFoundError:
            return None

    async def _scoped_state(self, name: str) -> dict[str, Any]:
        info = await self._manager.get_session_info(name)
        return {} if info is None else dict(info.metadata)

    async def _update_scoped_state(self, name: str, delta: Mapping[str, Any]) -> None:
        if not delta:
            return
        holder = await self._manager.create_session(name)
        holder.update_metadata(delta)
        await self._save(holder)

    async def _save(self, session: AsyncSession) -> None:
        try:
            await self._manager.save_session(session)
        except BaseException:
            # a refused save would otherwise be kept and retried by the manager at close
            if session.has_unsaved_changes:
                session.discard_changes()
            raise

    def _session(
        self,
        app_name: str,
        user_id: str,
        session_id: str,
        metadata: Mapping[str, Any],
        app_state: Mapping[str, Any],
        user_state: Mapping[str, Any],
        events: list[Event] | None = None,
    ) -> Session:
        return Session(
            id=session_id,
            app_name=app_name,
            user_id=user_id,
            state=_merged(app_state, user_state, metadata.get("state") or {}),
            events=events or [],
            last_update_time=float(metadata.get("last_update_time", 0.0)),
        )

    # -- BaseSessionService -------------------------------------------------------------------

    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        """Create a session (``AlreadyExistsError`` if ``session_id`` is taken; a new UUID
        without one). ``app:``/``user:`` keys of ``state`` go to the app's and the user's
        state, ``temp:`` keys are dropped, the rest is the session's own state."""
        session_id = session_id.strip() if session_id else None
        session_id = session_id or str(uuid.uuid4())
        app_delta, user_delta, session_state = _split_state(state or {})
        name = session_name(app_name, user_id, session_id)
        try:
            stored = await self._manager.create_session(name, exist_ok=False)
        except SessionExistsError:
            raise AlreadyExistsError(f"Session with id {session_id} already exists.") from None
        now = time.time()
        metadata = {
            "app_name": app_name,
            "user_id": user_id,
            "session_id": session_id,
            "last_update_time": now,
            "state": session_state,
        }
        stored.update_metadata(metadata)
        await self._save(stored)
        await self._update_scoped_state(app_state_name(app_name), app_delta)
        await self._update_scoped_state(user_state_name(app_name, user_id), user_delta)
        return self._session(
            app_name,
            user_id,
            session_id,
            metadata,
            await self._scoped_state(app_state_name(app_name)),
            await self._scoped_state(user_state_name(app_name, user_id)),
        )

    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        """The session with its events (None if there is none). ``config.num_recent_events``
        keeps the newest that many (read from the end of the session, not every event; 0:
        none), ``config.after_timestamp`` the events whose timestamp is at least it."""
        stored = await self._load(session_name(app_name, user_id, session_id))
        if stored is None:
            return None
        recent = config.num_recent_events if config else None
        after = config.after_timestamp if config else None
        if recent == 0:
            events: list[Event] = []
        elif after is None:
            events = [_event_of(m) for m in await stored.get_messages(recent)]
        else:
            # the timestamp filter comes first, as in ADK: read them all
            events = [
                e for e in map(_event_of, await stored.get_messages()) if e.timestamp >= after
            ]
            if recent is not None:
                events = events[-recent:]
        return self._session(
            app_name,
            user_id,
            session_id,
            stored.metadata,
            await self._scoped_state(app_state_name(app_name)),
            await self._scoped_state(user_state_name(app_name, user_id)),
            events,
        )

    async def _sessions(
        self, infos: list[SessionInfo], app_name: str, user_id: str | None
    ) -> list[Session]:
        app_state = await self._scoped_state(app_state_name(app_name))
        user_states: dict[str, dict[str, Any]] = {}
        sessions = []
        for info in infos:
            meta = info.metadata
            if "session_id" not in meta:
                continue  # created and not yet given its metadata, or not an ADK session
            uid = str(meta.get("user_id", user_id))
            if uid not in user_states:
                user_states[uid] = await self._scoped_state(user_state_name(app_name, uid))
            sessions.append(
                self._session(app_name, uid, meta["session_id"], meta, app_state, user_states[uid])
            )
        return sessions

    async def list_sessions(
        self, *, app_name: str, user_id: str | None = None
    ) -> ListSessionsResponse:
        """The app's sessions (of one user, or of every user with ``user_id`` None), without
        their events, ordered by last update time, oldest first, as ADK orders them."""
        prefix = f"adk/{_part(app_name)}/" + ("" if user_id is None else f"{_part(user_id)}/")
        infos = list(await self._manager.list_sessions(name_prefix=prefix))
        sessions = await self._sessions(infos, app_name, user_id)
        sessions.sort(key=lambda s: (s.last_update_time, s.user_id, s.id))
        return ListSessionsResponse(sessions=sessions)

    async def list_sessions_page(
        self,
        *,
        app_name: str,
        user_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Session], str | None]:
        """One page of :meth:`list_sessions` (beyond ADK's protocol, which has no paging):
        at most ``limit`` sessions, in the order they were created, and the cursor of the
        next page (None on the last one), to pass back as ``cursor``. One query a page,
        however many sessions the app has."""
        prefix = f"adk/{_part(app_name)}/" + ("" if user_id is None else f"{_part(user_id)}/")
        page = await self._manager.list_sessions(name_prefix=prefix, limit=limit, cursor=cursor)
        return await self._sessions(list(page), app_name, user_id), page.next_cursor

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        """Delete a session and its events (nothing if there is none); the app's and the
        user's state stay, as in ADK."""
        await self._manager.delete_session(
            session_name(app_name, user_id, session_id), missing_ok=True
        )

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        """The user's state, keys without their ``user:`` prefix (``{}`` if none)."""
        return await self._scoped_state(user_state_name(app_name, user_id))

    async def get_app_state(self, *, app_name: str) -> dict[str, Any]:
        """The app's state, keys without their ``app:`` prefix (``{}`` if none)."""
        return await self._scoped_state(app_state_name(app_name))

    async def append_event(self, session: Session, event: Event) -> Event:
        """Store ``event`` and apply it to ``session``, as ADK's services do: a partial
        event is neither stored nor applied; ``temp:`` state changes reach ``session`` but
        are removed from the event before it is stored; ``app:``/``user:`` changes go to
        the app's and the user's state, the rest to the session's state.

        Raises ADK's ``StaleSessionError`` when storage holds a newer revision than
        ``session`` (its ``last_update_time`` is older than the stored one and its last
        event is not the stored last event): reload the session and append again. ADK's
        ``SessionNotFoundError`` when the session was deleted.
        """
        if event.partial:
            return event
        delta = dict(event.actions.state_delta) if event.actions.state_delta else {}
        temp = {k: v for k, v in delta.items() if k.startswith(State.TEMP_PREFIX)}
        if temp:
            session.state.update(temp)
            event.actions.state_delta = {
                k: v for k, v in delta.items() if not k.startswith(State.TEMP_PREFIX)
            }
        app_delta, user_delta, session_delta = _split_state(event.actions.state_delta or {})

        name = session_name(session.app_name, session.user_id, session.id)
        stored = await self._load(name)
        if stored is None:
            raise AdkSessionNotFoundError(f"Session {session.id} not found.")
        metadata = stored.metadata
        stored_time = float(metadata.get("last_update_time", 0.0))
        if stored_time > session.last_update_time and not await self._same_revision(
            stored, session
        ):
            raise StaleSessionError(_STALE_MESSAGE)

        stored.add_message(
            {"type": EVENT_TYPE, "event": event.model_dump(mode="json", exclude_none=True)}
        )
        # the revision only grows, so any write since ``session`` was loaded shows above,
        # even one whose event carries an earlier timestamp
        revision = (
            event.timestamp
            if event.timestamp > stored_time
            else math.nextafter(stored_time, math.inf)
        )
        update: dict[str, Any] = {"last_update_time": revision}
        if session_delta:
            update["state"] = {**(metadata.get("state") or {}), **session_delta}
        stored.update_metadata(update)
        await self._save(stored)
        await self._update_scoped_state(app_state_name(session.app_name), app_delta)
        await self._update_scoped_state(
            user_state_name(session.app_name, session.user_id), user_delta
        )
        session.last_update_time = revision
        # ADK's own bookkeeping of the session object (state delta applied, event appended)
        return await super().append_event(session, event)

    async def _same_revision(self, stored: AsyncSession, session: Session) -> bool:
        """Whether ``session``, older by its time than storage, still shows storage's last
        event (ADK's fallback for session objects that carry no storage revision)."""
        newest = await stored.get_messages(1)
        if not session.events:
            return not newest
        return bool(newest) and newest[0]["event"].get("id") == session.events[-1].id

    # -- beyond ADK -----------------------------------------------------------------------------

    async def fork_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        num_events: int | None = None,
        new_session_id: str | None = None,
    ) -> Session:
        """Branch a session (ADK has no fork): a new session of the same app and user,
        ``new_session_id`` or a new UUID, with the source's first ``num_events`` events (all
        with None; a negative one counts from the end) and its session state, copying no
        event (copy-on-write). ADK's ``SessionNotFoundError`` if the source is missing,
        ``AlreadyExistsError`` if ``new_session_id`` is taken."""
        new_session_id = new_session_id or str(uuid.uuid4())
        try:
            branch = await self._manager.fork_session(
                session_name(app_name, user_id, session_id),
                num_events,
                name=session_name(app_name, user_id, new_session_id),
            )
        except SessionNotFoundError:
            raise AdkSessionNotFoundError(f"Session {session_id} not found.") from None
        except SessionExistsError:
            raise AlreadyExistsError(f"Session with id {new_session_id} already exists.") from None
        branch.update_metadata({"session_id": new_session_id, "last_update_time": time.time()})
        await self._save(branch)
        forked = await self.get_session(
            app_name=app_name, user_id=user_id, session_id=new_session_id
        )
        if forked is None:  # deleted by another writer in between
            raise AdkSessionNotFoundError(f"Session {new_session_id} not found.")
        return forked

    async def close(self) -> None:
        """Close the manager if this service made it (:meth:`from_config`,
        :meth:`from_url`); a manager given to the constructor is left open."""
        if self._owns_manager:
            await self._manager.close()

    async def __aenter__(self) -> CodaSessionService:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<CodaSessionService over {self._manager!r}>"

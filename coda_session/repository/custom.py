"""SessionStorage: the simple contract for plugging in a storage of your own.

What a user implements and what its methods receive and return. The library serves the
repository protocol from it through :mod:`.storage_adapter`; nothing here depends on that.
"""

from __future__ import annotations

import copy
import uuid
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field, model_validator

from ..codec import encode_message
from ..models import SessionInfo

__all__ = [
    "UNKNOWN_STAMP",
    "UNKNOWN_TIME",
    "SessionData",
    "SessionStorage",
    "StoredSession",
    "derived_id",
    "filed_times",
]

UNKNOWN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
"""created_at/updated_at of a loaded session that came back without them, and the time a
message is filed under when it came back with neither its time nor a timestamp key."""
UNKNOWN_STAMP = UNKNOWN_TIME.isoformat()
_ID_NAMESPACE = uuid.UUID("9b1d3c52-6f0e-4c8e-a3d1-5e2f8a7b4c61")


def derived_id(name: str) -> str:
    """The id of a loaded session that came back without one: derived from its name."""
    return str(uuid.uuid5(_ID_NAMESPACE, name))


@runtime_checkable
class StoredSession(Protocol):
    """What ``SessionStorage.load`` may return besides :class:`SessionData`: any object
    with a ``name``, its ``metadata`` and ``get_messages()`` (or a ``messages`` list), for
    instance a :class:`coda_session.Session` loaded from another manager."""

    @property
    def name(self) -> str: ...

    @property
    def metadata(self) -> dict[str, Any]: ...


class SessionData(BaseModel):
    """A whole session as a :class:`SessionStorage` saves and loads it.

    ``message_ids``, ``message_timestamps`` and ``last_message_id`` are the library's bookkeeping: the storage key
    of each message (ascending, never reused within the session) and the highest key ever
    given. Store them with the session and give them back from ``load``: they let a stale
    session object's ``truncate_messages`` spare the messages another writer saved
    meanwhile, as on the built-in backends. A loaded session without them (an older store,
    or a ``load`` that returns only name, messages and metadata) numbers its messages
    1..n, which is exact as long as one session object writes it at a time.
    """

    id: str = ""
    name: str
    created_at: datetime = UNKNOWN_TIME
    updated_at: datetime = UNKNOWN_TIME
    metadata: dict[str, Any] = Field(default_factory=dict)
    messages: list[dict[str, Any]] = Field(default_factory=list)
    message_ids: list[int] = Field(default_factory=list)
    message_timestamps: list[str] = Field(default_factory=list)
    """The ISO-8601 time each message is filed under (``AsyncSession.get_entries``, the
    search filters ``after:`` / ``before:``), kept beside the messages, which are stored
    exactly as given. A loaded session without them (an older store) files each message
    under its own ``timestamp`` key, else under :data:`UNKNOWN_TIME`."""
    last_message_id: int = 0
    root_id: str = ""
    """The branching tree's key (empty: the session's own id)."""
    parent_id: str | None = None
    """The session this one was branched from, if any."""
    fork_point: int | None = None
    """How many of the parent's messages the branch started with."""

    def __init__(self, name: str | None = None, /, **fields: Any) -> None:
        """``SessionData(name, messages=..., metadata=...)`` (the reference's
        ``Session(name, messages=..., metadata=...)``) or all by keyword. Without an ``id``
        the session's id is derived from its name; without times they are
        :data:`UNKNOWN_TIME`."""
        if name is not None:
            fields["name"] = name
        super().__init__(**fields)

    @model_validator(mode="before")
    @classmethod
    def _default_id(cls, values: Any) -> Any:
        if (
            isinstance(values, dict)
            and not values.get("id")
            and isinstance(values.get("name"), str)
        ):
            return {**values, "id": derived_id(values["name"])}
        return values

    def get_messages(self) -> list[dict[str, Any]]:
        """The messages, oldest first (the list itself, as ``messages``)."""
        return self.messages

    def info(self) -> SessionInfo:
        """The :class:`SessionInfo` for ``list_all`` (size counted as the library does)."""
        records = [
            encode_message(m, at=t) for m, t in zip(self.messages, filed_times(self), strict=True)
        ]
        return SessionInfo(
            id=self.id,
            name=self.name,
            created_at=self.created_at,
            updated_at=self.updated_at,
            message_count=len(records),
            size_bytes=sum(r.byte_size() for r in records),
            metadata=copy.deepcopy(self.metadata),
            root_id=self.root_id or self.id,
            parent_id=self.parent_id,
            fork_point=self.fork_point,
        )


def filed_times(data: SessionData) -> list[str | None]:
    """The time each message is filed under, for ``encode_message(at=...)``:
    ``message_timestamps`` when they match the messages; else (an older store) None for a
    message with a timestamp key of its own (filed under it) and :data:`UNKNOWN_STAMP`
    for the others."""
    times = data.message_timestamps
    if len(times) == len(data.messages):
        return list(times)
    return [None if type(m.get("timestamp")) is str else UNKNOWN_STAMP for m in data.messages]


class SessionStorage(ABC):
    """Subclass this to store sessions your own way, and pass an instance as
    ``SessionManager(config, storage=...)`` (or to :class:`AsyncSessionManager`).

    The methods are plain (blocking) functions; the manager calls them from a worker thread,
    one at a time. Each ``save`` receives the whole session, so this contract suits small
    stores; the built-in backends write only what changed.

    Search (``manager.search``) works on every storage: without more, it loads every
    session and evaluates the query in Python. A storage that keeps an index of its own
    may also define ``search(self, request)``, taking a
    :class:`~coda_session.repository.searching.SearchRequest` (``request.query`` is the
    parsed query: its ``groups`` of phrases of index terms, computed by
    :func:`coda_session.search.analysis.terms`; ``request.session_ids``, ``roles``,
    ``after``/``before``, ``upto_id``) and returning ``(session name, message key)``
    pairs, the key being the message's entry in ``SessionData.message_ids`` (its
    1-based position when the session has none): at least every message that matches,
    in any order. Only the sessions named are loaded, and each message named is checked
    against the whole request in Python, so returning more than the matches (a coarse
    prefilter) gives the same answers, only slower; leaving a match out loses it.
    """

    @abstractmethod
    def save(self, session: SessionData) -> None:
        """Store the session, replacing any stored one of the same id."""

    @abstractmethod
    def load(self, name: str) -> SessionData | StoredSession | None:
        """The stored session of that name, or None: a :class:`SessionData` as ``save``
        received it, or any object with ``name``, ``metadata`` and ``get_messages()`` (or
        ``messages``), such as ``Session(name, messages=..., metadata=...)`` (the reference's
        form, which builds a SessionData)."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove the session of that name (no error if it is missing)."""

    @abstractmethod
    def list_all(self) -> list[SessionInfo]:
        """Every stored session's info (``SessionData.info()`` computes one)."""

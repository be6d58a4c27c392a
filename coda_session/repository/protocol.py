"""The repository protocol: the contract every storage backend implements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from ..errors import SessionTooLargeError
from ..models import MessageRecord, SessionInfo, SessionRecord

__all__ = [
    "Repository",
    "SaveRequest",
    "SaveResult",
    "Truncation",
    "check_import_size",
    "collect_import",
]


def check_import_size(name: str, size: int, max_bytes: int | None) -> None:
    """SessionTooLargeError once an import's running size passes ``max_bytes``."""
    if max_bytes is not None and size > max_bytes:
        raise SessionTooLargeError(name, size, max_bytes)


async def collect_import(
    name: str, batches: AsyncIterator[Sequence[MessageRecord]], max_bytes: int | None
) -> tuple[list[MessageRecord], int]:
    """Every message of an import's batches and their size, checked as they come (for
    backends that store the whole session at the end)."""
    messages: list[MessageRecord] = []
    size = 0
    async for batch in batches:
        messages.extend(batch)
        size += sum(m.byte_size() for m in batch)
        check_import_size(name, size, max_bytes)
    return messages, size


@dataclass(slots=True, frozen=True)
class Truncation:
    """Keep only the newest ``keep`` of the session's messages with ``id <= upto_id``.

    Bounding by ``upto_id`` (the newest message the caller had seen) means messages that
    another writer saved in the meantime are never removed by this caller's truncation.
    """

    upto_id: int
    keep: int


@dataclass(slots=True, frozen=True)
class SaveRequest:
    """The delta one save writes, all or nothing."""

    session_id: str
    name: str
    updated_at: datetime
    messages: Sequence[MessageRecord]
    truncation: Truncation | None = None
    metadata_patch: Mapping[str, Any] | None = None
    max_bytes: int | None = None
    """Refuse (SessionTooLargeError, nothing written) a save that grows the session past
    this many stored bytes."""


@dataclass(slots=True, frozen=True)
class SaveResult:
    """What storage holds for the session after a save."""

    ids: list[int]
    message_count: int
    size_bytes: int
    last_message_id: int
    metadata: dict[str, Any] | None
    """The session's stored metadata after the save (None: the backend did not say)."""
    previous_last_id: int = -1
    """The session's newest message id before this save (-1: unknown). Equal to the
    truncation/view bound the caller had, it proves nobody else appended meanwhile."""


@runtime_checkable
class Repository(Protocol):
    """Async storage of sessions and their messages.

    Implementations raise only :mod:`coda_session.errors` exceptions. Every method is one
    transaction: it either happens entirely or not at all.
    """

    async def open(self) -> None:
        """Connect, create or migrate the schema; idempotent."""
        ...

    async def aclose(self) -> None:
        """Release connections; idempotent."""
        ...

    async def create_session(
        self, record: SessionRecord, *, copy_from: str | None = None
    ) -> SessionRecord:
        """Insert a new session (SessionExistsError if the name is taken).

        With ``copy_from`` (a session id) the new session starts with a copy of that
        session's messages and metadata (SessionNotFoundError if it is gone).
        """
        ...

    async def load_session(
        self, *, name: str | None = None, session_id: str | None = None, tail: int = 0
    ) -> SessionRecord | None:
        """One session by name or id, with its newest ``tail`` messages; None if missing."""
        ...

    async def read_messages(
        self, session_id: str, *, upto_id: int, limit: int | None
    ) -> list[MessageRecord]:
        """The newest ``limit`` (all when None) messages with ``id <= upto_id``, oldest first."""
        ...

    async def read_page(
        self, session_id: str, *, after_id: int, upto_id: int, limit: int
    ) -> list[MessageRecord]:
        """At most ``limit`` messages with ``after_id < id <= upto_id``, oldest first."""
        ...

    async def import_session(
        self,
        record: SessionRecord,
        batches: AsyncIterator[Sequence[MessageRecord]],
        *,
        max_bytes: int | None = None,
    ) -> SessionRecord:
        """Create ``record`` and fill it from ``batches`` in one transaction.

        ``record.metadata`` / ``updated_at`` are read after the last batch (an importer may
        learn them late). Any error, from storage or raised by ``batches``, writes nothing.
        SessionExistsError if the name is taken; SessionTooLargeError past ``max_bytes``.
        """
        ...

    async def save(self, request: SaveRequest) -> SaveResult:
        """Apply a delta atomically (SessionNotFoundError if the session was deleted)."""
        ...

    async def delete_session(self, session_id: str) -> bool:
        """Delete a session and its messages; False if it did not exist."""
        ...

    async def list_sessions(self) -> list[SessionInfo]:
        """Every session's info, oldest created first, in one query."""
        ...

    async def text_length(
        self, session_id: str, *, upto_id: int, limit: int | None
    ) -> tuple[int, int]:
        """(characters of role + content + extra keys, message count) of the newest
        ``limit`` messages with ``id <= upto_id``, summed by the storage."""
        ...

"""The repository protocol: the contract every storage backend implements.

It names no backend: the backends import it (and inherit it), :mod:`.factory` chooses
one for a configuration.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from ..models import MessageRecord, SessionInfo, SessionRecord
from .base import SaveRequest, SaveResult

__all__ = ["Repository", "SessionReads", "Snapshot"]


class SessionReads(Protocol):
    """The reads an export makes: a repository's, and a snapshot's of one state."""

    async def list_sessions(self) -> list[SessionInfo]:
        """Every session's info, oldest created first, in one query."""
        ...

    async def load_session(
        self, *, name: str | None = None, session_id: str | None = None, tail: int = 0
    ) -> SessionRecord | None:
        """One session by name or id, with its newest ``tail`` messages; None if missing."""
        ...

    async def read_page(
        self,
        session_id: str,
        *,
        after_id: int,
        upto_id: int,
        limit: int,
        root_id: str | None = None,
    ) -> list[MessageRecord]:
        """At most ``limit`` messages with ``after_id < id <= upto_id``, oldest first."""
        ...


class Snapshot(SessionReads, Protocol):
    """Reads of one committed state of the store, for as long as it is open."""

    #: True when a message id names one message in the whole store (a branch shows its
    #: parent's messages under their ids): an export then finds what a branch shares
    #: with its parent by a few reads instead of reading all it shares
    global_ids: bool


@runtime_checkable
class Repository(SessionReads, Protocol):
    """Async storage of sessions and their messages.

    Implementations raise only :mod:`coda_session.errors` exceptions. Every method is one
    transaction: it either happens entirely or not at all. A backend may inherit this
    class (the shipped ones do) or only match it: :func:`isinstance` checks the methods.
    What a backend may lack is in :mod:`.capabilities`.
    """

    async def open(self) -> None:
        """Connect, create or migrate the schema; idempotent."""
        ...

    async def aclose(self) -> None:
        """Release connections; idempotent."""
        ...

    async def create_session(
        self,
        record: SessionRecord,
        *,
        copy_from: str | None = None,
        fork_point: int | None = None,
        fork_after: int | None = None,
        tail: int = 0,
    ) -> SessionRecord:
        """Insert a new session (SessionExistsError if the name is taken).

        With ``copy_from`` (a session id) the new session is a branch of that session
        (SessionNotFoundError if it is gone): it starts with its metadata and shows its
        first ``fork_point`` messages (a negative one counts from the end, against the
        count the source has in the same transaction), or those up to and including the message whose id
        is ``fork_after``, or all of them (InvalidMessageError for a point out of range or
        an id the source does not show). Its ``parent_id``, ``fork_point`` (the messages
        it started with) and ``root_id`` (the source's) are set. Nothing done to either
        session afterwards changes what the other shows. The record returned holds the new
        session's newest ``tail`` messages, as :meth:`load_session` would (a branch
        starts with its source's: the caller reads no more).
        """
        ...

    async def read_messages(
        self, session_id: str, *, upto_id: int, limit: int | None, root_id: str | None = None
    ) -> list[MessageRecord]:
        """The newest ``limit`` (all when None) messages with ``id <= upto_id``, oldest first."""
        ...

    async def import_session(
        self,
        record: SessionRecord,
        batches: Iterable[Sequence[MessageRecord]],
        *,
        max_bytes: int | None = None,
        fork: tuple[str, int] | None = None,
    ) -> SessionRecord:
        """Create ``record`` and fill it from ``batches`` in one transaction; with
        ``fork`` (a session id and a fork point) as a branch of that session that then
        gets the batches' messages.

        ``batches`` is already validated and re-iterable: each iteration reads it again from
        the start (so a transaction may be retried), synchronously (it reads a local file;
        a backend may iterate it on a worker thread). Any error, from storage or raised by
        ``batches``, writes nothing. SessionExistsError if the name is taken;
        SessionTooLargeError past ``max_bytes``.
        """
        ...

    async def save(self, request: SaveRequest) -> SaveResult:
        """Apply a delta atomically (SessionNotFoundError if the session was deleted):
        the truncation, then ``drop_newest``, then the new messages and the metadata."""
        ...

    async def delete_session(self, session_id: str) -> bool:
        """Delete a session and its messages; False if it did not exist. Its branches
        keep showing what they showed."""
        ...

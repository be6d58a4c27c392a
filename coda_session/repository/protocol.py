"""The repository protocol: the contract every storage backend implements."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

from ..config import SessionConfig
from ..errors import InvalidConfigError
from ..models import MessageRecord, SessionInfo, SessionRecord
from .base import SaveRequest, SaveResult
from .custom import SessionStorage, StorageAdapter
from .memory import MemoryRepository

__all__ = ["Repository", "Snapshot", "open_repository"]


class Snapshot(Protocol):
    """Reads of one committed state of the store, for as long as it is open."""

    #: True when a message id names one message in the whole store (a branch shows its
    #: parent's messages under their ids): an export then finds what a branch shares
    #: with its parent by a few reads instead of reading all it shares
    global_ids: bool

    async def list_sessions(self) -> list[SessionInfo]: ...

    async def load_session(
        self, *, name: str | None = None, session_id: str | None = None, tail: int = 0
    ) -> SessionRecord | None: ...

    async def read_page(
        self,
        session_id: str,
        *,
        after_id: int,
        upto_id: int,
        limit: int,
        root_id: str | None = None,
    ) -> list[MessageRecord]: ...


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

    async def load_session(
        self, *, name: str | None = None, session_id: str | None = None, tail: int = 0
    ) -> SessionRecord | None:
        """One session by name or id, with its newest ``tail`` messages; None if missing."""
        ...

    async def read_messages(
        self, session_id: str, *, upto_id: int, limit: int | None, root_id: str | None = None
    ) -> list[MessageRecord]:
        """The newest ``limit`` (all when None) messages with ``id <= upto_id``, oldest first."""
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

    async def list_tree(self, root_id: str) -> list[SessionInfo]:
        """Every session of the branching tree whose ``root_id`` is given, oldest created
        first, in one query."""
        ...

    async def list_sessions(self) -> list[SessionInfo]:
        """Every session's info, oldest created first, in one query."""
        ...

    def snapshot(self) -> AbstractAsyncContextManager[Snapshot]:
        """``async with repo.snapshot() as snap:`` reads of one committed state: an export
        made through it never mixes two generations of a session another writer rewrites
        meanwhile (a read transaction spanning the pages, on SQL databases)."""
        ...

    async def text_length(
        self, session_id: str, *, upto_id: int, limit: int | None, root_id: str | None = None
    ) -> tuple[int, int]:
        """(characters of role + content + extra keys, message count) of the newest
        ``limit`` messages with ``id <= upto_id``, summed by the storage."""
        ...


def open_repository(
    config: SessionConfig, storage: Any = None, *, private_loop: bool = False
) -> Repository:
    """The repository for a configuration, or the one that serves ``storage``.

    ``storage`` is a :class:`~coda_session.SessionStorage` of the caller's, or a ready
    repository. ``private_loop`` says the caller's event loop serves no one else (the
    blocking API's), so the SQLite backend may run its short transactions on it directly.
    The SQL backend is imported only here, so a memory-only program never loads it.
    """
    if storage is None:
        if config.backend == "memory":
            return MemoryRepository()
        from .sql import SqlRepository

        return SqlRepository(config, inline=private_loop)
    if isinstance(storage, SessionStorage):
        return StorageAdapter(storage)
    if isinstance(storage, Repository):
        return storage
    raise InvalidConfigError(
        f"storage must be a SessionStorage or a Repository, not {type(storage).__name__}"
    )

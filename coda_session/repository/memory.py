"""The memory backend: the repository protocol over Python dicts, one store per manager
(two managers share nothing; lost when the manager closes or the process exits)."""

from __future__ import annotations

import bisect
import copy
import functools
import gc
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

from ..errors import SessionExistsError, SessionNotFoundError
from ..models import MessageRecord, SessionInfo, SessionRecord
from .base import (
    SaveRequest,
    SaveResult,
    collect_import,
    fork_count,
    not_shown,
)
from .capabilities import RepositoryReads, Snapshots
from .delta import newest, page, save_delta
from .protocol import Repository, Snapshot
from .searching import (
    Candidates,
    Evaluation,
    Indexed,
    Searching,
    SearchRequest,
    SessionView,
    record_terms,
)

__all__ = ["MemoryRepository"]

P = ParamSpec("P")
T = TypeVar("T")


def _serialized(
    method: Callable[Concatenate[MemoryRepository, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[MemoryRepository, P], Coroutine[Any, Any, T]]:
    """Runs the method whole under the repository's thread lock: one manager may be used
    from several event loops in several threads at once. The methods never suspend, so
    the lock is never held across an await that waits."""

    @functools.wraps(method)
    async def run(self: MemoryRepository, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with self._mutex:
            return await method(self, *args, **kwargs)

    return run


@dataclass(slots=True)
class _Stored:
    record: SessionRecord
    messages: list[MessageRecord] = field(default_factory=list)
    size: int = 0
    metadata_version: int = 0  # bumped by every change of record.metadata


def _id(record: MessageRecord) -> int:
    return record.id or 0


def _fork_index(source: _Stored, point: int | None, after_id: int | None) -> int:
    """How many of the source's messages a fork at ``point`` or after message
    ``after_id`` starts with (all when neither)."""
    messages = source.messages
    if after_id is not None:
        at = bisect.bisect_left(messages, after_id, key=lambda m: m.id or 0)
        if at == len(messages) or messages[at].id != after_id:
            raise not_shown(after_id)
        return at + 1
    return fork_count(source.record.name, len(messages), point)


class MemoryRepository(Repository, Snapshots, Searching):
    """Sessions kept in this process only. Stores messages in their encoded form, exactly
    as the SQL backend does, so both behave the same."""

    def __init__(self) -> None:
        self._by_id: dict[str, _Stored] = {}
        self._by_name: dict[str, str] = {}
        self._next_id = 1
        self._mutex = threading.RLock()
        # message id -> (the record, its index terms): a search computes the terms of a
        # stored message once, not at every search (records are immutable; the identity
        # check drops an entry whose id now names another record)
        self._terms: dict[int, tuple[MessageRecord, Indexed | None]] = {}

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def _snapshot(self, stored: _Stored, tail: int) -> SessionRecord:
        rec = stored.record
        return SessionRecord(
            id=rec.id,
            name=rec.name,
            created_at=rec.created_at,
            updated_at=rec.updated_at,
            metadata=copy.deepcopy(rec.metadata),
            message_count=len(stored.messages),
            size_bytes=stored.size,
            last_message_id=stored.messages[-1].id or 0 if stored.messages else 0,
            tail=stored.messages[-tail:] if tail > 0 else [],
            metadata_version=stored.metadata_version,
            root_id=rec.root_id or rec.id,
            parent_id=rec.parent_id,
            fork_point=rec.fork_point,
        )

    def _append(self, stored: _Stored, messages: list[MessageRecord]) -> list[int]:
        ids = list(range(self._next_id, self._next_id + len(messages)))
        self._next_id += len(messages)
        stored.messages.extend(m.with_id(i) for m, i in zip(messages, ids, strict=True))
        stored.size += sum(m.byte_size() for m in messages)
        return ids

    @_serialized
    async def create_session(
        self,
        record: SessionRecord,
        *,
        copy_from: str | None = None,
        fork_point: int | None = None,
        fork_after: int | None = None,
        tail: int = 0,
    ) -> SessionRecord:
        """A new session, or a branch of ``copy_from`` (see the protocol). The branch's
        list holds the source's own record objects (they are immutable): a fork copies
        references, never messages."""
        source = None
        inherited: list[MessageRecord] = []
        # in the SQL backends' order: the source, the fork point, then the name
        if copy_from is not None:
            source = self._by_id.get(copy_from)
            if source is None:
                raise SessionNotFoundError(f"session to branch from ({copy_from}) no longer exists")
            inherited = source.messages[: _fork_index(source, fork_point, fork_after)]
        if record.name in self._by_name:
            raise SessionExistsError(f"session {record.name!r} already exists")
        root = source.record.root_id or source.record.id if source else record.id
        stored = _Stored(
            SessionRecord(
                id=record.id,
                name=record.name,
                created_at=record.created_at,
                updated_at=record.updated_at,
                metadata=copy.deepcopy(source.record.metadata if source else record.metadata),
                message_count=0,
                size_bytes=0,
                last_message_id=0,
                root_id=root,
                parent_id=copy_from,
                fork_point=(
                    None
                    if source is None
                    else record.fork_point
                    if record.fork_point is not None
                    else len(inherited)
                ),
            ),
            inherited,
            sum(m.byte_size() for m in inherited),
        )
        self._by_id[record.id] = stored
        self._by_name[record.name] = record.id
        return self._snapshot(stored, tail)

    @_serialized
    async def load_session(
        self, *, name: str | None = None, session_id: str | None = None, tail: int = 0
    ) -> SessionRecord | None:
        if session_id is None:
            session_id = self._by_name.get(name or "")
        stored = self._by_id.get(session_id) if session_id is not None else None
        return None if stored is None else self._snapshot(stored, tail)

    @_serialized
    async def read_messages(
        self, session_id: str, *, upto_id: int, limit: int | None, root_id: str | None = None
    ) -> list[MessageRecord]:
        stored = self._by_id.get(session_id)
        return [] if stored is None else newest(stored.messages, upto_id, limit)

    @_serialized
    async def read_page(
        self,
        session_id: str,
        *,
        after_id: int,
        upto_id: int,
        limit: int,
        root_id: str | None = None,
    ) -> list[MessageRecord]:
        stored = self._by_id.get(session_id)
        return [] if stored is None else page(stored.messages, after_id, upto_id, limit)

    @_serialized
    async def import_session(
        self,
        record: SessionRecord,
        batches: Iterable[Sequence[MessageRecord]],
        *,
        max_bytes: int | None = None,
        fork: tuple[str, int] | None = None,
    ) -> SessionRecord:
        if record.name in self._by_name:
            raise SessionExistsError(f"session {record.name!r} already exists")
        base = 0
        if fork is not None:
            source = self._by_id.get(fork[0])
            if source is None:
                raise SessionNotFoundError(f"session to branch from ({fork[0]}) no longer exists")
            base = sum(m.byte_size() for m in source.messages[: _fork_index(source, fork[1], None)])

        # everything is checked before anything is stored
        messages, _ = collect_import(
            record.name, batches, None if max_bytes is None else max_bytes - base
        )
        if record.name in self._by_name:
            raise SessionExistsError(f"session {record.name!r} already exists")
        if fork is None:
            created = await self.create_session(record)
        else:
            created = await self.create_session(record, copy_from=fork[0], fork_point=fork[1])
        stored = self._by_id[created.id]
        stored.record.metadata = copy.deepcopy(record.metadata)
        stored.record.updated_at = record.updated_at
        self._append(stored, messages)
        return self._snapshot(stored, 0)

    @_serialized
    async def save(self, request: SaveRequest) -> SaveResult:
        stored = self._by_id.get(request.session_id)
        if stored is None:
            raise SessionNotFoundError(f"session {request.name!r} was deleted")
        # computed first, then applied: all or nothing
        delta = save_delta(
            request,
            stored.messages,
            size=stored.size,
            metadata=stored.record.metadata,
            metadata_version=stored.metadata_version,
            first_id=self._next_id,
        )
        self._next_id += len(delta.added)
        # in place: an append costs what it adds, not the length of the session
        del stored.messages[delta.end :]
        del stored.messages[: delta.start]
        stored.messages.extend(delta.added)
        stored.size = delta.size_bytes
        if delta.patched:
            stored.record.metadata = delta.metadata
            stored.metadata_version += 1
        stored.record.updated_at = request.updated_at
        return delta.result(stored.metadata_version)

    @_serialized
    async def delete_session(self, session_id: str) -> bool:
        stored = self._by_id.pop(session_id, None)
        if stored is None:
            return False
        del self._by_name[stored.record.name]
        return True

    @_serialized
    async def list_sessions(self) -> list[SessionInfo]:
        snaps = [self._snapshot(s, 0) for s in self._by_id.values()]
        snaps.sort(key=lambda r: (r.created_at, r.name))
        collecting = gc.isenabled()
        try:  # as the SQL backend (ops.list_all): no collector passes over the list
            gc.disable()
            return [s.info() for s in snaps]
        finally:
            if collecting:
                gc.enable()

    @_serialized
    async def search_messages(self, request: SearchRequest) -> Candidates:
        """The Python evaluation (:class:`.Evaluation`) over the store, each stored
        message's terms computed once and kept while it is stored."""
        cache = self._terms

        def terms_of(record: MessageRecord) -> Indexed | None:
            key = record.id or 0
            kept = cache.get(key)
            if kept is not None and kept[0] is record:
                return kept[1]
            found = record_terms(record)
            if found is not None:
                found = Indexed(found.terms, frozenset(found.terms))
            cache[key] = (record, found)
            return found

        evaluation = Evaluation(request, global_ids=True, terms_of=terms_of)
        upto = request.upto_id
        held = 0
        for stored in sorted(
            self._by_id.values(), key=lambda s: (s.record.created_at, s.record.name)
        ):
            rec = stored.record
            messages = stored.messages
            held += len(messages)
            view = SessionView(rec.id, rec.root_id or rec.id, rec.created_at, rec.updated_at)
            if not evaluation.wants(view):
                continue
            end = len(messages) if upto is None else bisect.bisect_right(messages, upto, key=_id)
            for position in range(end):
                evaluation.add(view, position, messages[position])
        if len(cache) > 2 * held + 1024:
            # entries of messages no longer stored: keep only what the store still holds
            live = {id(m) for s in self._by_id.values() for m in s.messages}
            self._terms = {k: v for k, v in cache.items() if id(v[0]) in live}
        return evaluation.candidates()

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Snapshot]:
        """The store as it is now, unchanged by writes made while the snapshot is open:
        the reads of a copy (records are immutable; the lists holding them and the
        session rows are copied when the snapshot is taken)."""
        frozen = MemoryRepository()
        with self._mutex:
            frozen._by_name = dict(self._by_name)
            frozen._by_id = {
                sid: _Stored(copy.copy(s.record), list(s.messages), s.size)
                for sid, s in self._by_id.items()
            }
        # a message id names one message in the whole store: one counter numbers them all
        yield RepositoryReads(frozen, global_ids=True)

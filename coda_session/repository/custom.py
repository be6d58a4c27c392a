"""SessionStorage: the simple contract for plugging in a storage of your own."""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel, Field

from ..codec import encode_message
from ..errors import (
    SessionError,
    SessionExistsError,
    SessionNotFoundError,
    SessionTooLargeError,
    StorageError,
)
from ..models import MessageRecord, SessionInfo, SessionRecord
from .base import SaveRequest, SaveResult, collect_import

__all__ = [
    "SessionData",
    "SessionStorage",
    "StorageAdapter",
    "StorageSnapshot",
    "running_storage",
]

T = TypeVar("T")


class SessionData(BaseModel):
    """A whole session as a :class:`SessionStorage` saves and loads it."""

    id: str
    name: str
    created_at: datetime
    updated_at: datetime
    metadata: dict[str, Any] = Field(default_factory=dict)
    messages: list[dict[str, Any]] = Field(default_factory=list)

    def info(self) -> SessionInfo:
        """The :class:`SessionInfo` for ``list_all`` (size counted as the library does)."""
        records = [encode_message(m) for m in self.messages]
        return SessionInfo(
            id=self.id,
            name=self.name,
            created_at=self.created_at,
            updated_at=self.updated_at,
            message_count=len(records),
            size_bytes=sum(r.byte_size() for r in records),
            metadata=copy.deepcopy(self.metadata),
        )


class SessionStorage(ABC):
    """Subclass this to store sessions your own way, and pass an instance as
    ``SessionManager(config, storage=...)`` (or to :class:`AsyncSessionManager`).

    The methods are plain (blocking) functions; the manager calls them from a worker thread,
    one at a time. Each ``save`` receives the whole session, so this contract suits small
    stores; the built-in backends write only what changed.
    """

    @abstractmethod
    def save(self, session: SessionData) -> None:
        """Store the session, replacing any stored one of the same id."""

    @abstractmethod
    def load(self, name: str) -> SessionData | None:
        """The stored session of that name, or None."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove the session of that name (no error if it is missing)."""

    @abstractmethod
    def list_all(self) -> list[SessionInfo]:
        """Every stored session's info (``SessionData.info()`` computes one)."""


_running = threading.local()


def _metadata_version(metadata: dict[str, Any]) -> int:
    """A version of a custom store's metadata: a digest of its content (the store keeps no
    counter), so it changes exactly when the metadata does, for every adapter alike."""
    text = json.dumps(metadata, ensure_ascii=False, separators=(",", ":"), default=repr)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def running_storage() -> StorageAdapter | None:
    """The adapter whose storage method this thread is running, if any."""
    adapter: StorageAdapter | None = getattr(_running, "adapter", None)
    return adapter


class StorageAdapter:
    """Serves the repository protocol from a :class:`SessionStorage`.

    Message ids are positions (1..n) in the stored list, which is enough for a store that
    one manager writes at a time.
    """

    def __init__(self, storage: SessionStorage) -> None:
        self._storage = storage
        self._lock = anyio.Lock()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._lock:
            try:
                return await anyio.to_thread.run_sync(self._marked, fn, args)
            except SessionError:
                raise
            except Exception as exc:
                raise StorageError(f"the custom storage failed: {exc!r}") from exc

    def _marked(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        # lets the blocking API refuse a call back into the manager that is waiting for
        # this very method (it would wait for itself)
        _running.adapter = self
        try:
            return fn(*args)
        finally:
            _running.adapter = None

    async def get(self, name: str | None, session_id: str | None) -> SessionData | None:
        """The stored session by name (or by id), or None."""
        if name is None:
            infos = await self._call(self._storage.list_all)
            name = next((i.name for i in infos if i.id == session_id), None)
            if name is None:
                return None
        data = await self._call(self._storage.load, name)
        if data is not None and not isinstance(data, SessionData):
            raise StorageError(
                f"custom storage load() returned {type(data).__name__}, not SessionData"
            )
        if data is not None and session_id is not None and data.id != session_id:
            return None
        return data

    @staticmethod
    def records_of(data: SessionData) -> list[MessageRecord]:
        return [encode_message(m).with_id(i) for i, m in enumerate(data.messages, 1)]

    @classmethod
    def record_of(cls, data: SessionData, tail: int = 0) -> SessionRecord:
        """The repository's record of a loaded session (with its newest ``tail`` messages)."""
        records = cls.records_of(data)
        return SessionRecord(
            id=data.id,
            name=data.name,
            created_at=data.created_at,
            updated_at=data.updated_at,
            metadata=copy.deepcopy(data.metadata),
            message_count=len(records),
            size_bytes=sum(r.byte_size() for r in records),
            last_message_id=len(records),
            tail=records[-tail:] if tail > 0 else [],
            metadata_version=_metadata_version(data.metadata),
        )

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def create_session(
        self, record: SessionRecord, *, copy_from: str | None = None
    ) -> SessionRecord:
        if await self.get(record.name, None) is not None:
            raise SessionExistsError(f"session {record.name!r} already exists")
        data = SessionData(
            id=record.id,
            name=record.name,
            created_at=record.created_at,
            updated_at=record.updated_at,
            metadata=dict(record.metadata),
        )
        if copy_from is not None:
            source = await self.get(None, copy_from)
            if source is None:
                raise SessionNotFoundError("the session to branch from no longer exists")
            data.metadata = copy.deepcopy(source.metadata)
            data.messages = copy.deepcopy(source.messages)
        await self._call(self._storage.save, data)
        return self.record_of(data)

    async def load_session(
        self, *, name: str | None = None, session_id: str | None = None, tail: int = 0
    ) -> SessionRecord | None:
        data = await self.get(name, session_id)
        return None if data is None else self.record_of(data, tail)

    async def read_messages(
        self, session_id: str, *, upto_id: int, limit: int | None
    ) -> list[MessageRecord]:
        data = await self.get(None, session_id)
        if data is None:
            return []
        records = self.records_of(data)[:upto_id]
        if limit is None:
            return records
        return records[-limit:] if limit > 0 else []

    async def read_page(
        self, session_id: str, *, after_id: int, upto_id: int, limit: int
    ) -> list[MessageRecord]:
        data = await self.get(None, session_id)
        if data is None:
            return []
        return self.records_of(data)[after_id:upto_id][:limit]

    async def import_session(
        self,
        record: SessionRecord,
        batches: Iterable[Sequence[MessageRecord]],
        *,
        max_bytes: int | None = None,
    ) -> SessionRecord:
        if await self.get(record.name, None) is not None:
            raise SessionExistsError(f"session {record.name!r} already exists")

        # the whole session is saved in one call at the end
        records, _ = collect_import(record.name, batches, max_bytes)
        data = SessionData(
            id=record.id,
            name=record.name,
            created_at=record.created_at,
            updated_at=record.updated_at,
            metadata=copy.deepcopy(record.metadata),
            messages=[r.to_dict() for r in records],
        )
        await self._call(self._storage.save, data)
        return self.record_of(data)

    async def save(self, request: SaveRequest) -> SaveResult:
        data = await self.get(request.name, None)
        if data is None or data.id != request.session_id:
            raise SessionNotFoundError(f"session {request.name!r} was deleted")
        # the sizes every backend counts (uncompressed): each stored message is encoded
        # once; the new ones carry theirs
        stored = [r.size for r in self.records_of(data)]
        cut = request.truncation
        drop = 0 if cut is None else max(0, min(cut.upto_id, len(stored)) - cut.keep)
        new = [r.to_dict() for r in request.messages]
        before = sum(stored)
        after = sum(stored[drop:]) + sum(r.size for r in request.messages)
        if request.max_bytes is not None and after > before and after > request.max_bytes:
            raise SessionTooLargeError(request.name, after, request.max_bytes)
        messages = data.messages[drop:] + new
        first = len(messages) - len(new) + 1
        version = seen_now = _metadata_version(data.metadata)
        metadata = dict(data.metadata)
        if request.metadata_patch:
            metadata.update(copy.deepcopy(dict(request.metadata_patch)))
            version = _metadata_version(metadata)
        updated = data.model_copy(
            update={"messages": messages, "metadata": metadata, "updated_at": request.updated_at}
        )
        await self._call(self._storage.save, updated)
        return SaveResult(
            ids=list(range(first, len(messages) + 1)),
            message_count=len(messages),
            size_bytes=after,
            last_message_id=len(messages),
            # None: what the caller saw plus its own patch (it knows that already)
            metadata=None if seen_now == request.metadata_version else copy.deepcopy(metadata),
            metadata_version=version,
        )

    async def delete_session(self, session_id: str) -> bool:
        data = await self.get(None, session_id)
        if data is None:
            return False
        await self._call(self._storage.delete, data.name)
        return True

    async def list_sessions(self) -> list[SessionInfo]:
        infos = await self._call(self._storage.list_all)
        return sorted(infos, key=lambda i: (i.created_at, i.name))

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[StorageSnapshot]:
        """Each session as one ``load()`` returned it: a custom storage has no
        transactions, so a session is read once and every page comes from that copy."""
        yield StorageSnapshot(self)

    async def text_length(
        self, session_id: str, *, upto_id: int, limit: int | None
    ) -> tuple[int, int]:
        rows = await self.read_messages(session_id, upto_id=upto_id, limit=limit)
        return sum(r.text_length() for r in rows), len(rows)


class StorageSnapshot:
    """Reads for one export: every session is loaded once, and its pages are cut from
    that copy."""

    def __init__(self, adapter: StorageAdapter) -> None:
        self._adapter = adapter
        self._loaded: dict[str, SessionData | None] = {}

    async def list_sessions(self) -> list[SessionInfo]:
        return await self._adapter.list_sessions()

    async def _data(self, name: str | None, session_id: str | None) -> SessionData | None:
        key = f"name:{name}" if name is not None else f"id:{session_id}"
        if key not in self._loaded:
            data = await self._adapter.get(name, session_id)
            self._loaded[key] = data
            if data is not None:
                self._loaded[f"id:{data.id}"] = data
        return self._loaded[key]

    async def load_session(
        self, *, name: str | None = None, session_id: str | None = None, tail: int = 0
    ) -> SessionRecord | None:
        data = await self._data(name, session_id)
        return None if data is None else self._adapter.record_of(data, tail)

    async def read_page(
        self, session_id: str, *, after_id: int, upto_id: int, limit: int
    ) -> list[MessageRecord]:
        data = await self._data(None, session_id)
        if data is None:
            return []
        return self._adapter.records_of(data)[after_id:upto_id][:limit]

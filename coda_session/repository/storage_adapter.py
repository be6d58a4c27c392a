"""The adapter that serves the repository protocol from a user's :class:`SessionStorage`.

A custom storage saves and loads whole sessions with blocking calls: the adapter runs
them on a worker thread one at a time, keeps each session's message keys, and applies a
save with :func:`.delta.save_delta` to the whole session it loads.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio

from ..codec import encode_message
from ..errors import (
    SessionError,
    SessionExistsError,
    SessionNotFoundError,
    StorageError,
)
from ..loopsafe import LoopSafeLock
from ..models import MessageRecord, SessionInfo, SessionRecord
from .base import (
    SaveRequest,
    SaveResult,
    collect_import,
    fork_count,
    not_shown,
)
from .capabilities import Snapshots
from .custom import SessionData, SessionStorage, derived_id, filed_times
from .delta import newest, page, save_delta
from .protocol import Repository
from .searching import (
    Candidates,
    Evaluation,
    Searching,
    SearchRequest,
    SessionView,
    scan_messages,
)

__all__ = ["StorageAdapter", "StorageSnapshot", "running_storage"]

T = TypeVar("T")
P = ParamSpec("P")


def _keys(data: SessionData) -> list[int]:
    """The messages' storage keys: ``message_ids`` when present, else positions 1..n
    (StorageError when present but unable to match the messages)."""
    ids = data.message_ids
    if not ids:
        return list(range(1, len(data.messages) + 1))
    if (
        len(ids) != len(data.messages)
        or ids[0] < 1
        or any(a >= b for a, b in itertools.pairwise(ids))
    ):
        raise StorageError(
            f"custom storage: session {data.name!r} came back with message_ids that do "
            f"not match its {len(data.messages)} messages (store both as saved)"
        )
    return list(ids)


def _fork_index(name: str, keys: list[int], point: int | None, after_id: int | None) -> int:
    """How many of a session's messages (``keys``) a fork starts with."""
    if after_id is not None:
        if after_id not in keys:
            raise not_shown(after_id)
        return keys.index(after_id) + 1
    return fork_count(name, len(keys), point)


def _as_data(loaded: object) -> SessionData:
    """What ``load`` returned, as SessionData (StorageError when it is no session)."""
    if isinstance(loaded, SessionData):
        return loaded
    name = getattr(loaded, "name", None)
    metadata = getattr(loaded, "metadata", None)
    get_messages = getattr(loaded, "get_messages", None)
    messages = get_messages() if callable(get_messages) else getattr(loaded, "messages", None)
    if not isinstance(name, str) or not isinstance(metadata, dict) or messages is None:
        raise StorageError(
            f"custom storage load() returned {type(loaded).__name__}: not SessionData nor an "
            "object with name, metadata and get_messages() (or messages)"
        )
    fields: dict[str, Any] = {"metadata": metadata, "messages": list(messages)}
    for key in (
        "id",
        "created_at",
        "updated_at",
        "message_ids",
        "message_timestamps",
        "last_message_id",
        "root_id",
        "parent_id",
        "fork_point",
    ):
        value = getattr(loaded, key, None)
        if value is not None:
            fields[key] = value
    try:
        return SessionData(name, **fields)
    except ValueError as exc:
        raise StorageError(f"custom storage load() returned an invalid session: {exc}") from exc


def _named_messages(
    find: Callable[[SearchRequest], Any], request: SearchRequest
) -> dict[str, set[int]]:
    """What a storage's ``search`` returned, as session name -> message keys (run on the
    worker thread, so a generator it returns runs there too)."""
    named: dict[str, set[int]] = {}
    for item in find(request):
        if (
            not isinstance(item, tuple)
            or len(item) != 2
            or type(item[0]) is not str
            or type(item[1]) is not int
        ):
            raise StorageError(
                f"custom storage search() gave {item!r:.80}: expected (session name, message "
                "key) pairs"
            )
        named.setdefault(item[0], set()).add(item[1])
    return named


_running = threading.local()


def _metadata_version(metadata: dict[str, Any]) -> int:
    """A version of a custom store's metadata: a digest of its content (the store keeps no
    counter), so it changes exactly when the metadata does, for every adapter alike."""
    text = json.dumps(metadata, ensure_ascii=False, separators=(",", ":"), default=repr)
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def running_storage() -> StorageAdapter | None:
    """The adapter whose storage method this thread is running, if any."""
    adapter: StorageAdapter | None = getattr(_running, "adapter", None)
    return adapter


def _one_writer(
    method: Callable[Concatenate[StorageAdapter, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[StorageAdapter, P], Coroutine[Any, Any, T]]:
    """Runs a read-then-write operation whole before the next one starts, so two tasks
    of one manager never both read a session and then both write it."""

    @functools.wraps(method)
    async def run(self: StorageAdapter, /, *args: P.args, **kwargs: P.kwargs) -> T:
        async with self.writing:
            return await method(self, *args, **kwargs)

    return run


class StorageAdapter(Repository, Snapshots, Searching):
    """Serves the repository protocol from a :class:`SessionStorage`.

    Message ids are the per-session keys kept in :attr:`SessionData.message_ids`
    (ascending, never reused), so a truncation bounded by the newest id a session object
    had seen spares what another writer saved meanwhile, as on the other backends.
    """

    def __init__(self, storage: SessionStorage) -> None:
        self._storage = storage
        # locks of any event loop: one manager may be used from several loops (threads)
        self._lock = LoopSafeLock()
        self.writing = LoopSafeLock()
        self._created: dict[str, str] = {}
        """name -> id of the sessions this adapter created (for a storage without ids)."""
        """Held by each read-then-write operation, whole."""

    @property
    def storage(self) -> SessionStorage:
        """The user's storage this adapter serves."""
        return self._storage

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        # the result comes back in a box the caller empties: the worker thread's own
        # frame keeps only None, so it holds no reference to a result after the call
        box: list[T] = []
        async with self._lock:
            try:
                await anyio.to_thread.run_sync(self._marked, fn, args, box)
            except SessionError:
                raise
            except Exception as exc:
                raise StorageError(f"the custom storage failed: {exc!r}") from exc
        return box.pop()

    def _marked(self, fn: Callable[..., T], args: tuple[Any, ...], box: list[T]) -> None:
        # lets the blocking API refuse a call back into the manager that is waiting for
        # this very method (it would wait for itself)
        _running.adapter = self
        try:
            box.append(fn(*args))
        finally:
            _running.adapter = None

    def _own_id(self, name: str, stored_id: str) -> str:
        # a storage that does not keep ids gives back the id derived from the name; the
        # sessions this adapter created keep the id they were created with
        if stored_id == derived_id(name):
            return self._created.get(name, stored_id)
        return stored_id

    async def get(self, name: str | None, session_id: str | None) -> SessionData | None:
        """The stored session by name (or by id), or None."""
        if name is None:
            name = next((n for n, i in self._created.items() if i == session_id), None)
        if name is None:
            infos = await self._call(self._storage.list_all)
            name = next((i.name for i in infos if self._own_id(i.name, i.id) == session_id), None)
            if name is None:
                return None
        loaded = await self._call(self._storage.load, name)
        data = None if loaded is None else _as_data(loaded)
        if data is not None and (own := self._own_id(data.name, data.id)) != data.id:
            data = data.model_copy(update={"id": own})
        if data is not None and session_id is not None and data.id != session_id:
            return None
        return data

    @staticmethod
    def records_of(data: SessionData) -> list[MessageRecord]:
        """The session's messages as records, keyed by their stored ids."""
        times = filed_times(data)
        return [
            encode_message(m, at=t).with_id(i)
            for i, m, t in zip(_keys(data), data.messages, times, strict=True)
        ]

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
            size_bytes=sum(r.size for r in records),
            last_message_id=(records[-1].id or 0) if records else 0,
            tail=records[-tail:] if tail > 0 else [],
            metadata_version=_metadata_version(data.metadata),
            root_id=data.root_id or data.id,
            parent_id=data.parent_id,
            fork_point=data.fork_point,
        )

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    @_one_writer
    async def create_session(
        self,
        record: SessionRecord,
        *,
        copy_from: str | None = None,
        fork_point: int | None = None,
        fork_after: int | None = None,
        tail: int = 0,
    ) -> SessionRecord:
        """A new session; a branch is a copy of the source's messages up to its fork point
        (a custom storage saves whole sessions), with their ids kept."""
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
            keys = _keys(source)
            k = _fork_index(source.name, keys, fork_point, fork_after)
            data.metadata = copy.deepcopy(source.metadata)
            data.messages = copy.deepcopy(source.messages[:k])
            data.message_ids = keys[:k]
            data.message_timestamps = [r.timestamp for r in self.records_of(source)[:k]]
            data.last_message_id = keys[k - 1] if k else 0
            data.root_id = source.root_id or source.id
            data.parent_id = source.id
            data.fork_point = k
        # in the SQL backends' order: the source, the fork point, then the name
        if await self.get(record.name, None) is not None:
            raise SessionExistsError(f"session {record.name!r} already exists")
        await self._call(self._storage.save, data)
        self._created[data.name] = data.id
        return self.record_of(data, tail)

    async def load_session(
        self, *, name: str | None = None, session_id: str | None = None, tail: int = 0
    ) -> SessionRecord | None:
        data = await self.get(name, session_id)
        return None if data is None else self.record_of(data, tail)

    async def read_messages(
        self, session_id: str, *, upto_id: int, limit: int | None, root_id: str | None = None
    ) -> list[MessageRecord]:
        data = await self.get(None, session_id)
        return [] if data is None else newest(self.records_of(data), upto_id, limit)

    async def read_page(
        self,
        session_id: str,
        *,
        after_id: int,
        upto_id: int,
        limit: int,
        root_id: str | None = None,
    ) -> list[MessageRecord]:
        data = await self.get(None, session_id)
        return [] if data is None else page(self.records_of(data), after_id, upto_id, limit)

    @_one_writer
    async def import_session(
        self,
        record: SessionRecord,
        batches: Iterable[Sequence[MessageRecord]],
        *,
        max_bytes: int | None = None,
        fork: tuple[str, int] | None = None,
    ) -> SessionRecord:
        if await self.get(record.name, None) is not None:
            raise SessionExistsError(f"session {record.name!r} already exists")
        inherited: list[dict[str, Any]] = []
        keys: list[int] = []
        times: list[str] = []
        base = 0
        root, parent, point = record.id, None, None
        if fork is not None:
            source = await self.get(None, fork[0])
            if source is None:
                raise SessionNotFoundError("the session to branch from no longer exists")
            source_keys = _keys(source)
            k = _fork_index(source.name, source_keys, fork[1], None)
            inherited, keys = copy.deepcopy(source.messages[:k]), source_keys[:k]
            shown = self.records_of(source)[:k]
            times, base = [r.timestamp for r in shown], sum(r.size for r in shown)
            root, parent = source.root_id or source.id, source.id
            point = record.fork_point if record.fork_point is not None else k
        # the whole session is saved in one call at the end
        records, _ = collect_import(
            record.name, batches, None if max_bytes is None else max_bytes - base
        )
        first = (keys[-1] if keys else 0) + 1
        data = SessionData(
            id=record.id,
            name=record.name,
            created_at=record.created_at,
            updated_at=record.updated_at,
            metadata=copy.deepcopy(record.metadata),
            messages=inherited + [r.to_dict() for r in records],
            message_ids=keys + list(range(first, first + len(records))),
            message_timestamps=times + [r.timestamp for r in records],
            last_message_id=first - 1 + len(records),
            root_id=root,
            parent_id=parent,
            fork_point=point,
        )
        await self._call(self._storage.save, data)
        self._created[data.name] = data.id
        return self.record_of(data)

    @_one_writer
    async def save(self, request: SaveRequest) -> SaveResult:
        data = await self.get(request.name, None)
        if data is None or data.id != request.session_id:
            raise SessionNotFoundError(f"session {request.name!r} was deleted")
        # the sizes every backend counts (uncompressed): each stored message is encoded
        # once; the new ones carry theirs
        records = self.records_of(data)
        previous = (records[-1].id or 0) if records else 0
        first = max(data.last_message_id, previous) + 1  # keys are never reused
        seen = _metadata_version(data.metadata)
        delta = save_delta(
            request,
            records,
            size=sum(r.size for r in records),
            metadata=data.metadata,
            metadata_version=seen,
            first_id=first,
        )
        kept = slice(delta.start, delta.end)
        updated = data.model_copy(
            update={
                "messages": data.messages[kept] + [r.to_dict() for r in request.messages],
                "message_ids": [r.id or 0 for r in delta.messages(records)],
                "message_timestamps": [r.timestamp for r in delta.messages(records)],
                "last_message_id": first - 1 + len(delta.added),
                # a dict of its own: the storage may keep the object load() returned
                "metadata": delta.metadata if delta.patched else dict(data.metadata),
                "updated_at": request.updated_at,
            }
        )
        await self._call(self._storage.save, updated)
        return delta.result(_metadata_version(delta.metadata) if delta.patched else seen)

    @_one_writer
    async def delete_session(self, session_id: str) -> bool:
        data = await self.get(None, session_id)
        if data is None:
            return False
        await self._call(self._storage.delete, data.name)
        self._created.pop(data.name, None)
        return True

    async def list_sessions(self) -> list[SessionInfo]:
        infos = [
            i if (own := self._own_id(i.name, i.id)) == i.id else i.model_copy(update={"id": own})
            for i in await self._call(self._storage.list_all)
        ]
        return sorted(infos, key=lambda i: (i.created_at, i.name))

    async def search_messages(self, request: SearchRequest) -> Candidates:
        """The storage's own ``search`` (see :class:`SessionStorage`) names the messages
        that may match, and only their sessions are loaded; without one, every session is
        (:func:`.scan_messages`). Either way each message is checked in Python."""
        find = getattr(self._storage, "search", None)
        if not callable(find):
            return await scan_messages(self, request)
        named = await self._call(_named_messages, find, request)
        loaded = [d for d in [await self.get(name, None) for name in named] if d is not None]
        loaded.sort(key=lambda d: (d.created_at, d.name))
        evaluation = Evaluation(request, global_ids=False)
        for data in loaded:
            view = SessionView(data.id, data.root_id or data.id, data.created_at, data.updated_at)
            if not evaluation.wants(view):
                continue
            keys = named[data.name]
            for position, record in enumerate(self.records_of(data)):
                if record.id in keys:
                    evaluation.add(view, position, record)
        return evaluation.candidates()

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[StorageSnapshot]:
        """Each session as one ``load()`` returned it: a custom storage has no
        transactions, so a session is read once and every page comes from that copy."""
        yield StorageSnapshot(self)


class StorageSnapshot:
    """Reads for one export: every session is loaded once, and its pages are cut from
    that copy."""

    # a custom storage numbers each session's messages itself
    global_ids = False

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
        self,
        session_id: str,
        *,
        after_id: int,
        upto_id: int,
        limit: int,
        root_id: str | None = None,
    ) -> list[MessageRecord]:
        data = await self._data(None, session_id)
        if data is None:
            return []
        return page(self._adapter.records_of(data), after_id, upto_id, limit)

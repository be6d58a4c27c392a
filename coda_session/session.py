"""AsyncSession: one conversation, its unsaved changes, and a cache of its newest messages."""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from .codec import encode_message, encode_metadata
from .config import SessionConfig
from .errors import (
    InvalidMessageError,
    ReadOnlyError,
    SessionError,
    SessionNotFoundError,
    SessionTooLargeError,
)
from .loopsafe import LoopSafeLock
from .models import (
    Message,
    MessageEntry,
    MessageInput,
    MessageRecord,
    SessionInfo,
    SessionRecord,
    as_dicts,
    naming_session,
)
from .repository import capabilities
from .repository.base import SaveRequest, SaveResult, Truncation
from .repository.protocol import Repository
from .timeutil import utcnow

__all__ = [
    "AsyncSession",
    "SessionHost",
    "cached_messages",
    "check_usable",
    "describe",
    "flush",
    "forget",
    "host_of",
    "save",
]

logger = logging.getLogger("coda_session")


@dataclass(frozen=True, slots=True)
class SessionHost:
    """What a session needs from the manager that made it: its configuration, its
    storage, a check that it is still open (raises ManagerClosedError), and ``keep``,
    told whenever the session gains unsaved changes (True) or has none left (False): the
    manager holds a session with unsaved changes strongly until they are saved or
    discarded, so dropping the last reference to it never loses them."""

    config: SessionConfig
    repository: Repository
    check_open: Callable[[], None]
    keep: Callable[[AsyncSession, bool], None]


_READ_ONLY = (
    "session.metadata is a read-only snapshot: a change made to it would be lost. "
    "Call session.update_metadata({{...}}) (then save_session) to change metadata{}"
)


def _read_only(*_: Any, **__: Any) -> NoReturn:
    raise ReadOnlyError(_READ_ONLY.format(""))


class ReadOnlyDict(dict[str, Any]):
    """``session.metadata``: a dict that refuses changes, loudly (:class:`ReadOnlyError`),
    instead of dropping them. ``copy.deepcopy()`` or ``json.loads(json.dumps())`` of it
    gives a plain dict to change."""

    def __setitem__(self, key: str, value: Any) -> NoReturn:
        raise ReadOnlyError(_READ_ONLY.format(f" (setting {key!r})"))

    def __delitem__(self, key: str) -> NoReturn:
        raise ReadOnlyError(_READ_ONLY.format(f" (deleting {key!r})"))

    __ior__ = update = setdefault = pop = popitem = clear = _read_only

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v, memo) for k, v in self.items()}

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __reduce__(self) -> Any:
        return (dict, (dict(self),))


class ReadOnlyList(list[Any]):
    """A list inside ``session.metadata``: refuses changes like :class:`ReadOnlyDict`."""

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = extend = insert = pop = remove = clear = sort = reverse = _read_only

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return [copy.deepcopy(v, memo) for v in self]

    def __copy__(self) -> list[Any]:
        return list(self)

    def __reduce__(self) -> Any:
        return (list, (list(self),))


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return ReadOnlyDict((k, _frozen(v)) for k, v in value.items())
    if isinstance(value, list):
        return ReadOnlyList(_frozen(v) for v in value)
    return value


class _Absent:
    """The value a metadata key had before it was set: none (one object, kept by copies)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _Absent:
        return self


_ABSENT = _Absent()


#: The token estimate: characters per token, and tokens of framing per message.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


def _retrieve(future: asyncio.Future[Any]) -> None:
    # a write whose caller was cancelled still fails loudly in its own way (the session
    # keeps its changes); mark its exception as seen so asyncio does not warn about it
    if not future.cancelled():
        future.exception()


def _count(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise InvalidMessageError(f"{what} must be a non-negative integer, got {value!r:.40}")
    return value


class AsyncSession:
    """A conversation, as returned by :class:`AsyncSessionManager`.

    Changes (``add_message``, ``clear_messages``, ``truncate_messages``,
    ``update_metadata``) are validated at once, show on the object at once, and are written
    by ``await manager.save_session(session)``. Methods that may read storage are
    coroutines (``get_messages``, ``get_token_count``); the others never do I/O.

    The object is a view as of its load or last save: messages another manager saves into
    the same session meanwhile are kept in storage and show after the next save or load.
    While it has unsaved changes its manager holds it, so dropping the object loses
    nothing (``close()``, autosave and interpreter exit write them);
    :meth:`discard_changes` drops them on purpose. :attr:`metadata` is read-only (use
    :meth:`update_metadata`). One object may be used from several event loops and
    threads: its saves run one at a time.
    """

    def __init__(self, host: SessionHost, record: SessionRecord) -> None:
        self._host = host
        self._id = record.id
        self._name = record.name
        self._created_at = record.created_at
        self._updated_at = record.updated_at
        self._metadata = record.metadata
        self._meta_patch: dict[str, Any] = {}
        # what each key patched since the last save held before (for discard_changes)
        self._meta_undo: dict[str, Any] = {}
        self._meta_version = record.metadata_version  # of the stored metadata last seen
        self._stored = record.message_count  # visible stored messages (ids <= _upto)
        self._upto = record.last_message_id
        self._size = record.size_bytes
        self._keep: int | None = None  # a pending truncation of the stored messages
        self._stored_before_cut = 0  # what _stored was before that truncation
        self._cache: list[MessageRecord] = (
            record.tail[-self._cache_size :] if self._cache_size else []
        )
        self._pending: list[MessageRecord] = []
        self._pending_bytes = 0
        self._saving = False  # a save of this object is being written now
        self._generation = 0  # bumps whenever the stored view changes
        # the sync shim touches sessions from other threads; re-entrant because a signal
        # handler may close the manager (and flush this session) while the main thread is
        # inside one of these methods
        self._state = threading.RLock()
        # one save at a time, from any event loop or thread; held until the write lands,
        # even if its caller was cancelled, or the next save would send its messages again
        self._save_lock = LoopSafeLock()
        self._autosave_error: BaseException | None = None
        self._gone = False  # storage said the session was deleted: nothing left to flush to
        self._held = False  # the manager holds this object (it has unsaved changes)
        self._root_id = record.root_id or record.id
        self._parent_id = record.parent_id
        self._fork_point = record.fork_point

    def _usable(self) -> None:
        self._host.check_open()
        error = self._autosave_error
        if error is not None:
            # a background save failed: the caller hears of it on their next call
            self._autosave_error = None
            with self._state:
                self._track()
            raise error

    @property
    def _cache_size(self) -> int:
        return self._host.config.message_cache_size

    # -- properties -------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The session's id (stable across renames and processes)."""
        return self._id

    @property
    def name(self) -> str:
        """The session's unique name."""
        return self._name

    @property
    def created_at(self) -> datetime:
        """When the session was created (aware, UTC)."""
        return self._created_at

    @property
    def parent_id(self) -> str | None:
        """The id of the session this one was branched from (None for no branch)."""
        return self._parent_id

    @property
    def fork_point(self) -> int | None:
        """How many of its parent's messages the branch started with (None for no branch)."""
        return self._fork_point

    @property
    def root_id(self) -> str:
        """The key of the session's branching tree: the id of its first session."""
        return self._root_id

    @property
    def updated_at(self) -> datetime:
        """When the session was last saved (aware, UTC)."""
        return self._updated_at

    @property
    def metadata(self) -> dict[str, Any]:
        """A read-only snapshot of the session's metadata, unsaved updates included.

        Changing it in place (``session.metadata["k"] = 1``, also inside nested values)
        raises :class:`~coda_session.ReadOnlyError`: use :meth:`update_metadata`.
        ``copy.deepcopy()`` of it is a plain dict."""
        with self._state:
            frozen: dict[str, Any] = _frozen(self._metadata)
            return frozen

    @property
    def message_count(self) -> int:
        """How many messages the session shows now (stored and unsaved)."""
        with self._state:
            return self._stored + len(self._pending)

    @property
    def has_unsaved_changes(self) -> bool:
        """True when ``save_session`` would write something."""
        with self._state:
            return self._unsaved()

    def _unsaved(self) -> bool:
        return bool(self._pending or self._keep is not None or self._meta_patch)

    def _track(self) -> None:
        """Tell the manager whether to hold this object (it has unsaved changes) or not;
        called with ``_state`` held, after every change of what a save would write. A
        session deleted from storage is not held: its changes have nowhere to go, and
        the caller was told (a save raised SessionNotFoundError), unless the failure was
        an autosave's nobody has heard of yet (close() raises it)."""
        gone = self._gone and self._autosave_error is None
        hold = self._unsaved() and not gone
        if hold is not self._held:  # tell the manager only of a change (add_message is hot)
            self._held = hold
            self._host.keep(self, hold)

    def discard_changes(self) -> None:
        """Drop the unsaved changes (added messages, a clear or truncation, metadata
        updates): the object shows its saved state again, as of its load or last save.
        No I/O. This is how changes are dropped on purpose: a manager closed with
        ``autosave_interval = 0`` warns about sessions with unsaved changes instead
        (:class:`~coda_session.UnsavedChangesWarning`). Refused with ``SessionError``
        while a save of this object is running."""
        self._usable()
        with self._state:
            if self._saving:
                raise SessionError(
                    f"session {self._name!r} is being saved by another task or thread; "
                    "discard its changes after that save returns"
                )
            self._pending.clear()
            self._pending_bytes = 0
            if self._keep is not None:
                self._keep = None
                self._stored = self._stored_before_cut
                self._cache = []  # the truncated view's cache: read again on demand
                self._generation += 1
            for key, before in self._meta_undo.items():
                if before is _ABSENT:
                    self._metadata.pop(key, None)
                else:
                    self._metadata[key] = before
            self._meta_undo.clear()
            self._meta_patch.clear()
            self._track()

    def info(self) -> SessionInfo:
        """The :class:`SessionInfo` of the saved state as this object last saw it."""
        with self._state:
            return SessionInfo.model_construct(
                id=self._id,
                name=self._name,
                created_at=self._created_at,
                updated_at=self._updated_at,
                message_count=self._stored,
                size_bytes=self._size,
                metadata=copy.deepcopy(self._metadata),
                root_id=self._root_id,
                parent_id=self._parent_id,
                fork_point=self._fork_point,
            )

    # -- changes (no I/O) -------------------------------------------------------------

    def add_message(self, message: MessageInput) -> None:
        """Append a message or item, stored exactly as given: every key, nested value
        and key order, no key added (see :data:`~coda_session.Message`).

        It must have a non-empty string ``role`` or, for an item without one
        (``function_call``, ``reasoning``...), a non-empty string ``type``; ``content``
        (a string or any JSON value) is optional, every other key (``model``, ``name``,
        ``tool_calls``, ...) is kept. A ``timestamp`` key, when given, must be an ISO-8601
        string (or a ``datetime``, stored as its ``isoformat()``) and is the time the
        message is filed under; without one it is filed under now (UTC), kept beside it
        (:meth:`get_entries`). A pydantic model is stored as ``model_dump(mode="json",
        exclude_unset=True, by_alias=True)``, a dataclass as ``dataclasses.asdict``.
        Raises :class:`~coda_session.InvalidMessageError` before changing anything.
        """
        record = encode_message(message, compress=self._host.config.compress_messages)
        self._usable()
        with self._state:
            self._check_room(record.byte_size())
            self._pending.append(record)
            self._pending_bytes += record.byte_size()
            self._track()

    def set_messages(self, messages: Iterable[MessageInput]) -> None:
        """Replace every message (validated first: one bad message changes nothing)."""
        compress = self._host.config.compress_messages
        records = [encode_message(m, compress=compress) for m in messages]
        size = sum(r.byte_size() for r in records)
        self._usable()
        with self._state:
            # every check before the first change: a refused call leaves the object (and
            # what the next save writes) exactly as it was
            if size > self._limit():
                raise SessionTooLargeError(self._name, size, self._limit())
            self._truncate(0)  # refused while saving, before it changes anything
            self._pending.extend(records)
            self._pending_bytes = size
            self._track()

    def clear_messages(self) -> None:
        """Remove every message (written by the next save)."""
        self._usable()
        with self._state:
            self._truncate(0)
            self._track()

    def truncate_messages(self, max_messages: int) -> None:
        """Keep only the newest ``max_messages`` messages (written by the next save)."""
        keep = _count(max_messages, "max_messages")
        self._usable()
        with self._state:
            self._truncate(keep)
            self._track()

    def update_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Merge ``metadata`` into the session's metadata (top-level keys replace)."""
        patch = encode_metadata(metadata)
        self._usable()
        with self._state:
            for key in patch:
                if key not in self._meta_undo:
                    self._meta_undo[key] = copy.deepcopy(self._metadata.get(key, _ABSENT))
            self._metadata.update(copy.deepcopy(patch))
            self._meta_patch.update(patch)
            self._track()

    def _limit(self) -> int:
        return self._host.config.max_session_bytes

    def _check_room(self, more: int) -> None:
        # the stored size is known exactly unless a truncation is pending; then the save,
        # which checks the stored total in its transaction, decides
        if self._keep is None:
            size = self._size + self._pending_bytes + more
            if size > self._limit():
                raise SessionTooLargeError(self._name, size, self._limit())

    def _truncate(self, keep: int) -> None:
        if self._saving:
            raise SessionError(
                f"session {self._name!r} is being saved by another task or thread; "
                "clear or truncate it after that save returns"
            )
        total = self._stored + len(self._pending)
        excess = total - keep
        if excess <= 0:
            return
        drop_stored = min(excess, self._stored)
        if drop_stored:
            if self._keep is None:
                self._stored_before_cut = self._stored
            self._stored -= drop_stored
            self._keep = self._stored
            self._cache = self._cache[len(self._cache) - min(len(self._cache), self._stored) :]
            self._generation += 1
        if excess > drop_stored:
            del self._pending[: excess - drop_stored]
            self._pending_bytes = sum(r.byte_size() for r in self._pending)

    # -- reads --------------------------------------------------------------------------

    def _plan(
        self, limit: int | None
    ) -> tuple[list[MessageRecord] | None, int, int, list[MessageRecord]]:
        """(records if no I/O is needed, stored messages wanted, generation, pending)."""
        pending = list(self._pending)
        want = self._stored if limit is None else max(0, min(self._stored, limit - len(pending)))
        if limit is not None and limit < len(pending):
            pending = pending[len(pending) - limit :]
        if want == 0:
            return pending, 0, self._generation, pending
        if want <= len(self._cache):
            return self._cache[len(self._cache) - want :] + pending, want, self._generation, pending
        return None, want, self._generation, pending

    def _cached_messages(self, limit: int | None = None) -> list[Message] | None:
        """``get_messages(limit)`` when it can be answered without reading storage, else None."""
        if limit is not None:
            _count(limit, "limit")
        self._usable()
        with self._state:
            records = self._plan(limit)[0]
        return None if records is None else as_dicts(records, self._name)

    async def get_messages(self, limit: int | None = None) -> list[Message]:
        """The messages oldest first, exactly as added (fresh plain dicts, ready to hand to
        a model or to ``json.dump``): no key added, none dropped, keys in their order.
        (Changed in this version: no ``timestamp`` key is added any more; a message stored
        by an earlier version still has the one it was given. The time a message is filed
        under is in :meth:`get_entries`.)

        With ``limit``, the newest ``limit`` of them. Reads storage only for saved messages
        that are not in the object's cache (the newest ``message_cache_size``).
        """
        return as_dicts(await self._records(limit), self._name)

    async def get_messages_with_ids(
        self, limit: int | None = None
    ) -> list[tuple[int | None, Message]]:
        """``get_messages(limit)`` as ``(message_id, message)`` pairs.

        The id is the message's stable address in storage: the same in a session and in
        every branch that shows the message, never reused, never put inside the message
        (a key of yours named ``id`` comes back untouched). Pass it as
        ``fork_after=`` to branch right after that message. A message not saved yet has
        the id None.
        """
        records = await self._records(limit)
        with naming_session(self._name):
            return [(r.id, r.to_dict()) for r in records]

    async def get_entries(self, limit: int | None = None) -> list[MessageEntry]:
        """``get_messages(limit)`` with what the library keeps beside each message, as
        :class:`~coda_session.MessageEntry` ``(id, timestamp, message)`` tuples.

        ``timestamp`` is the ISO-8601 time the message is filed under (what the search
        filters ``after:`` / ``before:`` compare): its own ``timestamp`` key when it gave
        one, else the time it was added, in UTC. ``id`` is as in
        :meth:`get_messages_with_ids`; ``message`` is the message exactly as added.
        """
        records = await self._records(limit)
        with naming_session(self._name):
            return [MessageEntry(r.id, r.timestamp, r.to_dict()) for r in records]

    async def _records(self, limit: int | None) -> list[MessageRecord]:
        if limit is not None:
            _count(limit, "limit")
        self._usable()
        with self._state:
            records, want, generation, pending = self._plan(limit)
            upto = self._upto
        if records is None:
            stored = await self._host.repository.read_messages(
                self._id, upto_id=upto, limit=want, root_id=self._root_id
            )
            with self._state:
                if generation == self._generation and self._cache_size:
                    self._cache = stored[-self._cache_size :]
            records = stored + pending
        return records

    async def get_token_count(self) -> int:
        """An estimate of the tokens the messages take in a model's context.

        ``ceil(characters / 4)`` over role, content and extra keys (tool calls included,
        timestamps not) plus 4 tokens of framing per message: OpenAI's rule of thumb,
        within about 10-20% for English text. Counted by the storage, without loading
        the messages.
        """
        self._usable()
        with self._state:
            stored, upto, pending = self._stored, self._upto, list(self._pending)
            cached = (
                self._cache[len(self._cache) - stored :] if stored <= len(self._cache) else None
            )
        chars, count = 0, 0
        with naming_session(self._name):
            if cached is not None:
                # the cache holds every message the object shows: no I/O, and the same view
                # get_messages() answers from
                chars, count = sum(r.text_length() for r in cached), len(cached)
            elif stored:
                chars, count = await capabilities.text_length(
                    self._host.repository,
                    self._id,
                    upto_id=upto,
                    limit=stored,
                    root_id=self._root_id,
                )
        chars += sum(r.text_length() for r in pending)
        count += len(pending)
        return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * count

    # -- saving (called by the manager) -------------------------------------------------

    async def pop_messages(self, n: int = 1) -> list[Message]:
        """Remove the newest ``n`` messages the session shows and return them, oldest first.

        Unsaved messages are the newest: they go first, without I/O. The rest is removed
        from storage at once, in one transaction, together with the session's other unsaved
        changes: the newest saved messages *in storage now* (another writer's too), so two
        callers popping at the same time never get the same message. On a branch a pop may
        reach into what it inherited (its parent keeps them). Fewer than ``n`` come back
        when the session shows fewer.
        """
        n = _count(n, "n")
        self._usable()
        records = await self._save(drop=n)
        with naming_session(self._name):
            return [r.to_dict() for r in records]

    async def _save(self, drop: int = 0) -> list[MessageRecord]:
        await self._save_lock.acquire()
        try:
            with self._state:
                popped: list[MessageRecord] = []
                if drop:
                    take = min(drop, len(self._pending))
                    if take:
                        popped = self._pending[len(self._pending) - take :]
                        del self._pending[len(self._pending) - take :]
                        self._pending_bytes = sum(r.byte_size() for r in self._pending)
                    drop -= take
                    if not drop:
                        self._track()
                        self._save_lock.release()
                        return popped
                elif not (self._pending or self._keep is not None or self._meta_patch):
                    self._save_lock.release()
                    return []
                batch = list(self._pending)
                cut = None if self._keep is None else Truncation(self._upto, self._keep)
                patch, self._meta_patch = self._meta_patch, {}
                undo = {k: self._meta_undo.pop(k) for k in patch if k in self._meta_undo}
                self._saving = True
                request = SaveRequest(
                    session_id=self._id,
                    name=self._name,
                    updated_at=utcnow(),
                    messages=batch,
                    truncation=cut,
                    metadata_patch=patch or None,
                    max_bytes=self._limit(),
                    metadata_version=self._meta_version,
                    root_id=self._root_id,
                    drop_newest=drop,
                )
                stored_before, upto = self._stored, self._upto
            write = asyncio.ensure_future(
                self._write(request, patch, undo, stored_before, upto, popped)
            )
        except BaseException:
            self._save_lock.release()
            raise
        # the write runs to its end even if this caller is cancelled (the database
        # commits regardless); the session's state follows its real outcome, and the next
        # save (of any task, loop or thread) waits for it to land
        write.add_done_callback(self._landed)
        result = await asyncio.shield(write)
        return result.dropped + popped

    def _landed(self, write: asyncio.Future[SaveResult]) -> None:
        _retrieve(write)
        self._save_lock.release()

    async def _write(
        self,
        request: SaveRequest,
        patch: dict[str, Any],
        undo: dict[str, Any],
        stored_before: int,
        upto: int,
        popped: list[MessageRecord],
    ) -> SaveResult:
        try:
            result = await self._host.repository.save(request)
        except BaseException as exc:
            if isinstance(exc, SessionNotFoundError):
                self._gone = True
            with self._state:
                self._saving = False
                self._meta_patch = {**patch, **self._meta_patch}
                self._meta_undo.update(undo)  # the values before this save's patch
                # a pop that failed gives its unsaved messages back, before any added since
                self._pending[:0] = popped
                self._pending_bytes = sum(r.byte_size() for r in self._pending)
                self._track()
            raise
        batch = request.messages
        with self._state:
            self._saving = False
            del self._pending[: len(batch)]
            self._pending_bytes = sum(r.byte_size() for r in self._pending)
            self._keep = None  # truncating is refused while a save runs
            saved = [r.with_id(i) for r, i in zip(batch, result.ids, strict=True)]
            # the cache stays valid only if nobody appended after this object's view (the
            # newest id before the save is the one it knew; ids are never reused) and
            # nobody removed any of its messages (the count adds up)
            untouched = result.previous_last_id == upto
            if untouched and result.message_count == stored_before + len(saved):
                if self._cache_size:
                    self._cache.extend(saved)
                    del self._cache[: max(0, len(self._cache) - self._cache_size)]
            else:
                # another writer changed the session meanwhile: re-read on demand
                self._cache = []
            self._stored = result.message_count
            self._upto = result.last_message_id
            self._size = result.size_bytes
            self._updated_at = request.updated_at
            self._generation += 1
            self._meta_version = result.metadata_version
            if result.metadata is not None:  # another writer changed it: show the stored state
                self._metadata = {**result.metadata, **copy.deepcopy(self._meta_patch)}
                for key in self._meta_undo:  # a discard goes back to the stored value
                    self._meta_undo[key] = copy.deepcopy(result.metadata.get(key, _ABSENT))
            self._track()
        return result

    async def get_lineage(self) -> list[SessionInfo]:
        """The :class:`SessionInfo` of each session from the root of this one's branching
        tree down to this one, by ``parent_id`` (one query). A deleted ancestor ends the
        walk: the list then starts below it. SessionNotFoundError once this session is
        deleted."""
        self._usable()
        tree = await capabilities.list_tree(self._host.repository, self._root_id)
        infos = {i.id: i for i in tree}
        if self._id not in infos:
            raise SessionNotFoundError(f"session {self._name!r} was deleted")
        chain = [infos[self._id]]
        while chain[-1].parent_id in infos and len(chain) <= len(infos):
            chain.append(infos[chain[-1].parent_id or ""])
        return chain[::-1]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {describe(self)}>"


def describe(session: AsyncSession) -> str:
    """What a session's ``repr()`` says: name, counts, unsaved or not, branch."""
    with session._state:
        unsaved = len(session._pending)
        text = (
            f"{session._name!r} messages={session._stored + unsaved} "
            f"(saved {session._stored}, new {unsaved}) "
            f"metadata_keys={len(session._metadata)} "
            f"unsaved={'yes' if session._unsaved() else 'no'}"
        )
    if session._parent_id is not None:
        text += f" branch_of={session._parent_id[:8]} fork_point={session._fork_point}"
    return text


def host_of(session: AsyncSession) -> SessionHost:
    """The host (manager side) that made ``session``."""
    return session._host


def check_usable(session: AsyncSession) -> None:
    """Raise ManagerClosedError, or the failure of a background save nobody heard of yet."""
    session._usable()


async def save(session: AsyncSession) -> None:
    """Write the session's unsaved changes (``manager.save_session``)."""
    await session._save()


def cached_messages(session: AsyncSession, limit: int | None = None) -> list[Message] | None:
    """``get_messages(limit)`` when it can be answered without reading storage, else None
    (the blocking API answers such calls without running its loop)."""
    return session._cached_messages(limit)


def forget(session: AsyncSession) -> None:
    """The session was deleted by its manager: nothing is left to flush its changes to,
    and the manager holds it no longer."""
    with session._state:
        session._gone = True
        session._autosave_error = None  # about a session deleted on purpose
        session._track()


async def flush(session: AsyncSession, reason: str, *, final: bool) -> BaseException | None:
    """Save ``session`` if it has unsaved changes, for an autosave or the flush on close.

    A failure is logged (names only, never content), kept on the session for its next
    call, and returned. A session whose autosave failed is left alone until the final
    flush, which retries it (and returns a failure nobody has heard of yet, so ``close()``
    can raise it).
    """
    pending = session._autosave_error
    if session._gone:
        if final and pending is not None and session.has_unsaved_changes:
            session._autosave_error = None
            return pending
        return None
    if pending is not None:
        if not final:
            return None
        session._autosave_error = None  # retried now; a new failure is raised
    if not session.has_unsaved_changes:
        return None
    try:
        await session._save()
    except Exception as exc:
        logger.warning("%s of session %r failed: %s", reason, session.name, exc)
        with session._state:
            session._autosave_error = exc
            session._track()
        return exc
    return None

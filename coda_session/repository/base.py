"""What every backend shares: the save delta and its result, the import size check, and
the arithmetic of a save over a whole stored session (:func:`save_delta`).

The lowest layer of the repository package: the backends and the protocol import it, it
imports neither.
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import InvalidMessageError, SessionTooLargeError
from ..models import MessageRecord, SessionInfo

__all__ = [
    "SaveDelta",
    "SaveRequest",
    "SaveResult",
    "Truncation",
    "check_import_size",
    "collect_import",
    "fork_count",
    "newest",
    "not_shown",
    "page",
    "parents_first",
    "save_delta",
]


def check_import_size(name: str, size: int, max_bytes: int | None) -> None:
    """SessionTooLargeError once an import's running size passes ``max_bytes``."""
    if max_bytes is not None and size > max_bytes:
        raise SessionTooLargeError(name, size, max_bytes)


def collect_import(
    name: str, batches: Iterable[Sequence[MessageRecord]], max_bytes: int | None
) -> tuple[list[MessageRecord], int]:
    """Every message of an import's batches and their size, checked as they come (for
    backends that store the whole session at the end)."""
    messages: list[MessageRecord] = []
    size = 0
    for batch in batches:
        messages.extend(batch)
        size += sum(m.byte_size() for m in batch)
        check_import_size(name, size, max_bytes)
    return messages, size


def fork_count(name: str, count: int, point: int | None) -> int:
    """How many of the ``count`` messages source ``name`` shows a fork at ``point`` starts
    with: all when None, counted from the end when negative (as in a slice);
    InvalidMessageError out of range. Every backend resolves it here, inside the fork."""
    if point is None:
        return count
    kept = point + count if point < 0 else point
    if not 0 <= kept <= count:
        raise InvalidMessageError(
            f"fork_point {point} is out of range: {name!r} shows {count} messages"
        )
    return kept


def not_shown(message_id: int) -> InvalidMessageError:
    """The error of a fork after a message the source does not show."""
    return InvalidMessageError(f"message {message_id} is not one of the messages the source shows")


def _id_of(message: MessageRecord) -> int:
    return message.id or 0


def newest(
    messages: Sequence[MessageRecord], upto_id: int, limit: int | None
) -> list[MessageRecord]:
    """The newest ``limit`` (all when None) of ``messages`` (ids ascending, as a session
    stored whole keeps them) with ``id <= upto_id``, oldest first: ``read_messages``."""
    end = bisect.bisect_right(messages, upto_id, key=_id_of)
    start = 0 if limit is None else end - min(end, max(0, limit))
    return list(messages[start:end])


def page(
    messages: Sequence[MessageRecord], after_id: int, upto_id: int, limit: int
) -> list[MessageRecord]:
    """At most ``limit`` of ``messages`` (ids ascending) with ``after_id < id <= upto_id``,
    oldest first: ``read_page``. Found by bisection, not by a scan: an export reads a long
    session a page at a time."""
    start = bisect.bisect_right(messages, after_id, key=_id_of)
    return [m for m in messages[start : start + limit] if _id_of(m) <= upto_id]


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
    metadata_version: int | None = None
    """The ``metadata_version`` of the stored metadata the caller last saw (None: unknown).
    While it is current, the save neither reads nor decodes the stored metadata."""
    root_id: str | None = None
    """The session's tree key (``SessionRecord.root_id``), named by every statement so a
    distributed database finds the tree's shard; looked up when None."""
    drop_newest: int = 0
    """Stop showing the newest this many messages the session shows in storage now
    (after the truncation, before the new messages), in the same transaction; a branch's
    may reach into what it inherited. The save reports them (``SaveResult.dropped``)."""


@dataclass(slots=True, frozen=True)
class SaveResult:
    """What storage holds for the session after a save."""

    ids: list[int]
    message_count: int
    size_bytes: int
    last_message_id: int
    metadata: dict[str, Any] | None
    """The session's stored metadata after the save, or None when it is what the caller
    saw (its ``metadata_version`` was current) plus this save's own patch."""
    previous_last_id: int = -1
    """The session's newest message id before this save (-1: unknown). Equal to the
    truncation/view bound the caller had, it proves nobody else appended meanwhile."""
    metadata_version: int = 0
    """The stored metadata's version after the save: pass it as the next save's
    ``SaveRequest.metadata_version``."""
    dropped: list[MessageRecord] = field(default_factory=list)
    """What ``SaveRequest.drop_newest`` removed, oldest first."""


@dataclass(slots=True, frozen=True)
class SaveDelta:
    """What one save does to a session stored whole (as the memory backend and a custom
    storage keep it): the stored messages ``[start:end]`` stay, ``added`` follow them.

    Computed by :func:`save_delta`, which writes nothing: each backend applies it to its
    own structure (in place, or as a new list) and reports :meth:`result`.
    """

    start: int
    """The truncation removes the stored messages before this index."""
    end: int
    """``drop_newest`` removes the stored messages from this index on (``dropped``)."""
    added: list[MessageRecord]
    """The request's messages with the ids they are stored under."""
    dropped: list[MessageRecord]
    size_bytes: int
    last_message_id: int
    metadata: dict[str, Any]
    """The metadata after the patch: a new dict when the request patches it, else the
    stored dict itself."""
    patched: bool
    """The request changes the metadata (its version moves)."""
    told: bool
    """The stored metadata is not the version the caller saw: the result carries it."""
    previous_last_id: int

    def messages(self, stored: Sequence[MessageRecord]) -> list[MessageRecord]:
        """The session's messages after the save, as a new list."""
        return [*stored[self.start : self.end], *self.added]

    def result(self, metadata_version: int) -> SaveResult:
        """The save's result, given the metadata's version after it."""
        return SaveResult(
            ids=[m.id or 0 for m in self.added],
            message_count=self.end - self.start + len(self.added),
            size_bytes=self.size_bytes,
            last_message_id=self.last_message_id,
            # unchanged metadata is not copied again: the caller has it
            metadata=copy.deepcopy(self.metadata) if self.told else None,
            previous_last_id=self.previous_last_id,
            metadata_version=metadata_version,
            dropped=self.dropped,
        )


def save_delta(
    request: SaveRequest,
    stored: Sequence[MessageRecord],
    *,
    size: int,
    metadata: dict[str, Any],
    metadata_version: int,
    first_id: int,
) -> SaveDelta:
    """The truncation, then ``drop_newest``, then the new messages (numbered from
    ``first_id``) and the metadata patch, applied to a session whose messages are
    ``stored`` (ids ascending), ``size`` bytes in all, with ``metadata`` at
    ``metadata_version``. SessionTooLargeError when the save grows the session past the
    request's ``max_bytes``. Pure: nothing given is changed."""
    total = len(stored)
    previous = (stored[-1].id or 0) if stored else 0
    start = 0
    cut = request.truncation
    if cut is not None:
        # of the messages the caller had seen (id <= upto_id) keep the newest `keep`;
        # what another writer saved meanwhile (higher ids) stays
        seen = bisect.bisect_right(stored, cut.upto_id, key=_id_of)
        start = max(0, seen - cut.keep)
    end = total - min(total - start, max(0, request.drop_newest))
    dropped = list(stored[end:])
    gone = sum(m.byte_size() for m in stored[:start]) + sum(m.byte_size() for m in dropped)
    growth = sum(m.byte_size() for m in request.messages) - gone
    if request.max_bytes is not None and growth > 0 and size + growth > request.max_bytes:
        raise SessionTooLargeError(request.name, size + growth, request.max_bytes)
    added = [m.with_id(i) for i, m in enumerate(request.messages, first_id)]
    last = added[-1] if added else stored[end - 1] if end > start else None
    patched = bool(request.metadata_patch)
    if patched:
        metadata = {**metadata, **copy.deepcopy(dict(request.metadata_patch or {}))}
    return SaveDelta(
        start=start,
        end=end,
        added=added,
        dropped=dropped,
        size_bytes=size + growth,
        last_message_id=0 if last is None else last.id or 0,
        metadata=metadata,
        patched=patched,
        told=metadata_version != request.metadata_version,
        previous_last_id=previous,
    )


def parents_first(infos: Sequence[SessionInfo]) -> list[SessionInfo]:
    """``infos`` (one tree, oldest first) with every session after the one it was forked
    from, whatever their timestamps say (an import keeps a file's older ``created_at``
    for a branch whose parent it creates now); otherwise in the order given."""
    by_id = {i.id: i for i in infos}
    out: list[SessionInfo] = []
    placed: set[str] = set()
    for info in infos:
        chain: list[SessionInfo] = []
        at: SessionInfo | None = info
        while at is not None and at.id not in placed and at not in chain:
            chain.append(at)
            at = by_id.get(at.parent_id or "")
        for item in reversed(chain):
            placed.add(item.id)
            out.append(item)
    return out

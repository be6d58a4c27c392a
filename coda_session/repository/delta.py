"""A session stored whole, as the memory backend and a custom storage keep it: its reads
(:func:`newest`, :func:`page`) and a save applied to it (:func:`save_delta`), written once
for both. Pure: every function computes from what it is given and changes none of it.
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import SessionTooLargeError
from ..models import MessageRecord
from .base import SaveRequest, SaveResult

__all__ = ["SaveDelta", "newest", "page", "save_delta"]


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

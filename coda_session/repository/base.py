"""What every backend shares: the save delta and its result, and the import size check.

The lowest layer of the repository package: the backends and the protocol import it, it
imports neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import InvalidMessageError, SessionTooLargeError
from ..models import MessageRecord, SessionInfo

__all__ = [
    "SaveRequest",
    "SaveResult",
    "Truncation",
    "check_import_size",
    "collect_import",
    "fork_count",
    "not_shown",
    "parents_first",
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

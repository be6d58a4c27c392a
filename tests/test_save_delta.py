"""The save delta memory and custom storage share: pure arithmetic over a whole session."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from coda_session import SessionTooLargeError
from coda_session.codec import encode_message
from coda_session.repository.base import SaveRequest, Truncation
from coda_session.repository.delta import save_delta
from tests.support import user

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def request(**fields: object) -> SaveRequest:
    base: dict[str, object] = {"session_id": "s", "name": "chat", "updated_at": NOW}
    return SaveRequest(**{"messages": [], **base, **fields})  # type: ignore[arg-type]


def test_the_delta_changes_nothing_it_is_given() -> None:
    # ids 3, 5, 7, 9, 11: another writer saved 9 and 11 after this caller's view (upto 7)
    stored = [encode_message(user(f"m{i}")).with_id(i) for i in (3, 5, 7, 9, 11)]
    before, metadata = list(stored), {"topic": {"a": 1}}
    new = [encode_message(user("new"))]
    size = sum(m.size for m in stored)
    delta = save_delta(
        request(
            messages=new,
            truncation=Truncation(upto_id=7, keep=1),
            drop_newest=1,
            metadata_patch={"topic": {"b": 2}},
            metadata_version=4,
        ),
        stored,
        size=size,
        metadata=metadata,
        metadata_version=4,
        first_id=12,
    )
    assert stored == before and metadata == {"topic": {"a": 1}}
    # of 3, 5, 7 the newest one stays; 11 is dropped; the new message is 12
    assert delta.messages(stored) == [stored[2], stored[3], new[0].with_id(12)]
    assert delta.dropped == [stored[4]]
    assert delta.metadata == {"topic": {"b": 2}} and delta.patched and not delta.told
    result = delta.result(5)
    assert result.ids == [12] and result.message_count == 3 and result.last_message_id == 12
    assert result.size_bytes == stored[2].size + stored[3].size + new[0].size
    assert result.previous_last_id == 11 and result.metadata is None
    assert result.metadata_version == 5


def test_a_delta_past_the_limit_raises_and_a_stale_caller_is_told() -> None:
    stored = [encode_message(user("m")).with_id(1)]
    metadata = {"k": "v"}
    big = [encode_message(user("x" * 100))]
    with pytest.raises(SessionTooLargeError):
        save_delta(
            request(messages=big, max_bytes=50),
            stored,
            size=stored[0].size,
            metadata=metadata,
            metadata_version=0,
            first_id=2,
        )
    delta = save_delta(
        request(metadata_version=1),
        stored,
        size=1,
        metadata=metadata,
        metadata_version=2,
        first_id=2,
    )
    result = delta.result(2)
    assert delta.metadata is metadata and not delta.patched
    assert result.metadata == metadata and result.metadata is not metadata
    assert result.last_message_id == 1 and result.ids == []

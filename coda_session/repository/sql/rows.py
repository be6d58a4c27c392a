"""Message rows as records: the one decoder every SQL operation reads rows with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...models import MessageRecord, message_record

__all__ = ["message_of"]


def message_of(row: Sequence[Any]) -> MessageRecord:
    id_, role, content, ts, extra, packed, size, chars = row
    if (
        type(role) is str
        and role
        and type(ts) is str
        and (content is None or type(content) is str)
        and (extra is None or type(extra) is str)
        and (packed is None or type(packed) is bytes)
    ):
        return message_record(
            role=role,
            content=content,
            timestamp=ts,
            extra=extra,
            size=int(size),
            chars=int(chars),
            id=int(id_),
            zcontent=packed,
        )
    return _odd_message(row)


def _odd_message(row: Sequence[Any]) -> MessageRecord:
    """A row of unexpected column types: numbers and byte strings of other drivers are
    read as before; what cannot be a message becomes a record that raises when read."""
    id_, role, content, ts, extra, packed, size, chars = row
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        ts = str(ts)  # written by other code; shown as stored
    if isinstance(packed, bytearray | memoryview):
        packed = bytes(packed)
    problems = [
        what
        for what, bad in (
            ("its role is missing or not text", type(role) is not str or not role),
            ("its timestamp is missing or not text", type(ts) is not str),
            ("its content is not text", content is not None and type(content) is not str),
            (
                "its extra keys (metadata) are not text",
                extra is not None and type(extra) is not str,
            ),
            (
                "its compressed content is not bytes",
                packed is not None and type(packed) is not bytes,
            ),
        )
        if bad
    ]
    if not problems:
        return message_record(
            role=role,
            content=content,
            timestamp=ts,
            extra=extra,
            size=int(size),
            chars=int(chars),
            id=int(id_),
            zcontent=packed,
        )
    return message_record(
        role="",
        content=None,
        timestamp="",
        extra=None,
        size=0,
        chars=0,
        id=int(id_),
        damage="; ".join(problems),
    )

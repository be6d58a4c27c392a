"""The records the backends exchange: built by keyword, through one positional call."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from coda_session.models import MessageRecord, message_record


def test_message_record_takes_the_fields_in_order() -> None:
    """``message_record`` calls the class positionally: its parameters must be the
    class's fields, in the same order, with the same defaults."""
    fields = dataclasses.fields(MessageRecord)
    params = list(inspect.signature(message_record).parameters.values())
    assert [p.name for p in params] == [f.name for f in fields]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params)
    assert [p.default for p in params] == [
        inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default for f in fields
    ]


def test_message_record_builds_what_the_class_builds() -> None:
    values: dict[str, Any] = {
        "role": "user",
        "content": "hi",
        "timestamp": "2024-01-01T00:00:00",
        "extra": '{"k":1}',
        "size": 31,
        "chars": 9,
        "id": 4,
        "zcontent": b"z",
        "damage": "why",
    }
    built = message_record(**values)
    assert built == MessageRecord(**values)
    assert [getattr(built, name) for name in values] == list(values.values())
    assert built.with_id(5) == MessageRecord(**{**values, "id": 5})
    assert message_record(
        role="r", content=None, timestamp="t", extra=None, size=0, chars=0
    ) == MessageRecord(role="r", content=None, timestamp="t", extra=None, size=0, chars=0)

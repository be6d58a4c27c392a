"""A failed call changes nothing: not the object, not what a later save or close writes.

Each mutating method of AsyncSession and Session is made to fail in the ways it can
(bad input, over the size limit, a refused save); the object and the stored session are
then compared with what they were before, on every backend and after close() too.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest

from coda_session import (
    AsyncSession,
    InvalidMessageError,
    Session,
    SessionError,
    SessionManager,
    SessionTooLargeError,
)
from tests.support import Store

LIMIT_MB = 0.01  # 10 000 bytes
TEXT = "x" * 100


def _msg(i: int) -> dict[str, Any]:
    return {"role": "user", "content": f"{i} {TEXT}", "timestamp": "2024-01-01T00:00:00+00:00"}


BIG_LIST = [_msg(i) for i in range(200)]  # ~30 kB: over the limit
HUGE = {"role": "user", "content": secrets.token_hex(15_000)}  # incompressible enough

# (name, the failing call, the error it raises)
FAILURES: list[tuple[str, Callable[[Any], None], type[Exception]]] = [
    (
        "add_message invalid",
        lambda s: s.add_message({"content": "no role and no type"}),
        InvalidMessageError,
    ),
    ("add_message too large", lambda s: s.add_message(HUGE), SessionTooLargeError),
    ("set_messages too large", lambda s: s.set_messages(BIG_LIST), SessionTooLargeError),
    (
        "set_messages one invalid",
        lambda s: s.set_messages([_msg(1), {"role": 3, "content": "x"}]),
        InvalidMessageError,
    ),
    ("truncate_messages negative", lambda s: s.truncate_messages(-1), InvalidMessageError),
    ("truncate_messages not an int", lambda s: s.truncate_messages("2"), InvalidMessageError),
    (
        "update_metadata not JSON",
        lambda s: s.update_metadata({"k": object()}),
        InvalidMessageError,
    ),
    ("update_metadata not a mapping", lambda s: s.update_metadata(["k"]), InvalidMessageError),
]
IDS = [f[0] for f in FAILURES]


async def _astate(s: AsyncSession) -> tuple[Any, ...]:
    return (s.message_count, await s.get_messages(), s.metadata, s.has_unsaved_changes)


def _state(s: Session) -> tuple[Any, ...]:
    return (s.message_count, s.get_messages(), s.metadata, s.has_unsaved_changes)


@pytest.mark.parametrize("pending", [False, True], ids=["saved", "with-unsaved"])
@pytest.mark.parametrize(("what", "call", "error"), FAILURES, ids=IDS)
async def test_async_failed_call_changes_nothing(
    store: Store, what: str, call: Callable[[Any], None], error: type[Exception], pending: bool
) -> None:
    m = store.async_manager(max_session_size=LIMIT_MB)
    try:
        s = await m.create_session("s")
        for i in range(12):
            s.add_message(_msg(i))
        s.update_metadata({"topic": "kept"})
        await m.save_session(s)
        if pending:
            s.add_message(_msg(99))
            s.update_metadata({"more": 1})
        before = await _astate(s)
        with pytest.raises(error):
            call(s)
        assert await _astate(s) == before
    finally:
        await m.close()  # the flush on close writes nothing the failed call left behind
    again = store.async_manager(max_session_size=LIMIT_MB)
    try:
        t = await again.load_session("s")
        assert t.message_count == before[0]
        assert await t.get_messages() == before[1]
        assert t.metadata == before[2]
    finally:
        await again.close()


@pytest.mark.parametrize(("what", "call", "error"), FAILURES, ids=IDS)
def test_sync_failed_call_changes_nothing(
    store: Store, what: str, call: Callable[[Any], None], error: type[Exception]
) -> None:
    config = store.config.model_copy(update={"max_session_size": LIMIT_MB})
    with SessionManager(config, store.repository(private_loop=True)) as m:
        s = m.create_session("s")
        for i in range(12):
            s.add_message(_msg(i))
        m.save_session(s)
        s.add_message(_msg(99))
        before = _state(s)
        with pytest.raises(error):
            call(s)
        assert _state(s) == before
    # the with block's flush saved the one unsaved message, and nothing else changed
    with SessionManager(config, store.repository(private_loop=True)) as m:
        t = m.load_session("s")
        assert t.message_count == 13
        assert t.get_messages() == before[1]


async def test_refused_save_changes_nothing(store: Store) -> None:
    """A save the storage refuses (too large once a pending truncation is counted) keeps
    every unsaved change, and a later successful save writes them once."""
    m = store.async_manager(max_session_size=LIMIT_MB)
    try:
        s = await m.create_session("s")
        for i in range(40):
            s.add_message(_msg(i))
        await m.save_session(s)
        s.truncate_messages(30)
        s.update_metadata({"a": 1})
        for i in range(40, 120):  # not checked locally: a truncation is pending
            s.add_message(_msg(i))
        before = await _astate(s)
        with pytest.raises(SessionTooLargeError):
            await m.save_session(s)
        assert await _astate(s) == before
        s.truncate_messages(40)  # the pending work can still be finished
        await m.save_session(s)
        assert not s.has_unsaved_changes
        expected = before[1][-40:]
        assert await s.get_messages() == expected
        assert s.metadata == {"a": 1}
    finally:
        await m.close()
    again = store.async_manager()
    try:
        t = await again.load_session("s")
        assert await t.get_messages() == expected
        assert t.metadata == {"a": 1}
    finally:
        await again.close()


async def test_failed_call_after_close_changes_nothing(store: Store) -> None:
    m = store.async_manager(max_session_size=LIMIT_MB)
    s = await m.create_session("s")
    for i in range(12):
        s.add_message(_msg(i))
    await m.save_session(s)
    await m.close()
    for _, call, _ in FAILURES:
        with pytest.raises(SessionError):
            call(s)
    again = store.async_manager()
    try:
        assert (await again.load_session("s")).message_count == 12
    finally:
        await again.close()

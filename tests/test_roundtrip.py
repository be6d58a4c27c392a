"""Round-trip fidelity: whatever JSON a caller stores comes back exactly, on every backend.

Messages (and metadata) are written by one manager and read back by a *fresh* manager on
the same storage (``store.async_manager()``), so nothing can be answered from a cache of
the writing manager. Equality is strict: ``True`` must not come back as ``1``, ``1.0`` not
as ``1``, ``-0.0`` keeps its sign, and ``2**70`` stays an exact ``int``.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coda_session import AsyncSessionManager, ReadOnlyError

CORE_KEYS = ("role", "content", "timestamp")

# -- strict comparison -------------------------------------------------------------------


def plain(metadata: Any) -> Any:
    """``session.metadata`` as plain JSON values: the property is a read-only view (dict
    and list subclasses that refuse changes); its deep copy has the exact types stored."""
    return copy.deepcopy(metadata)


def assert_strict_equal(actual: Any, expected: Any, path: str = "$") -> None:
    """``actual == expected`` with exact types (bool is not int, int is not float) and
    the sign of zero; tuples in the input are expected back as lists."""
    if isinstance(expected, tuple):
        expected = list(expected)
    if expected is None or isinstance(expected, bool):
        assert actual is expected, f"{path}: {actual!r} is not {expected!r}"
        return
    assert type(actual) is type(expected), (
        f"{path}: type {type(actual).__name__} != {type(expected).__name__} "
        f"({actual!r:.80} vs {expected!r:.80})"
    )
    if isinstance(expected, float):
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
        assert math.copysign(1.0, actual) == math.copysign(1.0, expected), (
            f"{path}: sign of zero lost ({actual!r} vs {expected!r})"
        )
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), (
            f"{path}: keys differ: missing {set(expected) - set(actual)!r}, "
            f"unexpected {set(actual) - set(expected)!r}"
        )
        for key, value in expected.items():
            assert_strict_equal(actual[key], value, f"{path}[{key!r}]")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_strict_equal(a, e, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r:.200} != {expected!r:.200}"


def expected_message(message: dict[str, Any]) -> dict[str, Any]:
    """What ``get_messages`` must return for an input message with an explicit timestamp."""
    out = dict(message)
    ts = out["timestamp"]
    if isinstance(ts, datetime):
        out["timestamp"] = ts.isoformat()
    return out


def check_default_timestamp(value: Any, before: datetime, after: datetime) -> None:
    assert type(value) is str
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None and parsed.utcoffset() == timedelta(0), value
    assert before - timedelta(seconds=1) <= parsed <= after + timedelta(seconds=1)


def check_messages(
    actual: list[dict[str, Any]],
    inputs: list[dict[str, Any]],
    before: datetime,
    after: datetime,
) -> None:
    assert isinstance(actual, list)
    assert len(actual) == len(inputs)
    # plain JSON: serializable without a custom encoder, and without NaN
    json.dumps(actual, allow_nan=False)
    for i, (got, given_msg) in enumerate(zip(actual, inputs, strict=True)):
        assert type(got) is dict
        if given_msg.get("timestamp") is None:
            # stored exactly: no timestamp key added (the time it is filed under is kept
            # beside it: tests/test_items.py, test_contract.py)
            want = dict(given_msg)
        else:
            want = expected_message(given_msg)
        assert_strict_equal(got, want, f"message[{i}]")


# -- strategies -----------------------------------------------------------------------

# any unicode except NUL and lone surrogates (codec="utf-8" excludes the surrogates)
CHARS = st.characters(codec="utf-8", exclude_characters="\x00")
TEXT = st.text(CHARS, max_size=20)
# some strings that are easy to mangle on the way through SQL / JSON
TRICKY_TEXT = st.sampled_from(
    [
        "",
        " ",
        "'",
        '"',
        "\\",
        "'); DROP TABLE messages; --",
        "1e5",
        "0",
        "null",
        "true",
        "2024-01-01",
        "\u2028\u2029",
        "\ufeff",
        "\U0001f600\u200d\U0001f4bb",
        "e\u0301",
        "\x7f\x01\x1f",
        "\r\n",
        "%_*",
    ]
)
STRINGS = TEXT | TRICKY_TEXT
INTS = (
    st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.sampled_from([0, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 2**70, -(2**70)])
)
FLOATS = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [-0.0, 0.0, 1e308, -1e308, 5e-324, -5e-324, 1.7976931348623157e308, 0.1, 1 / 3]
)
LEAVES = st.none() | st.booleans() | INTS | FLOATS | STRINGS
JSON = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(STRINGS, children, max_size=4)
    ),
    max_leaves=12,
)
EXTRA_KEY = STRINGS.filter(lambda k: k not in CORE_KEYS)
# a role of only whitespace is refused like an empty one
ROLE = st.text(CHARS, min_size=1, max_size=20).filter(lambda r: not r.isspace()) | st.sampled_from(
    ["user", "assistant", "system", "tool", "'; --"]
)
OFFSETS = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=11))]
)
DATETIMES = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(9999, 12, 30),
    timezones=OFFSETS,  # type: ignore[arg-type]  # hypothesis's stub types this as None-only
)
# None: let the library stamp it; a datetime; or an ISO-8601 extended string
TIMESTAMPS = (
    st.none()
    | DATETIMES
    | DATETIMES.map(lambda d: d.isoformat())
    | st.sampled_from(["2024-01-01", "2024-02-29T23:59:59.999999+14:00", "2024-06-01T12:00:00Z"])
)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": draw(ROLE)}
    message["content"] = draw(STRINGS | JSON)
    message.update(draw(st.dictionaries(EXTRA_KEY, JSON, max_size=4)))
    ts = draw(TIMESTAMPS)
    if ts is not None:
        message["timestamp"] = ts
    return message


METADATA = st.dictionaries(STRINGS, JSON, max_size=5)

_names = itertools.count()


def fresh_name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- tests -----------------------------------------------------------------------------


async def _write_then_read(store: Any, batch: list[dict[str, Any]], split: int) -> None:
    name = fresh_name("rt")
    before = datetime.now(UTC)
    writer: AsyncSessionManager = store.async_manager()
    try:
        session = await writer.create_session(name)
        # two saves: the second writes only the delta
        for message in batch[:split]:
            session.add_message(message)
        await writer.save_session(session)
        for message in batch[split:]:
            session.add_message(message)
        await writer.save_session(session)
        after = datetime.now(UTC)
        check_messages(await session.get_messages(), batch, before, after)
    finally:
        await writer.close()

    # a fresh manager (cache on: the tail read with the session row)...
    reader = store.async_manager()
    # ... and one with no message cache at all, so every read goes to storage
    uncached = store.async_manager(message_cache_size=0)
    try:
        loaded = await reader.load_session(name)
        assert loaded.message_count == len(batch)
        stored = await loaded.get_messages()
        check_messages(stored, batch, before, after)
        for entry, given_msg in zip(await loaded.get_entries(), batch, strict=True):
            if given_msg.get("timestamp") is None:  # filed under the time it was added
                check_default_timestamp(entry.timestamp, before, after)
            else:
                assert entry.timestamp == expected_message(given_msg)["timestamp"]

        by_id = await uncached.load_session(session_id=loaded.id)
        check_messages(await by_id.get_messages(), batch, before, after)
        for limit in {0, 1, len(batch) // 2, len(batch), len(batch) + 3}:
            tail = await by_id.get_messages(limit=limit)
            want = stored[len(stored) - min(limit, len(stored)) :] if limit else []
            assert_strict_equal(tail, want, f"limit={limit}")
    finally:
        await reader.close()
        await uncached.close()


@HYPOTHESIS
@given(batch=st.lists(messages(), min_size=1, max_size=6), data=st.data())
def test_messages_round_trip(store: Any, batch: list[dict[str, Any]], data: st.DataObject) -> None:
    split = data.draw(st.integers(min_value=0, max_value=len(batch)), label="split")
    asyncio.run(_write_then_read(store, batch, split))


async def _metadata_round_trip(store: Any, updates: list[dict[str, Any]]) -> None:
    name = fresh_name("meta")
    expected: dict[str, Any] = {}
    writer = store.async_manager()
    try:
        session = await writer.create_session(name)
        for i, update in enumerate(updates):
            session.update_metadata(update)
            expected.update(update)  # a shallow merge: top-level keys replace
            assert_strict_equal(plain(session.metadata), expected, "unsaved metadata")
            if i % 2 == 0:
                await writer.save_session(session)
        await writer.save_session(session)
        assert_strict_equal(plain(session.metadata), expected, "saved metadata")
    finally:
        await writer.close()

    reader = store.async_manager()
    try:
        loaded = await reader.load_session(name)
        assert_strict_equal(plain(loaded.metadata), expected, "loaded metadata")
        info = await reader.get_session_info(name)
        assert info is not None
        assert_strict_equal(info.metadata, expected, "get_session_info metadata")
        listed = {i.name: i for i in await reader.list_sessions()}
        assert_strict_equal(listed[name].metadata, expected, "list_sessions metadata")
        # the property is a read-only snapshot: a change in place is refused, loudly
        with pytest.raises(ReadOnlyError):
            loaded.metadata["__mutated__"] = True
        copy_ = plain(loaded.metadata)
        copy_["__mutated__"] = True
        assert "__mutated__" not in loaded.metadata
    finally:
        await reader.close()


@HYPOTHESIS
@given(updates=st.lists(METADATA, min_size=1, max_size=4))
def test_metadata_round_trip(store: Any, updates: list[dict[str, Any]]) -> None:
    asyncio.run(_metadata_round_trip(store, updates))


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(messages(), min_size=1, max_size=4), meta=METADATA)
def test_sync_shim_round_trip(
    store: Any, batch: list[dict[str, Any]], meta: dict[str, Any]
) -> None:
    """Written through the blocking API, read back by a fresh async manager."""
    name = fresh_name("sync")
    before = datetime.now(UTC)
    with store.sync_manager() as manager:
        session = manager.create_session(name)
        for message in batch:
            session.add_message(message)
        session.update_metadata(meta)
        manager.save_session(session)
        after = datetime.now(UTC)
        check_messages(session.get_messages(), batch, before, after)

    async def read() -> None:
        reader = store.async_manager()
        try:
            loaded = await reader.load_session(name)
            check_messages(await loaded.get_messages(), batch, before, after)
            assert_strict_equal(plain(loaded.metadata), meta, "metadata")
        finally:
            await reader.close()

    asyncio.run(read())


EXTREME_NUMBERS: list[Any] = [
    -0.0,
    0.0,
    1e308,
    -1e308,
    1.7976931348623157e308,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,
    0.1,
    1 / 3,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    2**70,
    -(2**70),
    10**100,
    -(10**4299),  # 4300 digits: the most Python's int <-> str conversion allows by default
    1.0,
    0,
    True,
    False,
]


@pytest.mark.asyncio
async def test_extreme_numbers_survive(store: Any) -> None:
    name = fresh_name("numbers")
    batch: list[dict[str, Any]] = [
        {"role": "tool", "content": value, "value": value, "nested": {"v": [value]}}
        for value in EXTREME_NUMBERS
    ]
    batch.append({"role": "tool", "content": EXTREME_NUMBERS, "all": EXTREME_NUMBERS})
    meta = {f"k{i}": value for i, value in enumerate(EXTREME_NUMBERS)}
    meta["all"] = EXTREME_NUMBERS

    writer = store.async_manager()
    try:
        session = await writer.create_session(name)
        for message in batch:
            session.add_message({**message, "timestamp": "2024-01-01T00:00:00+00:00"})
        session.update_metadata(meta)
        await writer.save_session(session)
    finally:
        await writer.close()

    reader = store.async_manager(message_cache_size=0)
    try:
        loaded = await reader.load_session(name)
        got = await loaded.get_messages()
        want = [{**m, "timestamp": "2024-01-01T00:00:00+00:00"} for m in batch]
        assert_strict_equal(got, want)
        assert_strict_equal(plain(loaded.metadata), meta, "metadata")
        # spot checks that do not rely on the helper
        assert math.copysign(1.0, got[0]["content"]) == -1.0
        assert got[2]["value"] == 1e308 and got[5]["nested"] == {"v": [5e-324]}
        assert got[14]["content"] == 2**70 and type(got[14]["content"]) is int
        assert got[17]["content"] == -(10**4299)
        assert got[18]["content"] == 1.0 and type(got[18]["content"]) is float
        assert got[20]["content"] is True
    finally:
        await reader.close()


@pytest.mark.asyncio
async def test_content_shapes_and_tuples(store: Any) -> None:
    """None, str, list of parts, dict, tuple (back as a list), empty containers."""
    name = fresh_name("shapes")
    ts = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    batch: list[dict[str, Any]] = [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "args": {"q": "x"}}]},
        {"role": "user", "content": ""},
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi"}, {"type": "image", "url": "u"}],
        },
        {"role": "tool", "content": {"result": None, "ok": False}},
        {"role": "tool", "content": ("a", 1, (2.5, None))},
        {"role": "tool", "content": [], "empty": {}},
        {"role": "user", "content": "x" * 100_000},
        {"role": "user", "content": "last", "timestamp": ts},
    ]
    async with store.async_manager() as writer:
        session = await writer.create_session(name)
        session.set_messages(batch)
        await writer.save_session(session)

    async with store.async_manager(message_cache_size=0) as reader:
        got = await (await reader.load_session(name)).get_messages()
    assert len(got) == len(batch)
    for g, m in zip(got, batch, strict=True):
        want = {**m, "timestamp": g["timestamp"]} if "timestamp" in m else m
        assert_strict_equal(g, want)
    assert got[4]["content"] == ["a", 1, [2.5, None]]
    assert got[-1]["timestamp"] == "2024-05-06T07:08:09.123456+00:00"
    assert len(got[6]["content"]) == 100_000

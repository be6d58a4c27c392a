"""list_sessions filters, orders and keyset pages: the same sessions in the same order on
every backend (memory, SQLite on both paths, PostgreSQL, custom storage)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from coda_session import AsyncSessionManager, SessionList, SessionManager
from coda_session.errors import InvalidCursorError, InvalidQueryError
from tests.support import BACKENDS, SQL_BACKENDS, Store

#: name -> metadata of the corpus, created in this order
CORPUS: dict[str, dict[str, Any]] = {
    "a0": {"tags": ["red", "blue"], "n": 1, "nested": {"x": {"y": "deep"}}, "flag": True},
    "a1": {"tags": ["red"], "n": 1.0, "flag": 1},
    "a2": {"tags": "red", "n": True, "s": "Hello"},
    "a3": {"tags": ["blue", 3], "n": "1", "s": "hello", "list": [1, {"k": None}]},
    "a4": {},
    "a5": {"nested": {"x": {"y": "deep", "z": 0}}, "list": [1.0, {"k": None}], "null": None},
    "a6": {
        "nested": {"x": "flat"},
        "list": [1, {"k": None, "more": 1}],
        "tags": ["red", "red", "green"],
    },
    "a7": {"key.with.dots": "v", 'quo"te': {"[0]": 1}, "1:a": "tricky", "uni": "é\x00\u241b\ud800"},
    "a8": {"empty": {}, "emptylist": [], "e": {"a": 1}, "big": 2**62 + 1},
    "b-x": {},
    "B-y": {},
    "b_%": {},
    "bx": {},
    "b%z": {},
}


async def _corpus(m: AsyncSessionManager) -> None:
    for name, metadata in CORPUS.items():
        session = await m.create_session(name)
        if metadata:
            session.update_metadata(metadata)
            await m.save_session(session)


def _names(infos: list[Any]) -> list[str]:
    return [i.name for i in infos]


@pytest.fixture(scope="module", params=BACKENDS)
def corpus(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SessionManager]:
    """A blocking manager on a store holding :data:`CORPUS`, made once per backend for
    the tests that only read it (a fresh PostgreSQL database per test costs seconds)."""
    store = Store(str(request.param), tmp_path_factory.mktemp("corpus") / "sessions")
    manager = store.sync_manager()
    try:
        for name, metadata in CORPUS.items():
            session = manager.create_session(name)
            if metadata:
                session.update_metadata(metadata)
                manager.save_session(session)
        yield manager
    finally:
        manager.close()


METADATA_CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({"n": 1}, ["a0", "a1"]),  # 1 == 1.0; True and "1" are other types
    ({"n": 1.0}, ["a0", "a1"]),
    ({"n": True}, ["a2"]),
    ({"n": "1"}, ["a3"]),
    ({"flag": True}, ["a0"]),
    ({"flag": 1}, ["a1"]),
    ({"s": "Hello"}, ["a2"]),
    ({"s": "hello"}, ["a3"]),
    ({"s": "hell"}, []),
    ({"nested": {"x": {"y": "deep"}}}, ["a0", "a5"]),  # a nested mapping descends
    ({"nested": {"x": {}}}, ["a0", "a5"]),  # an empty one asks for a mapping
    ({"nested": {"x": "flat"}}, ["a6"]),
    ({"nested": {"x": {"y": "deep", "z": 0}}}, ["a5"]),
    ({"nested": {"x": {"z": False}}}, []),
    ({"list": [1, {"k": None}]}, ["a3", "a5"]),  # a list compares whole, 1 == 1.0
    ({"list": [1]}, []),
    ({"list": [1, {"k": None}, 2]}, []),
    ({"null": None}, ["a5"]),
    ({"missing": None}, []),  # a missing key never matches
    ({"key.with.dots": "v"}, ["a7"]),
    ({'quo"te': {"[0]": 1}}, ["a7"]),
    ({"1:a": "tricky"}, ["a7"]),
    ({"uni": "é\x00\u241b\ud800"}, ["a7"]),
    ({"uni": "é"}, []),
    ({"empty": {}}, ["a8"]),
    ({"emptylist": []}, ["a8"]),
    ({"e": {}}, ["a8"]),
    ({"e": {"a": 1}}, ["a8"]),
    ({"e": {"a": 1, "b": 2}}, []),
    ({"big": 2**62 + 1}, ["a8"]),
    ({"big": 2**62}, []),
    ({"tags": ["red"]}, ["a1"]),  # metadata equality, not membership
    ({"nested": {"x": {"y": "deep"}}, "n": 1}, ["a0"]),
    ({}, list(CORPUS)),
]


def test_metadata_filters(corpus: SessionManager) -> None:
    for metadata, expected in METADATA_CASES:
        found = corpus.list_sessions(metadata=metadata)
        assert _names(found) == expected, metadata


def test_tag_filters_and_combinations(corpus: SessionManager) -> None:
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"tags": "red"}, ["a0", "a1", "a6"]),  # a2's tags is no list
        ({"tags": ["red", "blue"]}, ["a0"]),
        ({"tags": ("green",)}, ["a6"]),
        ({"tags": "3"}, []),  # only the strings of the list are tags
        ({"tags": ["red", "nope"]}, []),
        ({"tags": []}, list(CORPUS)),
        ({"tags": "red", "metadata": {"n": 1}}, ["a0", "a1"]),
        ({"tags": "red", "name_prefix": "a1"}, ["a1"]),
        ({"tags": "red", "order": "name", "descending": True}, ["a6", "a1", "a0"]),
    ]
    for kwargs, expected in cases:
        assert _names(corpus.list_sessions(**kwargs)) == expected, kwargs


def test_name_prefix_is_exact_and_not_a_pattern(corpus: SessionManager) -> None:
    assert _names(corpus.list_sessions(name_prefix="b")) == ["b-x", "b_%", "bx", "b%z"]
    assert _names(corpus.list_sessions(name_prefix="B")) == ["B-y"]
    assert _names(corpus.list_sessions(name_prefix="b_")) == ["b_%"]
    assert _names(corpus.list_sessions(name_prefix="b%")) == ["b%z"]
    assert _names(corpus.list_sessions(name_prefix="a8")) == ["a8"]
    assert _names(corpus.list_sessions(name_prefix="")) == list(CORPUS)
    assert _names(corpus.list_sessions(name_prefix="\U0010ffff")) == []
    assert _names(corpus.list_sessions(name_prefix="b", order="name")) == [
        "b%z",
        "b-x",
        "b_%",
        "bx",
    ]


def test_orders(corpus: SessionManager) -> None:
    by_name = sorted(CORPUS)  # code-point order: "B-y" before "a0"
    assert _names(corpus.list_sessions(order="name")) == by_name
    assert _names(corpus.list_sessions(order="name", descending=True)) == by_name[::-1]
    assert _names(corpus.list_sessions(order="created")) == list(CORPUS)
    assert _names(corpus.list_sessions(order="created", descending=True)) == list(CORPUS)[::-1]
    newest = corpus.list_sessions(order="updated")
    assert [i.updated_at for i in newest] == sorted((i.updated_at for i in newest), reverse=True)
    oldest = corpus.list_sessions(order="updated", descending=False)
    assert [i.updated_at for i in oldest] == sorted(i.updated_at for i in oldest)


async def test_order_updated_puts_the_last_saved_first(amanager: AsyncSessionManager) -> None:
    for name in ("u0", "u1", "u2"):
        await amanager.create_session(name)
    touched = await amanager.load_session("u0")
    touched.update_metadata({"touched": True})
    await amanager.save_session(touched)
    assert _names(await amanager.list_sessions(order="updated"))[0] == "u0"
    assert _names(await amanager.list_sessions(order="updated", descending=False))[-1] == "u0"


def test_time_ranges_are_half_open(corpus: SessionManager) -> None:
    infos = corpus.list_sessions()
    third = infos[3]
    after = corpus.list_sessions(created_after=third.created_at)
    assert _names(after) == _names(infos[3:])  # after: inclusive
    before = corpus.list_sessions(created_before=third.created_at)
    assert _names(before) == _names(infos[:3])  # before: exclusive
    window = corpus.list_sessions(
        created_after=infos[1].created_at, created_before=infos[4].created_at
    )
    assert _names(window) == _names(infos[1:4])
    later = third.updated_at + timedelta(days=1)
    assert corpus.list_sessions(updated_after=later) == []
    assert _names(corpus.list_sessions(updated_before=later)) == _names(infos)
    # an aware datetime in another zone is the same instant
    shifted = third.created_at.astimezone(datetime.fromisoformat("2026-01-01T00:00+05:30").tzinfo)
    assert _names(corpus.list_sessions(created_after=shifted)) == _names(infos[3:])


async def test_branch_filters(amanager: AsyncSessionManager) -> None:
    root = await amanager.create_session("root")
    root.add_message({"role": "user", "content": "hi"})
    await amanager.save_session(root)
    await amanager.create_session("alone")
    await amanager.fork_session("root", name="child")
    await amanager.fork_session("child", name="grandchild")
    await amanager.fork_session("root", name="sibling")
    assert _names(await amanager.list_sessions(parent="root")) == ["child", "sibling"]
    assert _names(await amanager.list_sessions(parent="child")) == ["grandchild"]
    tree = ["root", "child", "grandchild", "sibling"]
    assert _names(await amanager.list_sessions(root="root")) == tree
    assert _names(await amanager.list_sessions(root="grandchild")) == tree  # the whole tree
    assert _names(await amanager.list_sessions(roots_only=True)) == ["root", "alone"]
    assert await amanager.list_sessions(parent="nobody") == []  # unknown name: nothing
    assert await amanager.list_sessions(root="nobody") == []
    assert _names(await amanager.list_sessions(root="root", roots_only=True)) == ["root"]
    await amanager.delete_session("root")
    # the branches keep their tree (and their parent's id); the deleted name is gone
    assert await amanager.list_sessions(root="root") == []
    assert _names(await amanager.list_sessions(root="child")) == ["child", "grandchild", "sibling"]


def test_no_argument_is_what_it_always_was(corpus: SessionManager) -> None:
    everything = corpus.list_sessions()
    assert isinstance(everything, SessionList) and isinstance(everything, list)
    assert everything.next_cursor is None
    assert _names(everything) == list(CORPUS)  # oldest created first
    # the spec's Python-side snippet
    red = [s for s in everything if "red" in s.metadata.get("tags", [])]
    assert _names(red) == ["a0", "a1", "a2", "a6"]
    # the filtered path returns the same rows for the same (empty) filter
    assert corpus.list_sessions(limit=100) == everything
    assert (corpus.list_sessions(metadata={})) == everything


def _page_all(m: SessionManager, **kwargs: Any) -> list[str]:
    names: list[str] = []
    cursor = None
    while True:
        page = m.list_sessions(**kwargs, cursor=cursor)
        names += _names(page)
        cursor = page.next_cursor
        if cursor is None:
            return names


PAGED_ORDERS = [
    ("created", False),
    ("created", True),
    ("name", False),
    ("updated", True),
    ("updated", False),
]


async def test_paging_while_sessions_are_added_and_updated(amanager: AsyncSessionManager) -> None:
    for i in range(9):
        s = await amanager.create_session(f"s{i:02d}")
        s.update_metadata({"tags": ["paged"]})
        await amanager.save_session(s)
    for order, descending in PAGED_ORDERS:
        await _page_while_changing(amanager, order, descending)


async def _page_while_changing(amanager: AsyncSessionManager, order: str, descending: bool) -> None:
    label = f"{order}-{descending}"
    start = await amanager.list_sessions(tags="paged", order=order, descending=descending)
    updated: set[str] = set()
    seen: list[str] = []
    cursor = None
    turn = 0
    while True:
        page = await amanager.list_sessions(
            tags="paged", order=order, descending=descending, limit=4, cursor=cursor
        )
        seen += _names(page)
        cursor = page.next_cursor
        if cursor is None:
            break
        # between pages: a new session, and an update of one already listed and of one
        # still to come
        new = await amanager.create_session(f"{label}-new{turn}")
        new.update_metadata({"tags": ["paged"]})
        await amanager.save_session(new)
        for name in (seen[0], _names(start)[-1 - turn]):
            s = await amanager.load_session(name)
            s.update_metadata({"turn": f"{label}-{turn}"})
            await amanager.save_session(s)
            updated.add(name)
        turn += 1
    assert turn >= 2, label
    assert len(seen) == len(set(seen)), (label, seen)  # none twice
    kept = [n for n in _names(start) if n not in updated]
    assert set(kept) <= set(seen), label  # none skipped that kept its place
    assert [n for n in seen if n in kept] == kept, label  # in order
    if order == "updated":
        assert not any(f"{label}-new" in n for n in seen), label  # updated after the pin


def test_limit_pages_and_the_last_page(corpus: SessionManager) -> None:
    every = _names(corpus.list_sessions(order="name"))
    assert _page_all(corpus, order="name", limit=3) == every
    assert _page_all(corpus, order="name", limit=len(every)) == every
    assert _page_all(corpus, order="name", limit=1) == every
    last = corpus.list_sessions(order="name", limit=len(every))
    assert last.next_cursor is None
    page = corpus.list_sessions(tags="red", limit=2)
    assert _names(page) == ["a0", "a1"] and page.next_cursor is not None
    rest = corpus.list_sessions(tags="red", cursor=page.next_cursor)  # no limit: all
    assert _names(rest) == ["a6"] and rest.next_cursor is None


def test_bad_arguments(corpus: SessionManager) -> None:
    bad: list[dict[str, Any]] = [
        {"order": "size"},
        {"limit": 0},
        {"limit": -1},
        {"limit": True},
        {"limit": 1.5},
        {"descending": "yes"},
        {"roots_only": 1},
        {"tags": [1]},
        {"tags": 5},
        {"metadata": "x"},
        {"metadata": [("a", 1)]},
        {"metadata": {"a": float("nan")}},
        {"metadata": {"a": float("inf")}},
        {"metadata": {1: "x"}},
        {"metadata": {"a": {2: "x"}}},
        {"metadata": {"a": object()}},
        {"metadata": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}},
        {"created_after": datetime(2024, 1, 1)},  # naive: which zone?
        {"updated_before": "2024-01-01"},
        {"name_prefix": 3},
        {"parent": 3},
    ]
    for kwargs in bad:
        with pytest.raises(InvalidQueryError):
            corpus.list_sessions(**kwargs)
    with pytest.raises(ValueError, match="order"):  # InvalidQueryError is a ValueError
        corpus.list_sessions(order="size")
    # eight levels are allowed
    deep = {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}
    assert corpus.list_sessions(metadata=deep) == []


def test_bad_cursors(corpus: SessionManager) -> None:
    page = corpus.list_sessions(tags="red", limit=1)
    cursor = page.next_cursor
    assert cursor is not None
    for other in (
        {"tags": "blue"},
        {"tags": "red", "order": "name"},
        {"tags": "red", "descending": True},
        {"tags": "red", "metadata": {"n": 1}},
        {},
    ):
        with pytest.raises(InvalidCursorError):
            corpus.list_sessions(**other, limit=1, cursor=cursor)
    for garbage in ("", "x", "!!!", cursor[:-3], "eyJ2IjoxfQ", "bnVsbA"):
        with pytest.raises(InvalidCursorError):
            corpus.list_sessions(tags="red", limit=1, cursor=garbage)
    with pytest.raises(InvalidCursorError):
        corpus.list_sessions(tags="red", cursor=123)  # type: ignore[arg-type]
    # the same filters with another limit go on from the cursor
    assert _names(corpus.list_sessions(tags="red", limit=5, cursor=cursor)) == [
        "a1",
        "a6",
    ]


def test_the_blocking_manager_filters_and_pages(manager: SessionManager) -> None:
    for i in range(5):
        s = manager.create_session(f"m{i}")
        s.update_metadata({"tags": ["even" if i % 2 == 0 else "odd"], "i": i})
        manager.save_session(s)
    page = manager.list_sessions(tags="even", limit=2)
    assert _names(page) == ["m0", "m2"]
    assert _names(manager.list_sessions(tags="even", limit=2, cursor=page.next_cursor)) == ["m4"]
    assert _names(manager.list_sessions(metadata={"i": 3})) == ["m3"]
    assert _names(manager.list_sessions()) == [f"m{i}" for i in range(5)]


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_metadata_other_programs_write_is_filtered(
    store: Store, amanager: AsyncSessionManager
) -> None:
    await _corpus(amanager)
    store.execute(
        "UPDATE sessions SET metadata = ? WHERE name = 'a4'",
        json.dumps({"tags": ["ext"], "who": {"tool": "sqlite3"}}),
    )
    store.execute(
        "INSERT INTO sessions (id, name, created_at, updated_at, metadata) VALUES "
        "('other-id', 'z-other', ?, ?, ?)",
        *(
            [datetime.fromisoformat("2030-01-01T00:00:00+00:00")] * 2
            if store.backend == "postgresql"
            else ["2030-01-01T00:00:00+00:00"] * 2
        ),
        json.dumps({"tags": ["ext", "new"], "n": 1}),
    )
    assert _names(await amanager.list_sessions(tags="ext")) == ["a4", "z-other"]
    assert _names(await amanager.list_sessions(metadata={"who": {"tool": "sqlite3"}})) == ["a4"]
    assert _names(await amanager.list_sessions(metadata={"n": 1})) == ["a0", "a1", "z-other"]
    store.execute("UPDATE sessions SET metadata = ? WHERE name = 'a0'", json.dumps({"n": 2}))
    assert _names(await amanager.list_sessions(metadata={"n": 1})) == ["a1", "z-other"]
    assert _names(await amanager.list_sessions(tags="red")) == ["a1", "a6"]
    store.execute("DELETE FROM sessions WHERE id = 'other-id'")
    assert _names(await amanager.list_sessions(tags="ext")) == ["a4"]
    left = store.execute("SELECT count(*) FROM session_fields WHERE session_id = 'other-id'")
    assert int(left[0][0]) == 0
    # the stored metadata stays byte for byte what was written
    stored = store.execute("SELECT metadata FROM sessions WHERE name = 'a4'")
    assert json.loads(str(stored[0][0])) == {"tags": ["ext"], "who": {"tool": "sqlite3"}}


@pytest.mark.parametrize("backend", [p for p in SQL_BACKENDS if p.id != "postgresql"])
async def test_metadata_that_is_no_json_object_is_never_matched(
    store: Store, amanager: AsyncSessionManager
) -> None:
    await _corpus(amanager)
    for text in ("not json", "[1, 2]", '"tags"', None):
        store.execute("UPDATE sessions SET metadata = ? WHERE name = 'a1'", text)
        assert _names(await amanager.list_sessions(tags="red")) == ["a0", "a6"]
        assert await amanager.list_sessions(metadata={"n": 1.0}, name_prefix="a1") == []

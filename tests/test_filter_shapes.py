"""Filtered listings built once per statement shape: the values are bound per call (never in
the SQL text), one statement serves every value of a shape, and every shape gives what the
Python rules give, on every backend: keys and strings longer than what the indexes hold, a
string condition that is not the first, tags with metadata, each order, paged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from coda_session import SessionManager
from coda_session.repository.filters import make_filter, page_of
from coda_session.repository.sql.filters import KEY_CHARS, page_statement, plan
from tests.support import BACKENDS, Store

#: two keys and two strings that agree on their first KEY_CHARS characters (the part the
#: indexes hold) and differ after it
P1, P2 = "x" * (KEY_CHARS + 10) + "1", "x" * (KEY_CHARS + 10) + "2"
V1, V2 = "v" * (KEY_CHARS + 30) + "a", "v" * (KEY_CHARS + 30) + "b"

CORPUS: dict[str, dict[str, Any]] = {
    "s0": {P1: V1, "team": "ml", "n": 3, "tags": ["t1", "t2"]},
    "s1": {P1: V2, "team": "ml", "n": 3, "tags": ["t1"]},
    "s2": {P2: V1, "team": "web", "n": 4, "tags": ["t2"]},
    "s3": {P1: V1, "team": "ml", "n": 4, "tags": ["t1", "t2"], "deep": {"a": {"b": V2}}},
    "s4": {P2: V2, "n": 3, "deep": {"a": {"b": V1}}},
    "s5": {"team": "ml", "n": 3, P1: V1, "tags": ["t2"], "deep": {"a": {"b": V2}}},
    "s6": {"team": "ml", "n": 3.0, "flag": True, "tags": ["t1", "t2", "t3"]},
}

#: (filters, the names they keep, oldest created first)
CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({"metadata": {P1: V1}}, ["s0", "s3", "s5"]),
    ({"metadata": {P1: V2}}, ["s1"]),
    ({"metadata": {P2: V1}}, ["s2"]),
    ({"metadata": {"n": 3, "team": "ml"}}, ["s0", "s1", "s5", "s6"]),  # drives from "team"
    ({"metadata": {"n": 3, P1: V1}}, ["s0", "s5"]),
    ({"metadata": {"deep": {"a": {"b": V2}}, "n": 3}}, ["s5"]),
    ({"metadata": {"flag": True, "n": 3}}, ["s6"]),
    ({"metadata": {"n": 4}}, ["s2", "s3"]),
    ({"tags": ["t1", "t2"]}, ["s0", "s3", "s6"]),
    ({"tags": ["t2", "t1"], "metadata": {P1: V1}}, ["s0", "s3"]),
    ({"tags": "t3", "metadata": {"team": "ml", "n": 3}}, ["s6"]),
    ({"tags": ["t1", "t9"]}, []),
    ({"tags": "t1", "metadata": {"team": "web"}}, []),
    ({"tags": "t2", "name_prefix": "s", "metadata": {"n": 3}}, ["s0", "s5", "s6"]),
]


@pytest.fixture(scope="module", params=BACKENDS)
def shapes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SessionManager]:
    """A blocking manager on a store holding :data:`CORPUS`, once per backend."""
    store = Store(str(request.param), tmp_path_factory.mktemp("shapes") / "sessions")
    manager = store.sync_manager()
    try:
        for name, metadata in CORPUS.items():
            session = manager.create_session(name)
            session.update_metadata(metadata)
            manager.save_session(session)
        yield manager
    finally:
        manager.close()


def _paged(manager: SessionManager, limit: int, **options: Any) -> list[str]:
    names: list[str] = []
    cursor = None
    while True:
        page = manager.list_sessions(limit=limit, cursor=cursor, **options)
        names += [s.name for s in page]
        cursor = page.next_cursor
        if cursor is None:
            return names


def test_every_shape_keeps_what_the_rules_keep(shapes: SessionManager) -> None:
    everything = shapes.list_sessions()
    for options, expected in CASES:
        assert [s.name for s in shapes.list_sessions(**options)] == expected, options
        for order in ("created", "updated", "name"):
            for descending in (False, True):
                asked = {**options, "order": order, "descending": descending}
                rules = page_of(make_filter(**asked), everything).sessions
                want = [s.name for s in rules]
                assert sorted(want) == sorted(expected), asked
                assert [s.name for s in shapes.list_sessions(**asked)] == want, asked
                assert _paged(shapes, 2, **asked) == want, asked


def test_one_statement_per_shape_and_no_value_in_its_text() -> None:
    secret_a, secret_b = "zq-secret-" + "a" * 300, "zq-secret-b"
    first = make_filter(metadata={"k": secret_a, "n": 12345}, tags=["zq-tag-1"], limit=5)
    second = make_filter(metadata={"k": secret_b + "x" * 300, "n": 678}, tags="zq-tag-2", limit=9)
    stmt_a, params_a = page_statement(first)
    stmt_b, params_b = page_statement(second)
    assert stmt_a is stmt_b  # the same shape: long string, number, one tag, a limit
    assert plan(first)[0] == plan(second)[0]
    assert params_a != params_b
    assert secret_a in params_a.values()
    assert "12345" in params_a.values()  # a number travels as text, read as numeric
    dialects = (sqlite.dialect(), postgresql.dialect())  # type: ignore[no-untyped-call]
    for dialect in dialects:
        sql = str(stmt_a.compile(dialect=dialect))
        for value in ("zq-", "12345", "678", "secret"):
            assert value not in sql, (dialect.name, value)
    other = make_filter(metadata={"k": "short", "n": 1}, tags=["zq-tag-1"], limit=5)
    assert page_statement(other)[0] is not stmt_a  # a string the index holds whole


def test_a_limit_and_a_cursor_are_values_too() -> None:
    stmt, params = page_statement(make_filter(tags="t", limit=7))
    assert 8 in params.values()  # one more than the limit: whether more follow
    assert page_statement(make_filter(tags="u", limit=3))[0] is stmt

"""Adversarial cases of the linear branching model (migration 0010), found by a random
walk against a plain-Python model: each builds one tree the walk reached, then checks
what every session shows (messages, ids, ``message_count``, ``size_bytes``), what
``session_view`` shows, and that every segment's rows are consecutive in their owner's
places (``messages.ord`` / ``cum_size``: the count, size and k-th row of a range come from
its two ends, so a range whose places jump answers wrongly)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from itertools import accumulate, pairwise
from pathlib import Path

import pytest

from coda_session import SessionManager
from tests.support import SQL_BACKENDS, Store

VIEW_SQL = "SELECT session_id, position, message_id, size_bytes FROM session_view"


@pytest.fixture(params=SQL_BACKENDS)
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return Store(request.param, tmp_path / "sessions")


@pytest.fixture
def m(sql_store: Store) -> Iterator[SessionManager]:
    config = sql_store.config.model_copy(update={"autosave_interval": 0, "message_cache_size": 0})
    with SessionManager(config, sql_store.repository(private_loop=True)) as manager:
        yield manager


def add(m: SessionManager, name: str, *texts: str) -> None:
    session = m.load_session(name)
    for text in texts:
        session.add_message({"role": "user", "content": text})
    m.save_session(session)


def truncate(m: SessionManager, name: str, keep: int) -> None:
    session = m.load_session(name)
    session.truncate_messages(keep)
    m.save_session(session)


def shown(m: SessionManager, name: str) -> list[str]:
    return [msg["content"] for msg in m.load_session(name).get_messages()]


def check_store(store: Store, m: SessionManager, model: dict[str, list[str]]) -> None:
    """Every session shows what ``model`` says, and storage agrees with it."""
    infos = {i.name: i for i in m.list_sessions()}
    assert sorted(infos) == sorted(model)
    view: dict[str, list[tuple[int, int, int]]] = {}
    for sid, position, message_id, size in store.execute(VIEW_SQL):
        view.setdefault(str(sid), []).append((int(position), int(message_id), int(size)))
    seen: set[int] = set()
    for name, want in model.items():
        pairs = m.load_session(name).get_messages_with_ids()
        assert [msg["content"] for _, msg in pairs] == want, name
        ids = [i for i, _ in pairs]
        info = infos[name]
        rows = sorted(view.get(info.id, []))
        assert [r[1] for r in rows] == ids, f"{name}: session_view"
        assert [r[0] for r in rows] == list(range(1, len(ids) + 1)), f"{name}: positions"
        assert info.message_count == len(want), f"{name}: message_count"
        assert info.size_bytes == sum(r[2] for r in rows), f"{name}: size_bytes"
        seen.update(i for i in ids if i is not None)
    kept = {int(r[0]) for r in store.execute("SELECT id FROM messages")}
    assert kept == seen, f"rows kept {sorted(kept - seen)}, missing {sorted(seen - kept)}"
    for seg, owner, lo, hi, count, size in store.execute(
        "SELECT id, owner_id, lo, hi, message_count, size_bytes FROM session_segments"
    ):
        rows = store.execute(
            "SELECT ord, cum_size, size_bytes FROM messages WHERE session_id = ? AND id > ? "
            "AND id <= ? ORDER BY id",
            owner,
            lo,
            hi,
        )
        assert len(rows) == count, f"segment {seg}: message_count"
        assert sum(int(r[2]) for r in rows) == size, f"segment {seg}: size_bytes"
        for before, after in pairwise(rows):
            assert int(after[0]) == int(before[0]) + 1, f"segment {seg}: places {rows}"
            assert int(after[1]) == int(before[1]) + int(after[2]), f"segment {seg}: sizes"


def test_holder_reused_for_another_sessions_rows(sql_store: Store, m: SessionManager) -> None:
    """T forks S, V forks T; S is cleared (its rows go to a holder), then T is truncated:
    T's rows continue V's segment on that holder, so the holder was taken again for them,
    with T's places (1, 2, ...) after S's (1, 2, 3): V's forks in the middle of the
    merged segment raised DamagedDataError ("a segment's count is more than its rows")."""
    m.create_session("S")
    add(m, "S", "s1", "s2", "s3")
    m.fork_session("S", name="T")
    add(m, "T", "t1", "t2", "t3", "t4")
    m.fork_session("T", name="V")
    truncate(m, "S", 0)
    truncate(m, "T", 1)
    everything = ["s1", "s2", "s3", "t1", "t2", "t3", "t4"]
    model = {"S": [], "T": ["t4"], "V": everything}
    check_store(sql_store, m, model)
    for point in range(len(everything) + 1):
        m.fork_session("V", point, name=f"f{point}")
        model[f"f{point}"] = everything[:point]
    check_store(sql_store, m, model)
    popped = m.load_session("V").pop_messages(5)
    assert [msg["content"] for msg in popped] == everything[2:]
    model["V"] = everything[:2]
    check_store(sql_store, m, model)


def test_concurrent_appends_number_rows_in_one_run(sql_store: Store) -> None:
    """Managers appending to one session at once, then forks of it at every position.
    On PostgreSQL an append is one statement that locks the session row, but read its
    newest row (where the next places continue) from the snapshot taken *before* waiting
    for that lock: appends that queued on the row numbered their rows from the same
    place, forks then counted a segment's rows from its ends wrongly (message_count 7
    for 5 messages shown, rows nothing showed left behind, DamagedDataError)."""
    config = sql_store.config.model_copy(update={"autosave_interval": 0, "message_cache_size": 0})
    with SessionManager(config, sql_store.repository(private_loop=True)) as m:
        m.create_session("s")
    writers, turns = 4, 15

    def append(k: int) -> None:
        with SessionManager(config, sql_store.repository(private_loop=True)) as w:
            for turn in range(turns):
                session = w.load_session("s")
                session.add_message({"role": "user", "content": f"w{k}-{turn}"})
                w.save_session(session)

    threads = [threading.Thread(target=append, args=(k,)) for k in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    places = sql_store.execute(
        "SELECT m.ord, m.cum_size, m.size_bytes FROM messages m JOIN sessions s "
        "ON s.id = m.session_id WHERE s.name = 's' ORDER BY m.id"
    )
    assert [int(r[0]) for r in places] == list(range(1, writers * turns + 1))
    assert [int(r[1]) for r in places] == list(accumulate(int(r[2]) for r in places))
    with SessionManager(config, sql_store.repository(private_loop=True)) as m:
        everything = shown(m, "s")
        assert len(everything) == writers * turns
        model = {"s": everything}
        for point in range(0, len(everything), 7):
            m.fork_session("s", point, name=f"f{point}")
            model[f"f{point}"] = everything[:point]
        truncate(m, "s", 3)
        model["s"] = everything[-3:]
        check_store(sql_store, m, model)

"""Where a hit is shown, and a scope of many sessions, on every backend (issue 18).

SQLite reads the views of many sessions in a few statements (a scope of many sessions,
the sessions showing the hits of many trees); the other backends read them per session.
Each case here sets the answers of ``manager.search`` against what ``get_messages`` shows:
every session showing a hit, at the position it shows it, for a store of more trees than a
lookup names in its match (``MAX_ROOT_TOKENS``), with branches whose parent is in the
scope and branches whose parent is not.
"""

from __future__ import annotations

from typing import Any

from coda_session import AsyncSessionManager
from coda_session.repository.sql.search import MAX_ROOT_TOKENS
from tests.support import Store, user

TREES = MAX_ROOT_TOKENS + 16


async def _store(m: AsyncSessionManager) -> dict[str, bool]:
    """Roots (three in four tagged ``t``, more trees than a match names), each with a few messages holding ``needle``;
    branches of a tagged and of an untagged root, tagged or not. Returns each session's
    name and whether it is tagged."""
    tagged: dict[str, bool] = {}
    for i in range(TREES):
        s = await m.create_session(f"r{i:02d}")
        for k in range(4):
            s.add_message(user(f"needle r{i} m{k}" if k % 2 == 0 else f"plain r{i} m{k}"))
        tag = i % 4 != 1 and i != 3
        if tag:
            s.update_metadata({"tags": ["t"]})
        await m.save_session(s)
        tagged[s.name] = tag
    forks = [
        ("r01", "b01", True),
        ("r02", "b02", True),
        ("r03", "b03", False),
        ("b01", "c01", True),
    ]
    for source, name, tag in forks:
        b = await m.fork_session(source, 3, name=name)
        b.add_message(user(f"needle {name} own"))
        if tag:
            b.update_metadata({"tags": ["t"]})
        await m.save_session(b)
        tagged[name] = tag
    # the oldest rows of one root go (its places no longer start at 1)
    s = await m.load_session("r04")
    s.truncate_messages(2)
    await m.save_session(s)
    return tagged


async def _truth(m: AsyncSessionManager, names: list[str]) -> dict[str, list[tuple[str, int]]]:
    """content -> (session, position) of every session of ``names`` showing it, for the
    messages holding ``needle`` (each content is written once: a branch shows its
    parent's), from get_messages."""
    out: dict[str, list[tuple[str, int]]] = {}
    for name in sorted(names):
        s = await m.load_session(name)
        for position, message in enumerate(await s.get_messages()):
            if "needle" in message["content"]:
                out.setdefault(message["content"], []).append((name, position))
    return out


def _shown(result: Any) -> dict[str, list[tuple[str, int]]]:
    return {h.message["content"]: sorted((r.name, r.position) for r in h.shown_in) for h in result}


async def test_every_session_showing_a_hit_at_its_position(store: Store) -> None:
    async with store.async_manager() as m:
        tagged = await _store(m)
        everything = await _truth(m, list(tagged))
        whole = await m.search("needle", limit=1000)
        assert whole.total == len(everything) and whole.total_exact
        assert _shown(whole) == {k: sorted(v) for k, v in everything.items()}
        for hit in whole:
            assert (hit.session, hit.position) in everything[hit.message["content"]]

        # every session's best hit once, at its position
        best = await m.search("needle", limit=1000, per_session=True)
        per = {(h.session, h.position) for h in best}
        assert {h.session for h in best} == set(tagged)
        assert all((h.session, h.position) in everything[h.message["content"]] for h in best)
        assert len(per) == len(tagged)


async def test_a_scope_of_many_sessions(store: Store) -> None:
    async with store.async_manager() as m:
        tagged = await _store(m)
        names = [name for name, tag in tagged.items() if tag]
        assert len(names) > MAX_ROOT_TOKENS
        expected = await _truth(m, names)
        result = await m.search("needle", tags="t", limit=1000)
        assert result.total == len(expected) and result.total_exact
        assert _shown(result) == {k: sorted(v) for k, v in expected.items()}
        # the inherited history of a branch whose parent is not tagged is found through
        # the branch only; the untagged branch and root are not searched
        assert {"r01", "r03", "b03"}.isdisjoint(s for shown in expected.values() for s, _ in shown)
        assert any(("b01", 0) in shown for shown in expected.values())
        # a page at a time, the same hits
        seen: list[str] = []
        cursor = None
        while True:
            page = await m.search("needle", tags="t", order="newest", limit=7, cursor=cursor)
            seen += [h.message["content"] for h in page]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert sorted(seen) == sorted(expected)


async def test_positions_when_a_row_has_no_place(tmp_path: Any) -> None:
    """A row another program wrote without a place (``ord`` NULL): positions are counted
    by reading the rows, as they were before the views were read in bulk."""
    store = Store("sqlite", tmp_path / "sessions")
    async with store.async_manager() as m:
        await _store(m)
        store.execute(
            "UPDATE messages SET ord = NULL WHERE id = "
            "(SELECT min(m.id) FROM messages m JOIN sessions s ON s.id = m.session_id "
            "WHERE s.name = 'r06')"
        )
        expected = await _truth(m, ["r06"])
        result = await m.search("needle", session="r06", limit=100)
        assert _shown(result) == {k: sorted(v) for k, v in expected.items()}

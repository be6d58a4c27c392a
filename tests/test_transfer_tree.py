"""Export format version 2 keeps the branching tree: a store export lists parents before
their branches, a branch block holds only its own messages when its parent's block came
earlier, and importing the stream rebuilds the same tree with the shared messages stored
once; a branch exported alone holds everything it shows; version 1 files still import."""

from __future__ import annotations

import io
import json

import pytest

from coda_session import AsyncSessionManager, FileFormatError
from tests.support import Store, user


async def _contents(m: AsyncSessionManager, name: str) -> list[str]:
    session = await m.load_session(name)
    return [str(x["content"]) for x in await session.get_messages()]


async def _tree(m: AsyncSessionManager) -> None:
    """root (5) -> a (fork at 3, +2) -> aa (fork at 4, +1); root -> b (fork at 5, +1);
    the root then grows (which its branches do not show)."""
    root = await m.create_session("root")
    for i in range(5):
        root.add_message(user(f"r{i}"))
    root.update_metadata({"kind": "root"})
    await m.save_session(root)
    a = await m.create_session("a", branch_from="root", fork_point=3)
    a.add_message(user("a3"))
    a.add_message(user("a4"))
    await m.save_session(a)
    aa = await m.fork_session("a", 4, name="aa")
    aa.add_message(user("aa4"))
    await m.save_session(aa)
    b = await m.create_session("b", branch_from="root")
    b.add_message(user("b5"))
    await m.save_session(b)
    root.add_message(user("r5"))
    await m.save_session(root)


EXPECTED = {
    "root": ["r0", "r1", "r2", "r3", "r4", "r5"],
    "a": ["r0", "r1", "r2", "a3", "a4"],
    "aa": ["r0", "r1", "r2", "a3", "aa4"],
    "b": ["r0", "r1", "r2", "r3", "r4", "b5"],
}


async def test_store_export_keeps_the_tree_and_import_rebuilds_it(store: Store) -> None:
    buf = io.StringIO()
    async with store.async_manager() as m:
        await _tree(m)
        assert await m.export_store(buf) == 4
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    headers = [x for x in lines if x.get("kind") == "session"]
    assert [h["name"] for h in headers] == ["root", "a", "aa", "b"]  # parents first
    assert all(x["coda_session"] == 3 for x in lines if "coda_session" in x)
    by_name = {h["name"]: h for h in headers}
    assert "shares" not in by_name["root"] and "parent_id" not in by_name["root"]
    assert (by_name["a"]["shares"], by_name["a"]["fork_point"]) == (3, 3)
    assert (by_name["aa"]["shares"], by_name["aa"]["fork_point"]) == (4, 4)
    assert by_name["aa"]["parent_id"] == by_name["a"]["id"]
    ends = [x["message_count"] for x in lines if x.get("kind") == "end"]
    assert ends == [6, 2, 1, 1]  # each branch block holds only its own messages

    target = Store(store.backend, store.path / "copy")
    target.path.mkdir(parents=True)
    async with target.async_manager() as m2:
        assert await m2.import_store(io.StringIO(buf.getvalue())) == ["root", "a", "aa", "b"]
        for name, contents in EXPECTED.items():
            assert await _contents(m2, name) == contents, name
        infos = {i.name: i for i in await m2.get_tree("aa")}
        assert set(infos) == set(EXPECTED)
        assert infos["aa"].parent_id == infos["a"].id and infos["aa"].fork_point == 4
        assert infos["a"].parent_id == infos["root"].id and infos["a"].fork_point == 3
        assert {i.root_id for i in infos.values()} == {infos["root"].id}
        assert infos["b"].message_count == 6
        # the shared messages are the parent's own (same ids), not copies
        aa = await m2.load_session("aa")
        root = await m2.load_session("root")
        aa_ids = [i for i, _ in await aa.get_messages_with_ids()]
        root_ids = [i for i, _ in await root.get_messages_with_ids()]
        assert aa_ids[:3] == root_ids[:3]
    if target.backend in ("sqlite", "sqlite-core", "postgresql"):
        # 6 + 2 + 1 + 1 rows: one per distinct message
        assert target.execute("SELECT count(*) FROM messages")[0][0] == 10


async def test_a_branch_exported_alone_holds_everything_it_shows(store: Store) -> None:
    buf = io.StringIO()
    async with store.async_manager() as m:
        await _tree(m)
        assert await m.export_session("aa", buf) == 5
        head = json.loads(buf.getvalue().splitlines()[0])
        assert head["fork_point"] == 4 and "shares" not in head
        buf.seek(0)
        copy = await m.import_session(buf, name="aa-copy")
        assert await _contents(m, "aa-copy") == EXPECTED["aa"]
        assert copy.parent_id is None  # its parent is not in the file: a session of its own


async def test_a_store_export_after_the_parent_changed_shares_only_what_is_the_same(
    store: Store,
) -> None:
    """The parent was truncated after the fork: the branch's messages are no longer the
    parent's first ones, so the branch block holds them itself (shares 0, still linked)."""
    buf = io.StringIO()
    async with store.async_manager() as m:
        await _tree(m)
        root = await m.load_session("root")
        root.truncate_messages(2)
        await m.save_session(root)
        await m.export_store(buf)
    headers = {
        h["name"]: h
        for h in map(json.loads, buf.getvalue().splitlines())
        if h.get("kind") == "session"
    }
    assert headers["a"]["shares"] == 0 and headers["b"]["shares"] == 0
    target = Store(store.backend, store.path / "copy")
    target.path.mkdir(parents=True)
    async with target.async_manager() as m2:
        await m2.import_store(io.StringIO(buf.getvalue()))
        assert await _contents(m2, "root") == ["r4", "r5"]
        for name in ("a", "aa", "b"):
            assert await _contents(m2, name) == EXPECTED[name], name
        infos = {i.name: i for i in await m2.get_tree("root")}
        assert infos["a"].parent_id == infos["root"].id and infos["a"].fork_point == 3


async def test_version_1_files_still_import(store: Store) -> None:
    v1 = (
        '{"coda_session": 1, "kind": "store"}\n'
        '{"coda_session": 1, "kind": "session", "name": "old", "metadata": {"k": 1}}\n'
        '{"role": "user", "content": "hello", "timestamp": "2025-01-01T00:00:00+00:00"}\n'
        '{"coda_session": 1, "kind": "end", "message_count": 1}\n'
    )
    async with store.async_manager() as m:
        assert await m.import_store(io.StringIO(v1)) == ["old"]
        assert await _contents(m, "old") == ["hello"]


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ('"parent_id": "nobody", "shares": 1', "not earlier in the stream"),
        ('"parent_id": "x", "shares": -1', "non-negative integer"),
        ('"shares": 2', "non-negative integer with a parent_id"),
    ],
)
async def test_bad_tree_keys_raise_and_write_nothing(
    store: Store, header: str, problem: str
) -> None:
    text = (
        '{"coda_session": 2, "kind": "store"}\n'
        f'{{"coda_session": 2, "kind": "session", "name": "orphan", {header}}}\n'
        '{"role": "user", "content": "hi"}\n'
        '{"coda_session": 2, "kind": "end", "message_count": 1}\n'
    )
    async with store.async_manager() as m:
        with pytest.raises(FileFormatError, match=problem):
            await m.import_store(io.StringIO(text))
        assert await m.list_sessions() == []


async def test_a_block_cut_out_of_a_store_export_is_refused_alone(store: Store) -> None:
    buf = io.StringIO()
    async with store.async_manager() as m:
        await _tree(m)
        await m.export_store(buf)
        lines = buf.getvalue().splitlines()
        start = next(i for i, x in enumerate(lines) if '"name":"b"' in x)
        block = "\n".join(lines[start : start + 3]) + "\n"
        with pytest.raises(FileFormatError, match="import the whole stream"):
            await m.import_session(io.StringIO(block), name="b2")
        assert await m.get_session_info("b2") is None


async def test_get_tree_lists_parents_first_after_an_import_of_older_branches(
    store: Store,
) -> None:
    """A file whose branch says it was created before its parent (timestamps kept by an
    import): get_tree still lists every session after the one it was forked from."""
    buf = io.StringIO()
    async with store.async_manager() as m:
        await _tree(m)
        await m.export_store(buf)
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    ages = {"root": 4, "a": 3, "aa": 1, "b": 2}  # days into 2020: branches older
    for header in (x for x in lines if x.get("kind") == "session"):
        header["created_at"] = f"2020-01-0{ages[header['name']]}T00:00:00+00:00"
        header["updated_at"] = header["created_at"]
    target = Store(store.backend, store.path / "copy")
    target.path.mkdir(parents=True)
    async with target.async_manager() as m2:
        await m2.import_store(io.StringIO("\n".join(json.dumps(x) for x in lines) + "\n"))
        tree = await m2.get_tree("aa")
        by_id = {i.id: i for i in tree}
        order = [i.name for i in tree]
        assert sorted(order) == ["a", "aa", "b", "root"]
        for info in tree:
            if info.parent_id is not None:
                assert order.index(by_id[info.parent_id].name) < order.index(info.name), order
        assert next(i.name for i in await m2.list_sessions()) == "aa"  # times kept


async def test_a_chain_of_forks_exports_what_each_level_shares(store: Store) -> None:
    """Each level of a chain shares its parent's messages up to where the two still
    agree (found by bisection on the SQL and memory backends): a pop in the middle of
    the chain and a truncation make a level share fewer, and the import rebuilds every
    level as it was."""
    buf = io.StringIO()
    async with store.async_manager() as m:
        s = await m.create_session("c0")
        s.add_message(user("m0"))
        await m.save_session(s)
        for k in range(1, 30):
            s = await m.create_session(f"c{k}", branch_from=f"c{k - 1}")
            s.add_message(user(f"m{k}"))
            await m.save_session(s)
        popped = await m.load_session("c10")
        await popped.pop_messages(3)  # c11 now shares 8 of c10's
        cut = await m.load_session("c20")
        cut.truncate_messages(5)  # c21 shares none of c20's
        await m.save_session(cut)
        views = {f"c{k}": await _contents(m, f"c{k}") for k in range(30)}
        await m.export_store(buf)
    headers = {
        h["name"]: h
        for h in map(json.loads, buf.getvalue().splitlines())
        if h.get("kind") == "session"
    }
    for k in range(1, 30):
        mine, parent = views[f"c{k}"], views[f"c{k - 1}"]
        same = 0
        while same < min(len(mine), len(parent)) and mine[same] == parent[same]:
            same += 1
        assert headers[f"c{k}"]["shares"] == same, k
    assert headers["c11"]["shares"] == 8 and headers["c21"]["shares"] == 0
    target = Store(store.backend, store.path / "copy")
    target.path.mkdir(parents=True)
    async with target.async_manager() as m2:
        await m2.import_store(io.StringIO(buf.getvalue()))
        for name, want in views.items():
            assert await _contents(m2, name) == want, name

"""Optional capabilities: a repository of the user's with only the protocol's methods
serves everything, through the paths the type guards choose, on every backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from coda_session import AsyncSessionManager
from coda_session.repository import Repository, open_repository
from coda_session.repository.capabilities import (
    can_list_tree,
    can_measure_text,
    can_snapshot,
)
from coda_session.repository.memory import MemoryRepository
from coda_session.repository.storage_adapter import StorageAdapter
from tests.support import Store, user

# what the protocol requires: a user's repository is not asked for more
PROTOCOL = (
    "open",
    "aclose",
    "create_session",
    "load_session",
    "read_messages",
    "read_page",
    "import_session",
    "save",
    "delete_session",
    "list_sessions",
)


class PlainRepository:
    """A user's repository: the protocol's methods only (no ``list_tree``,
    ``text_length`` nor ``snapshot``), inheriting nothing, each served by a real backend."""

    def __init__(self, inner: Repository) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in PROTOCOL:
            return getattr(self._inner, name)
        raise AttributeError(name)


def plain(store: Store) -> PlainRepository:
    return PlainRepository(open_repository(store.config, store.repository()))


def test_a_repository_that_only_matches_the_protocol_is_accepted(store: Store) -> None:
    repo = plain(store)
    assert not issubclass(PlainRepository, Repository)  # nothing inherited: matched
    assert isinstance(repo, Repository)
    assert open_repository(store.config, repo) is repo
    assert (can_list_tree(repo), can_measure_text(repo), can_snapshot(repo)) == (False,) * 3


def test_the_shipped_backends_inherit_the_protocol_and_opt_in(store: Store) -> None:
    repo = open_repository(store.config, store.repository())
    assert isinstance(repo, Repository)
    abilities = (can_list_tree(repo), can_measure_text(repo), can_snapshot(repo))
    if isinstance(repo, MemoryRepository | StorageAdapter):
        assert Repository in type(repo).__mro__
        # a whole session in hand: listing a tree and measuring text need no query of
        # their own, so these backends take the path every repository has
        assert abilities == (False, False, True)
    else:  # SQL: one query each
        assert abilities == (True, True, True)


async def _tree(manager: AsyncSessionManager) -> tuple[Any, ...]:
    root = await manager.load_session("root")
    kid = await manager.load_session("kid")
    grandkid = await manager.load_session("grandkid")
    return (
        [(i.name, i.parent_id) for i in await manager.get_tree("grandkid")],
        [i.name for i in await manager.list_branches("root")],
        [i.name for i in await grandkid.get_lineage()],
        [await s.get_token_count() for s in (root, kid, grandkid)],
    )


@pytest.mark.asyncio
async def test_a_repository_without_capabilities_serves_everything(
    amanager: AsyncSessionManager, store: Store, tmp_path: Path
) -> None:
    root = await amanager.create_session("root")
    for i in range(6):
        root.add_message(user(f"message {i} " + "x" * i))
    await amanager.save_session(root)
    kid = await amanager.fork_session(root, 4, name="kid")
    kid.add_message(user("the kid's own"))
    await amanager.save_session(kid)
    grandkid = await amanager.fork_session(kid, name="grandkid")
    grandkid.add_message({"role": "assistant", "content": "deep", "model": "m"})
    await amanager.save_session(grandkid)
    await amanager.create_session("another")

    # a cache of one message: the token counts are the storage's, not the cache's
    config = store.config.model_copy(update={"message_cache_size": 1})
    users = AsyncSessionManager(config, plain(store))
    ours = AsyncSessionManager(config, store.repository())
    try:
        expected = await _tree(ours)
        assert expected[0] == [("root", None), ("kid", root.id), ("grandkid", kid.id)]
        assert expected[1] == ["kid"] and expected[2] == ["root", "kid", "grandkid"]
        assert await _tree(users) == expected

        for manager, at in ((ours, tmp_path / "ours"), (users, tmp_path / "users")):
            at.mkdir()
            assert await manager.export_session("kid", at / "kid.jsonl") == 5
            assert await manager.export_store(at / "store.jsonl") == 4
        for file in ("kid.jsonl", "store.jsonl"):
            mine = (tmp_path / "users" / file).read_bytes()
            assert mine == (tmp_path / "ours" / file).read_bytes()
    finally:
        await users.close()
        await ours.close()

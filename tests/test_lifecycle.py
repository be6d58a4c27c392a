"""Unsaved changes are never dropped without a word.

A session object with unsaved changes stays held by its manager until it is saved,
discarded on purpose (``discard_changes()``), or the manager closes; ``close()``, autosave
and interpreter exit flush it, and with autosave off whatever is dropped is named in an
:class:`UnsavedChangesWarning`. Before the fix the manager held sessions weakly: the
issue's loop below stored 0 messages for "alice" and 1 for "bob" on every backend.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import warnings
import weakref
from pathlib import Path

import pytest

from coda_session import (
    AsyncSessionManager,
    ReadOnlyError,
    SessionError,
    SessionManager,
    UnsavedChangesWarning,
)
from coda_session.manager import autosave_once
from tests.support import ROOT, Store, user

USERS = ("alice", "bob", "carol")


def _counts_sync(store: Store) -> dict[str, int]:
    """The stored message count of each of USERS (0 for a session never stored)."""
    with store.sync_manager() as again:
        infos = {u: again.get_session_info(u) for u in USERS}
    return {u: 0 if i is None else i.message_count for u, i in infos.items()}


async def _counts_async(store: Store) -> dict[str, int]:
    again = store.async_manager()
    try:
        return {u: (await again.load_session(u)).message_count for u in USERS}
    finally:
        await again.close()


# -- the repro, every backend, both APIs -------------------------------------


def test_unreferenced_sessions_flushed_on_close_sync(store: Store) -> None:
    with store.sync_manager() as m:
        for name in USERS:
            s = m.create_session(name)
            s.add_message(user(f"hi from {name}"))
        del s
        gc.collect()  # the objects of alice and bob are unreferenced now
    assert _counts_sync(store) == dict.fromkeys(USERS, 1)


async def test_unreferenced_sessions_flushed_on_close_async(store: Store) -> None:
    m = store.async_manager()
    for name in USERS:
        s = await m.create_session(name)
        s.add_message(user(f"hi from {name}"))
        s.update_metadata({"who": name})
    del s
    gc.collect()
    await m.close()
    assert await _counts_async(store) == dict.fromkeys(USERS, 1)
    again = store.async_manager()
    try:
        assert (await again.load_session("alice")).metadata == {"who": "alice"}
    finally:
        await again.close()


async def test_autosave_flushes_unreferenced_sessions(store: Store) -> None:
    m = store.async_manager()
    try:
        s = await m.create_session("alice")
        s.add_message(user("hi"))
        del s
        gc.collect()
        await autosave_once(m)  # one pass of the autosave timer
        assert (await m.get_session_info("alice")).message_count == 1  # type: ignore[union-attr]
    finally:
        await m.close()


async def test_held_while_unsaved_then_weak(store: Store) -> None:
    """Held strongly while it has unsaved changes; collectable once saved or discarded."""
    m = store.async_manager(autosave_interval=0)
    try:
        s = await m.create_session("alice")
        s.add_message(user("hi"))
        ref = weakref.ref(s)
        del s
        gc.collect()
        held = ref()
        assert held is not None and held.has_unsaved_changes
        await m.save_session(held)
        del held
        gc.collect()
        assert ref() is None

        t = await m.create_session("bob")
        t.update_metadata({"k": 1})
        t.discard_changes()
        ref = weakref.ref(t)
        del t
        gc.collect()
        assert ref() is None
    finally:
        await m.close()


def test_sync_session_held_while_unsaved(store: Store) -> None:
    with store.sync_manager() as m:
        s = m.create_session("alice")
        s.add_message(user("hi"))
        inner = weakref.ref(s._inner)
        del s
        gc.collect()
        assert inner() is not None
        m.save_session(m.load_session("alice"))  # another object: the first stays unsaved
        gc.collect()
        assert inner() is not None
    assert inner() is None or not inner().has_unsaved_changes  # type: ignore[union-attr]


# -- discard_changes ------------------------------------------------------------------


async def test_discard_changes_restores_the_saved_view(amanager: AsyncSessionManager) -> None:
    s = await amanager.create_session("d")
    s.add_message(user("a"))
    s.add_message(user("b"))
    s.update_metadata({"keep": 1, "change": "old"})
    await amanager.save_session(s)

    s.add_message(user("c"))
    s.truncate_messages(1)
    s.update_metadata({"change": "new", "added": True})
    assert s.message_count == 1
    s.discard_changes()

    assert not s.has_unsaved_changes
    assert s.message_count == 2
    assert [m["content"] for m in await s.get_messages()] == ["a", "b"]
    assert s.metadata == {"keep": 1, "change": "old"}
    await amanager.save_session(s)  # nothing to write
    again = await amanager.load_session("d")
    assert [m["content"] for m in await again.get_messages()] == ["a", "b"]
    assert again.metadata == {"keep": 1, "change": "old"}


def test_discard_changes_sync(manager: SessionManager) -> None:
    s = manager.create_session("d")
    s.add_message(user("a"))
    manager.save_session(s)
    s.clear_messages()
    s.add_message(user("b"))
    s.discard_changes()
    assert [m["content"] for m in s.get_messages()] == ["a"]
    assert not s.has_unsaved_changes


# -- autosave off: what is dropped is named -------------------------------------------


def test_close_with_autosave_off_warns_naming_the_sessions(store: Store) -> None:
    store.config = store.config.model_copy(update={"autosave_interval": 0})
    m = store.sync_manager()
    for name in USERS[:2]:
        s = m.create_session(name)
        s.add_message(user("hi"))
    quiet = m.create_session("carol")
    quiet.add_message(user("dropped on purpose"))
    quiet.discard_changes()
    del s
    gc.collect()
    with pytest.warns(UnsavedChangesWarning, match="'alice', 'bob'") as caught:
        m.close()
    assert "carol" not in str(caught[0].message)
    assert _counts_sync(store) == {"alice": 0, "bob": 0, "carol": 0}


async def test_async_close_with_autosave_off_warns(store: Store) -> None:
    m = store.async_manager(autosave_interval=0)
    s = await m.create_session("alice")
    s.add_message(user("hi"))
    with pytest.warns(UnsavedChangesWarning, match="'alice'"):
        await m.close()


async def test_close_with_nothing_unsaved_is_quiet(store: Store) -> None:
    m = store.async_manager(autosave_interval=0)
    s = await m.create_session("alice")
    s.add_message(user("hi"))
    await m.save_session(s)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await m.close()


# -- an AsyncSessionManager never closed before asyncio.run returns -------------------


def _run_unclosed(store: Store, autosave: float) -> list[warnings.WarningMessage]:
    async def main() -> None:
        m = store.async_manager(autosave_interval=autosave)
        for name in USERS[:2]:
            s = await m.create_session(name)
            s.add_message(user(f"hi from {name}"))
        # returns without closing the manager

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        gc.collect()
    return list(caught)


def test_unclosed_async_manager_flushed_as_its_loop_ends(store: Store) -> None:
    caught = _run_unclosed(store, 300)
    assert _counts_sync(store) == {"alice": 1, "bob": 1, "carol": 0}
    flushed = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert any("'alice', 'bob'" in str(w.message) for w in flushed), caught
    assert not [w for w in caught if issubclass(w.category, UnsavedChangesWarning)]


def test_unclosed_async_manager_with_autosave_off_warns(store: Store) -> None:
    caught = _run_unclosed(store, 0)
    lost = [w for w in caught if issubclass(w.category, UnsavedChangesWarning)]
    assert len(lost) == 1, caught
    assert "'alice', 'bob'" in str(lost[0].message)
    assert "never closed" in str(lost[0].message)
    assert _counts_sync(store) == {"alice": 0, "bob": 0, "carol": 0}


def test_manager_kept_across_loops_flushes_at_each_loop_end(store: Store) -> None:
    """A manager used from several loops in turn (asyncio.run per call) lives on: a loop's
    end saves its unsaved changes (an autosave pass) and warns about nothing."""
    m = store.async_manager()

    async def write() -> None:
        s = await m.create_session("alice")
        s.add_message(user("hi"))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asyncio.run(write())
    assert not m.closed
    assert _counts_sync(store)["alice"] == 1

    async def close() -> None:
        await m.close()

    asyncio.run(close())


# -- interpreter exit, in a real process ----------------------------------------------

_EXIT_SCRIPT = """
import asyncio, sys
from coda_session import AsyncSessionManager, SessionManager

path, autosave = sys.argv[1], float(sys.argv[2])
cfg = {"session": {"storage_path": path, "autosave_interval": autosave}}

# a blocking manager never closed, its session object dropped
manager = SessionManager(cfg)
s = manager.create_session("blocking")
s.add_message({"role": "user", "content": "hi"})
del s

# a blocking manager dropped without close() while its session has unsaved changes
def dropped():
    m = SessionManager(cfg)
    m.create_session("dropped").add_message({"role": "user", "content": "hi"})

dropped()

# an async manager whose loop was closed by hand (no asyncio.run: no loop shutdown)
amanager = AsyncSessionManager(cfg)

async def main():
    t = await amanager.create_session("async")
    t.add_message({"role": "user", "content": "hi"})

loop = asyncio.new_event_loop()
loop.run_until_complete(main())
loop.close()
print("exiting", flush=True)
"""


@pytest.mark.parametrize("autosave", [300, 0])
def test_interpreter_exit(tmp_path: Path, autosave: int) -> None:
    path = tmp_path / "s"
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, str(path), str(autosave)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "default"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "exiting\n"
    with SessionManager({"session": {"storage_path": str(path)}}) as m:
        counts = {n: m.load_session(n).message_count for n in ("blocking", "dropped", "async")}
    if autosave:
        assert counts == {"blocking": 1, "dropped": 1, "async": 1}
        assert "UnsavedChangesWarning" not in done.stderr
    else:
        assert counts == {"blocking": 0, "dropped": 0, "async": 0}
        warned = [line for line in done.stderr.splitlines() if "UnsavedChangesWarning" in line]
        assert len(warned) == 3, done.stderr
        for name in ("'blocking'", "'dropped'", "'async'"):
            assert any(name in line for line in warned), (name, done.stderr)


# -- session.metadata is read-only, loudly ---------------------------------------------


async def test_metadata_changed_in_place_raises_async(amanager: AsyncSessionManager) -> None:
    s = await amanager.create_session("m")
    s.update_metadata({"k": 1, "nested": {"x": [1, 2]}})
    with pytest.raises(ReadOnlyError, match="update_metadata"):
        s.metadata["k"] = 2
    with pytest.raises(ReadOnlyError):
        del s.metadata["k"]
    with pytest.raises(ReadOnlyError):
        s.metadata.update({"k": 2})
    with pytest.raises(ReadOnlyError):
        s.metadata["nested"]["x"].append(3)
    with pytest.raises(ReadOnlyError):
        s.metadata["nested"]["y"] = 1
    assert isinstance(s.metadata, dict)
    assert isinstance(ReadOnlyError("x"), (SessionError, TypeError))
    assert json.loads(json.dumps(s.metadata)) == {"k": 1, "nested": {"x": [1, 2]}}
    import copy

    plain = copy.deepcopy(s.metadata)
    plain["nested"]["x"].append(3)  # a deep copy is an ordinary dict to change
    assert type(plain) is dict and type(plain["nested"]["x"]) is list
    assert s.metadata == {"k": 1, "nested": {"x": [1, 2]}}
    assert not s.has_unsaved_changes or s.metadata["k"] == 1


def test_metadata_changed_in_place_raises_sync(manager: SessionManager) -> None:
    s = manager.create_session("m")
    s.update_metadata({"k": 1})
    with pytest.raises(ReadOnlyError, match=r"update_metadata"):
        s.metadata["k"] = 2
    with pytest.raises(ReadOnlyError):
        s.metadata.setdefault("j", 1)
    manager.save_session(s)
    assert manager.load_session("m").metadata == {"k": 1}


# -- repr and help ----------------------------------------------------------------------


def test_reprs_say_what_and_where(store: Store) -> None:
    with store.sync_manager() as m:
        before = repr(m)
        assert before.startswith("<SessionManager backend=") or "custom storage=" in before
        assert "state=not-opened-yet" in before
        s = m.create_session("alice")
        s.add_message(user("hi"))
        s.update_metadata({"k": 1})
        text = repr(m)
        assert "state=open" in text and "session_objects=1" in text and "unsaved=1" in text
        assert repr(s) == (
            "<Session 'alice' messages=1 (saved 0, new 1) metadata_keys=1 unsaved=yes>"
        )
        m.save_session(s)
        assert "unsaved=0" in repr(m)
        assert "unsaved=no" in repr(s)
        branch = m.fork_session(s, 1, name="b")
        assert f"branch_of={s.id[:8]} fork_point=1" in repr(branch)
    assert "state=closed" in repr(m)
    if store.backend in ("sqlite", "sqlite-core"):
        assert f"file={str(store.database)!r}" in repr(m)
    if store.backend == "memory":
        assert "backend=memory" in repr(m)
    if store.backend == "custom":
        assert "custom storage=JsonDirStorage" in repr(m)


async def test_async_reprs(amanager: AsyncSessionManager) -> None:
    s = await amanager.create_session("alice")
    assert repr(s).startswith("<AsyncSession 'alice' messages=0 ")
    assert "state=open" in repr(amanager) and repr(amanager).startswith("<AsyncSessionManager ")


def test_postgresql_repr_hides_the_password() -> None:
    url = "postgresql+asyncpg://user:s3cret-pw@db.example:5432/chats"
    m = AsyncSessionManager({"session": {"database_url": url}})
    text = repr(m)
    assert "s3cret-pw" not in text
    assert "backend=postgresql" in text and "db.example:5432/chats" in text and "***" in text
    assert m.closed is False


def test_help_explains_the_managers() -> None:
    for cls in (SessionManager, AsyncSessionManager):
        doc = cls.__doc__ or ""
        for needed in ("create_session", "save_session", "close", "discard_changes", "repr"):
            assert needed in doc, (cls.__name__, needed)

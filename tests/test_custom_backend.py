"""The custom SessionStorage as a backend: what the adapter must give like the others, and
the reference's storage shape (``save(session)`` with ``get_messages()``, ``load`` returning
a session built from name, messages and metadata)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from coda_session import (
    AsyncSessionManager,
    Session,
    SessionData,
    SessionInfo,
    SessionManager,
    SessionStorage,
    StorageError,
)
from tests.support import JsonDirStorage, Store, user


def test_stale_truncation_keeps_what_another_writer_added(store: Store) -> None:
    """README: a truncation removes only messages the object had seen; the 5 another
    object saved meanwhile stay, on every backend (custom storage included)."""
    with store.sync_manager() as m:
        stale = m.create_session("chat")
        for i in range(4):
            stale.add_message(user(f"old {i}"))
        m.save_session(stale)
        other = m.load_session("chat")
        other.truncate_messages(1)  # the other writer cuts first, then adds 5
        for i in range(5):
            other.add_message(user(f"new {i}"))
        m.save_session(other)
        stale.truncate_messages(2)
        m.save_session(stale)
        kept = [x["content"] for x in m.load_session("chat").get_messages()]
    # of what the stale object saw only "old 3" is left, within its keep of 2
    assert kept == ["old 3", *(f"new {i}" for i in range(5))]


def test_ids_are_never_reused_after_a_truncation(store: Store) -> None:
    """After a stale object's truncation drops everything it saw, a message saved next
    takes a new id: another object that saw the old newest id must not mistake it."""
    with store.sync_manager() as m:
        a = m.create_session("chat")
        a.add_message(user("one"))
        a.add_message(user("two"))
        m.save_session(a)
        b = m.load_session("chat")
        a.truncate_messages(0)
        m.save_session(a)
        a.add_message(user("three"))
        m.save_session(a)
        b.truncate_messages(1)  # b saw one and two, both gone: "three" is not its to cut
        m.save_session(b)
        assert [x["content"] for x in m.load_session("chat").get_messages()] == ["three"]


def test_json_storage_sees_what_another_instance_saved(tmp_path: Path) -> None:
    config = {"session": {"autosave_interval": 0}}
    with SessionManager(config, storage=JsonDirStorage(tmp_path / "s")) as m:
        s = m.create_session("chat")
        s.add_message(user("kept"))
        s.update_metadata({"topic": "python", "big": 2**70})
        m.save_session(s)
    assert [p.suffix for p in (tmp_path / "s").iterdir()] == [".json"]  # no temp file left
    with SessionManager(config, storage=JsonDirStorage(tmp_path / "s")) as again:
        loaded = again.load_session("chat")
        assert loaded.get_messages()[0]["content"] == "kept"
        assert loaded.metadata == {"topic": "python", "big": 2**70}


# -- the reference's shape ------------------------------------------------------------------


class ReferenceStyleStorage(SessionStorage):
    """Written as the reference describes a custom storage: ``save(session)`` reads the
    session's name, ``get_messages()`` and ``metadata``; ``load`` returns
    ``Session(name, messages=..., metadata=...)``, with ``coda_session.Session``."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def save(self, session: SessionData) -> None:
        self.rows[session.name] = {
            "messages": session.get_messages(),
            "metadata": session.metadata,
        }

    def load(self, name: str) -> SessionData | None:
        row = self.rows.get(name)
        if row is None:
            return None
        return Session(name, messages=row["messages"], metadata=row["metadata"])

    def delete(self, name: str) -> None:
        self.rows.pop(name, None)

    def list_all(self) -> list[SessionInfo]:
        return [s.info() for s in (self.load(n) for n in self.rows) if s is not None]


def test_reference_shaped_storage_runs() -> None:
    storage = ReferenceStyleStorage()
    with SessionManager({"session": {"autosave_interval": 0}}, storage=storage) as m:
        s = m.create_session("chat")
        s.add_message(user("hi"))
        s.update_metadata({"topic": "python"})
        m.save_session(s)
        s.add_message(user("again"))
        m.save_session(s)
        loaded = m.load_session("chat")
        assert [x["content"] for x in loaded.get_messages()] == ["hi", "again"]
        assert loaded.metadata == {"topic": "python"}
        assert [i.name for i in m.list_sessions()] == ["chat"]
        b = m.create_session("branch", branch_from="chat")
        assert [x["content"] for x in b.get_messages()] == ["hi", "again"]
        m.delete_session("chat")
        assert m.get_session_info("chat") is None
    assert storage.rows["branch"]["metadata"] == {"topic": "python"}


def test_reference_shaped_storage_runs_under_the_async_manager() -> None:
    storage = ReferenceStyleStorage()

    async def use() -> None:
        async with AsyncSessionManager({"session": {"autosave_interval": 0}}, storage) as m:
            s = await m.create_session("chat")
            s.add_message(user("hi"))
            await m.save_session(s)
            loaded = await m.load_session("chat")
            assert [x["content"] for x in await loaded.get_messages()] == ["hi"]

    asyncio.run(use())
    built = Session("chat", messages=[user("hi")], metadata={"k": 1})
    assert isinstance(built, SessionData) and built.metadata == {"k": 1}


def test_load_may_return_a_session_of_another_manager(tmp_path: Path) -> None:
    """``load(name) -> Session``: a blocking Session (name, metadata, get_messages()) that
    the storage got from a manager of its own is accepted as it is."""
    backing = SessionManager({"session": {"storage_path": str(tmp_path / "db")}})

    class Mirror(SessionStorage):
        def save(self, session: SessionData) -> None:
            target = backing.create_session(session.name)
            target.set_messages(session.get_messages())
            target.update_metadata(session.metadata)
            backing.save_session(target)

        def load(self, name: str) -> Session | None:
            if backing.get_session_info(name) is None:
                return None
            return backing.load_session(name)

        def delete(self, name: str) -> None:
            backing.delete_session(name, missing_ok=True)

        def list_all(self) -> list[SessionInfo]:
            return backing.list_sessions()

    try:
        seeded = backing.create_session("chat")  # written by the backing manager
        seeded.add_message(user("hi"))
        seeded.update_metadata({"k": 1})
        backing.save_session(seeded)
        with SessionManager({"session": {"autosave_interval": 0}}, storage=Mirror()) as m:
            loaded = m.load_session("chat")
            assert [x["content"] for x in loaded.get_messages()] == ["hi"]
            assert loaded.metadata == {"k": 1}
            assert loaded.id == seeded.id  # the loaded Session's own id is kept
            assert [i.name for i in m.list_sessions()] == ["chat"]
            loaded.add_message(user("more"))
            m.save_session(loaded)  # saved back through Mirror.save
        assert [x["content"] for x in backing.load_session("chat").get_messages()] == [
            "hi",
            "more",
        ]
    finally:
        backing.close()


def test_load_returning_something_else_is_a_storage_error() -> None:
    class Wrong(ReferenceStyleStorage):
        def load(self, name: str) -> Any:
            return {"name": name} if name in self.rows else None

    with SessionManager({"session": {"autosave_interval": 0}}, storage=Wrong()) as m:
        m.create_session("chat")
        with pytest.raises(StorageError, match="not SessionData nor an object"):
            m.load_session("chat")


def test_message_ids_that_cannot_match_are_a_storage_error() -> None:
    class Corrupting(ReferenceStyleStorage):
        def load(self, name: str) -> SessionData | None:
            found = super().load(name)
            if found is not None and found.messages:
                found.message_ids = [5, 3][: len(found.messages)] + [9] * (len(found.messages) - 2)
            return found

    with SessionManager({"session": {"autosave_interval": 0}}, storage=Corrupting()) as m:
        s = m.create_session("chat")
        s.add_message(user("a"))
        s.add_message(user("b"))
        m.save_session(s)
        with pytest.raises(StorageError, match="message_ids"):
            m.load_session("chat")

"""A user's own SessionStorage plugs in under both APIs."""

from __future__ import annotations

import copy

import pytest

from coda_session import (
    AsyncSessionManager,
    SessionData,
    SessionInfo,
    SessionManager,
    SessionNotFoundError,
    StorageError,
)
from tests.support import DictStorage


def test_sync_manager_with_custom_storage() -> None:
    storage = DictStorage()
    with SessionManager({"session": {}}, storage=storage) as m:
        s = m.create_session("chat")
        s.add_message({"role": "user", "content": "hi"})
        s.update_metadata({"k": 1})
        m.save_session(s)
        b = m.create_session("branch", branch_from="chat")
        b.add_message({"role": "user", "content": "more"})
        m.save_session(b)
        s.truncate_messages(0)
        m.save_session(s)
        assert [i.name for i in m.list_sessions()] == ["chat", "branch"]
        assert m.load_session("branch").get_messages()[1]["content"] == "more"
        assert m.load_session("chat").get_messages() == []
        m.delete_session("chat")
        with pytest.raises(SessionNotFoundError):
            m.load_session("chat")
    assert storage.data["branch"].metadata == {"k": 1}
    assert [x["content"] for x in storage.data["branch"].messages] == ["hi", "more"]


async def test_async_manager_with_custom_storage() -> None:
    storage = DictStorage()
    async with AsyncSessionManager(None, storage=storage) as m:
        s = await m.create_session("chat")
        for i in range(5):
            s.add_message({"role": "user", "content": str(i)})
        await m.save_session(s)
        loaded = await m.load_session(session_id=s.id)
        assert [x["content"] for x in await loaded.get_messages(limit=2)] == ["3", "4"]
        assert await loaded.get_token_count() > 0


async def test_failing_custom_storage_raises_storage_error() -> None:
    class Broken(DictStorage):
        def save(self, session: SessionData) -> None:
            raise OSError("disk on fire")

    async with AsyncSessionManager(None, storage=Broken()) as m:
        with pytest.raises(StorageError, match="disk on fire"):
            await m.create_session("x")


def test_storage_must_be_the_right_kind() -> None:
    from coda_session import InvalidConfigError

    with pytest.raises(InvalidConfigError):
        AsyncSessionManager(None, storage=copy.copy)  # type: ignore[arg-type]


def test_a_storage_calling_its_own_blocking_manager_gets_an_error_not_a_hang() -> None:
    """The blocking manager runs one call at a time; a storage method calling back into
    the manager that waits for it would wait for itself. It is refused at once instead,
    while a storage may use another manager freely."""
    from coda_session import SessionError

    backing = SessionManager({"session": {"backend": "memory", "autosave_interval": 0}})

    class Reentrant(DictStorage):
        manager: SessionManager | None = None

        def list_all(self) -> list[SessionInfo]:
            assert self.manager is not None
            self.manager.get_session_info("x")  # back into its own manager
            return super().list_all()

        def save(self, session: SessionData) -> None:
            backing.save_session(backing.create_session(session.name))  # another manager
            super().save(session)

    storage = Reentrant()
    with SessionManager({"session": {"autosave_interval": 0}}, storage=storage) as m:
        storage.manager = m
        m.save_session(m.create_session("x"))
        with pytest.raises(SessionError, match="cannot call the manager that is running it"):
            m.list_sessions()
        assert m.get_session_info("x") is not None  # still usable
    assert [i.name for i in backing.list_sessions()] == ["x"]
    backing.close()


def test_custom_storage_sizes_truncation_and_size_limit() -> None:
    """A save reports the size the storage's own data gives, after a truncation and an
    append; a save past max_session_size is refused and writes nothing."""
    from coda_session import SessionTooLargeError

    storage = DictStorage()
    config = {"session": {"max_session_size": 0.001, "autosave_interval": 0}}  # 1,000 bytes
    with SessionManager(config, storage=storage) as m:
        s = m.create_session("chat")
        for i in range(4):
            s.add_message({"role": "user", "content": f"message {i}"})
        m.save_session(s)
        s.truncate_messages(1)
        s.add_message({"role": "assistant", "content": "after the cut"})
        m.save_session(s)
        info = m.get_session_info("chat")
        assert info is not None and info == storage.data["chat"].info()
        assert (info.message_count, info.size_bytes) == (2, s.info().size_bytes)
        assert [x["content"] for x in s.get_messages()] == ["message 3", "after the cut"]
        # two objects of one session: each append fits what its object knows, together
        # they do not; the storage-side check refuses the second save
        other = m.load_session("chat")
        s.add_message({"role": "user", "content": "a" * 600})
        other.add_message({"role": "user", "content": "b" * 600})
        m.save_session(s)
        saves = storage.saves
        with pytest.raises(SessionTooLargeError):
            m.save_session(other)
        assert storage.saves == saves  # nothing written
        other.discard_changes()  # dropped on purpose: close() has nothing to warn about
        assert [x["content"][:1] for x in storage.data["chat"].messages] == ["m", "a", "a"]

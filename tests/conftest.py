"""Fixtures: every contract test runs against every backend, async and sync.

Backends:
- ``memory``: the in-process repository;
- ``sqlite``: the default backend (a real SQLite file, one-trip fast path);
- ``sqlite-core``: the same file format through the generic SQLAlchemy path that other
  databases (PostgreSQL later) use, so that path is proven on every run too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from coda_session import AsyncSessionManager, SessionConfig, SessionManager
from coda_session.repository import Repository, open_repository
from coda_session.repository.memory import MemoryRepository
from coda_session.repository.sql import SqlRepository

BACKENDS = ["memory", "sqlite", "sqlite-core"]


class Store:
    """Opens managers on one backend's storage; ``reopen`` gives a fresh manager that
    sees what the earlier ones saved (for memory: the same in-process repository)."""

    def __init__(self, backend: str, path: Path) -> None:
        self.backend = backend
        self.path = path
        backend_key = "memory" if backend == "memory" else "sqlite"
        self.config = SessionConfig.from_mapping(
            {"session": {"backend": backend_key, "storage_path": str(path)}}
        )
        self._memory = MemoryRepository() if backend == "memory" else None

    def repository(self, *, private_loop: bool = False) -> Repository:
        if self._memory is not None:
            return self._memory
        if self.backend == "sqlite-core":
            return SqlRepository(self.config, fast_path=False)
        return open_repository(self.config, private_loop=private_loop)

    def async_manager(self, **overrides: Any) -> AsyncSessionManager:
        config = self.config.model_copy(update=overrides) if overrides else self.config
        return AsyncSessionManager(config, self.repository())

    def sync_manager(self) -> SessionManager:
        return SessionManager(self.config, self.repository(private_loop=True))

    @property
    def database(self) -> Path | None:
        return None if self.backend == "memory" else self.path / "sessions.db"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(backend: str, tmp_path: Path) -> Store:
    return Store(backend, tmp_path / "sessions")


@pytest_asyncio.fixture
async def amanager(store: Store) -> AsyncIterator[AsyncSessionManager]:
    manager = store.async_manager()
    try:
        yield manager
    finally:
        await manager.close()


@pytest.fixture
def manager(store: Store) -> Iterator[SessionManager]:
    m = store.sync_manager()
    try:
        yield m
    finally:
        m.close()


@pytest.fixture
def sqlite_config(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    def make(**extra: Any) -> dict[str, Any]:
        return {"session": {"storage_path": str(tmp_path / "sessions"), **extra}}

    return make

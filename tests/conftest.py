"""Fixtures: every contract test runs against every backend, async and sync.

Backends (``tests/support.py``: ``BACKENDS``), each a parameter with its own mark, so
``pytest -m <mark>`` runs one backend's cases (plus the tests that use no backend fixture
only when they carry that mark):

- ``memory`` (mark ``memory``): the in-process repository;
- ``sqlite`` (mark ``sqlite``): the default backend (a real SQLite file, one-trip fast path);
- ``sqlite-core`` (marks ``sqlite`` and ``sqlite_core``): the same file format through the
  generic SQLAlchemy path that other databases (PostgreSQL later) use, so that path is
  proven on every run too; ``-m sqlite`` runs both SQLite paths, ``-m sqlite_core`` this one;
- ``custom`` (mark ``custom``): a user's own ``SessionStorage`` (``JsonDirStorage``: JSON
  files in a directory, written atomically) behind the library's adapter.

A test that the ``SessionStorage`` contract cannot pass on the custom backend carries
``@pytest.mark.not_on_custom("why")``: its ``custom`` case is skipped with that reason
(the README's Storage section lists these differences).

Shared helpers (``Store``, ``user``, ``strip_ts``, ...) live in ``tests/support.py``;
import them from there, not from this file.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from coda_session import AsyncSessionManager, SessionManager
from tests.support import (
    BACKENDS,
    PG_REQUIRED_VARIABLE,
    PG_URL_VARIABLE,
    Store,
    drop_pg_databases,
    postgres_url,
)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(PG_REQUIRED_VARIABLE) and postgres_url() is None:
        raise pytest.UsageError(f"{PG_REQUIRED_VARIABLE} is set but {PG_URL_VARIABLE} is not")


@pytest.fixture(scope="session", autouse=True)
def _drop_postgres_databases() -> Iterator[None]:
    yield
    drop_pg_databases()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        mark = item.get_closest_marker("not_on_custom")
        callspec = getattr(item, "callspec", None)
        if mark is None or callspec is None or callspec.params.get("backend") != "custom":
            continue
        reason = mark.args[0] if mark.args else mark.kwargs.get("reason", "")
        if not reason:
            raise pytest.UsageError(f"{item.nodeid}: not_on_custom needs a reason")
        item.add_marker(pytest.mark.skip(reason=f"custom storage: {reason}"))


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

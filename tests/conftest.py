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
  files in a directory, written atomically) behind the library's adapter;
- ``postgresql`` (mark ``postgresql``): the server ``CODA_TEST_POSTGRES_URL`` names; when it
  is not set and PostgreSQL's server binaries are installed, a throwaway server the run
  starts itself (``scripts/pg-test-server``, once for all xdist workers, when a test first
  needs it) and stops and removes at its end; with neither, its cases skip and the run
  says in one line how to get the binaries.

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
    PG_AUTOSTART_VARIABLE,
    PG_HOW_TO_GET,
    PG_REQUIRED_VARIABLE,
    PG_URL_VARIABLE,
    Store,
    drop_pg_databases,
    pg_autostart,
    postgres_available,
    prepare_pg_autostart,
    stop_pg_autostart,
)

#: The run's own throwaway PostgreSQL server's directory, in the process that made it (the
#: xdist controller, or the one process of a run without workers): it stops it at the end.
_PG_RUN = pytest.StashKey[Path]()
#: What stopping it did, for the terminal summary.
_PG_STOPPED = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(PG_REQUIRED_VARIABLE) and not postgres_available():
        raise pytest.UsageError(
            f"{PG_REQUIRED_VARIABLE} is set but {PG_URL_VARIABLE} is not, and no PostgreSQL "
            "server binaries are installed"
        )
    # made once, before xdist starts its workers (they inherit the variable and share the
    # server); a worker, or a run inside a test's subprocess that inherited it, makes none
    if (
        not hasattr(config, "workerinput")
        and not os.environ.get(PG_AUTOSTART_VARIABLE)
        and pg_autostart()
    ):
        config.stash[_PG_RUN] = prepare_pg_autostart()


def pytest_report_header(config: pytest.Config) -> str | None:
    if _PG_RUN in config.stash:
        return (
            f"postgresql: {PG_URL_VARIABLE} not set: a throwaway server (scripts/pg-test-server)"
            f" starts in {config.stash[_PG_RUN]} when a test first needs it, and is stopped"
            " and removed at the end"
        )
    return None


def _stop_pg_run(config: pytest.Config) -> None:
    run = config.stash.get(_PG_RUN, None)
    if run is not None:
        del config.stash[_PG_RUN]
        os.environ.pop(PG_AUTOSTART_VARIABLE, None)
        config.stash[_PG_STOPPED] = stop_pg_autostart(run)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    _stop_pg_run(session.config)  # every test (and xdist worker) is done by now


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    said = config.stash.get(_PG_STOPPED, None)
    if said:
        terminalreporter.write_line(said)
    elif said is None and not hasattr(config, "workerinput") and not postgres_available():
        # the one line a run whose postgresql cases all skipped needs
        terminalreporter.write_line(f"postgresql tests skipped: {PG_HOW_TO_GET}")


def pytest_unconfigure(config: pytest.Config) -> None:
    _stop_pg_run(config)  # a run that ended before its session did (a usage error)


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

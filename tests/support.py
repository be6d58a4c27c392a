"""Helpers shared by the test files (conftest.py only defines fixtures).

``BACKENDS`` are the storage backends every ``store``/``backend``-parametrized test runs on,
each a ``pytest.param`` with its marks (``-m memory``, ``-m sqlite``, ``-m sqlite_core``,
``-m custom``); ``Store`` opens managers on one of them; ``JsonDirStorage`` is the
``custom`` backend: a user-style :class:`~coda_session.SessionStorage` of JSON files.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from coda_session import (
    AsyncSessionManager,
    SessionConfig,
    SessionData,
    SessionInfo,
    SessionManager,
    SessionStorage,
)
from coda_session.repository import Repository, open_repository
from coda_session.repository.memory import MemoryRepository
from coda_session.repository.sql import SqlRepository

ROOT = Path(__file__).resolve().parent.parent
"""The project's root (where alembic.ini is)."""

SPEC_SCHEMA = """
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    created_at TIMESTAMP,
    updated_at TIMESTAMP,
    metadata JSON
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    session_id TEXT,
    role TEXT,
    content TEXT,
    timestamp TIMESTAMP,
    metadata JSON,
    FOREIGN KEY (session_id) REFERENCES sessions(id)
);
"""
"""The specification's "Database Schema" DDL, exactly (SQLite and PostgreSQL run it as is)."""

PG_URL_VARIABLE = "CODA_TEST_POSTGRES_URL"
"""The environment variable with a PostgreSQL server's URL (``postgresql+asyncpg://user:
password@host:port/dbname``, a role that may create databases): set it, e.g. with
``eval "$(scripts/pg-test-server start)"``, and the ``postgresql`` backend runs."""
PG_REQUIRED_VARIABLE = "CODA_TEST_REQUIRE_POSTGRES"
"""Set (to 1) where PostgreSQL must run, not skip (CI): without a server the run fails."""
PG_THROWAWAY_VARIABLE = "CODA_TEST_POSTGRES_THROWAWAY"
"""Set (to 1) when the server is thrown away after the run (scripts/pg-test-server's is):
the databases the tests made are then left to go with it instead of dropped one by one."""
PG_AUTOSTART_VARIABLE = "CODA_TEST_PG_AUTOSTART"
"""Set by the test run itself (tests/conftest.py) when no server is configured but the
server binaries are installed: the directory of the run's throwaway server, which the first
test needing it starts (scripts/pg-test-server) and the run stops and removes at its end.
pytest-xdist's workers inherit it, so they share one server."""
PG_SCRIPT = ROOT / "scripts" / "pg-test-server"
PG_HOW_TO_GET = (
    "install PostgreSQL's server (apt-get install postgresql) and the run starts a "
    f'throwaway one itself, or set {PG_URL_VARIABLE} (eval "$(scripts/pg-test-server '
    'start)")'
)
PG_SKIP_REASON = f"no PostgreSQL server configured nor installed: {PG_HOW_TO_GET}"


def pg_bindir() -> str | None:
    """Where PostgreSQL's server binaries are, as scripts/pg-test-server finds them (None:
    not installed, or no script: an sdist)."""
    if not PG_SCRIPT.is_file():
        return None
    found = subprocess.run(
        [str(PG_SCRIPT), "bindir"], capture_output=True, text=True, timeout=60, check=False
    )
    return (found.stdout.strip() or None) if found.returncode == 0 else None


def pg_autostart() -> bool:
    """Whether this run starts a throwaway server of its own (none is configured, the
    binaries are installed)."""
    return not os.environ.get(PG_URL_VARIABLE) and pg_bindir() is not None


def _autostarted_url() -> str:
    """The URL of the run's throwaway server, started by the first process asking (under a
    lock in its directory: xdist's workers ask at the same time)."""
    import fcntl

    run = Path(os.environ[PG_AUTOSTART_VARIABLE])
    with open(run / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        failed, url_file = run / "failed", run / "url"
        if failed.exists():
            pytest.fail(failed.read_text(), pytrace=False)
        if not url_file.exists():
            started = _pg_script("start", run)
            if started.returncode != 0:
                failed.write_text(
                    f"scripts/pg-test-server could not start a throwaway server in {run}: "
                    f"{started.stderr.strip()}"
                )
                pytest.fail(failed.read_text(), pytrace=False)
            url_file.write_text(started.stdout.split(f"{PG_URL_VARIABLE}='", 1)[1].split("'")[0])
            with open(run / "starts", "a") as starts:
                starts.write(f"{os.getpid()}\n")
        with open(run / "users", "a") as users:
            users.write(f"{os.getpid()}\n")
        url = url_file.read_text()
    # this process's later tests, and the programs they start, use it as a configured one
    os.environ[PG_URL_VARIABLE] = url
    os.environ[PG_THROWAWAY_VARIABLE] = "1"
    return url


_PG_RUN_PREFIX = "coda-test-pg-"


def _pg_script(command: str, run: Path) -> subprocess.CompletedProcess[str]:
    """``scripts/pg-test-server <command>`` on the server of the run in ``run``."""
    return subprocess.run(
        [str(PG_SCRIPT), command],
        env={**os.environ, "CODA_PG_DIR": str(run / "server")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _stop_orphans() -> None:
    """Stop the servers of earlier runs that were killed before they could (their
    controller process is gone)."""
    for run in Path(tempfile.gettempdir()).glob(f"{_PG_RUN_PREFIX}*"):
        try:
            if run.is_symlink() or run.stat().st_uid != os.getuid():
                continue
            os.kill(int((run / "controller").read_text()), 0)
        except ProcessLookupError:
            stop_pg_autostart(run)
        except (OSError, ValueError):
            continue  # alive, someone else's, or not one of ours: left alone


def prepare_pg_autostart() -> Path:
    """The directory of this run's throwaway server (not started yet: the first test
    needing it starts it), named in the environment for the processes the run starts."""
    _stop_orphans()
    run = Path(tempfile.mkdtemp(prefix=_PG_RUN_PREFIX))
    run.chmod(0o711)  # as root, the server runs as `postgres`, which must reach its data
    (run / "controller").write_text(str(os.getpid()))
    os.environ[PG_AUTOSTART_VARIABLE] = str(run)
    return run


def stop_pg_autostart(run: Path) -> str:
    """Stop the run's throwaway server (if it was started) and remove its directory;
    returns what happened, in a line."""
    starts = (run / "starts").read_text().split() if (run / "starts").exists() else []
    users = set((run / "users").read_text().split()) if (run / "users").exists() else set()
    said = ""
    if (run / "server").exists():  # started, or its start was cut short
        stopped = _pg_script("stop", run)
        if stopped.returncode != 0:
            return f"could not stop the throwaway server in {run}: {stopped.stderr.strip()}"
        said = f"started {len(starts)} time(s), used by {len(users)} process(es), stopped"
    shutil.rmtree(run, ignore_errors=True)
    return (
        f"postgresql: the run's throwaway server in {run}: {said}; directory removed"
        if said
        else ""
    )


def postgres_url() -> str | None:
    """The test server's URL, or None when none is configured (nor started by the run)."""
    url = os.environ.get(PG_URL_VARIABLE)
    if url:
        return url
    if os.environ.get(PG_AUTOSTART_VARIABLE):
        return _autostarted_url()
    return None


def postgres_available() -> bool:
    """Whether the postgresql backend runs: a server is configured, or this run starts one."""
    return bool(os.environ.get(PG_URL_VARIABLE)) or pg_autostart()


BACKEND_NAMES = ["memory", "sqlite", "sqlite-core", "custom", "postgresql"]
BACKENDS = [
    pytest.param("memory", marks=pytest.mark.memory, id="memory"),
    pytest.param("sqlite", marks=pytest.mark.sqlite, id="sqlite"),
    pytest.param(
        "sqlite-core", marks=[pytest.mark.sqlite, pytest.mark.sqlite_core], id="sqlite-core"
    ),
    pytest.param("custom", marks=pytest.mark.custom, id="custom"),
    pytest.param(
        "postgresql",
        marks=[
            pytest.mark.postgresql,
            pytest.mark.skipif(not postgres_available(), reason=PG_SKIP_REASON),
        ],
        id="postgresql",
    ),
]
"""Every backend, as parameters carrying their marks (for ``pytest.mark.parametrize``)."""

SQL_BACKENDS = [p for p in BACKENDS if p.id in ("sqlite", "sqlite-core", "postgresql")]
"""The backends on a SQL database."""


def in_thread(coro_fn: Any) -> None:
    """``asyncio.run(coro_fn())`` in a thread of its own (the caller may be inside a
    running event loop); its exception is raised here."""
    import asyncio
    import threading

    failed: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coro_fn())
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


class PgServer:
    """Fresh databases on the test server: each a copy of a template migrated to the
    newest schema once per run (``CREATE DATABASE ... TEMPLATE``, ~60 ms), or empty.
    Every database made is dropped by :meth:`drop_all` at the end of the run."""

    def __init__(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        self.url = make_url(url)
        self._made: list[str] = []
        self._template: str | None = None
        self._prefix = f"coda_t{os.getpid()}_"

    def _admin(self, *statements: str) -> None:
        import asyncpg

        args = self.url.translate_connect_args(username="user")

        async def run() -> None:
            conn = await asyncpg.connect(**args, timeout=30)
            try:
                for statement in statements:
                    await conn.execute(statement)
            finally:
                await conn.close()

        in_thread(run)

    def url_of(self, database: str) -> str:
        return self.url.set(database=database).render_as_string(hide_password=False)

    def empty_database(self) -> str:
        """The URL of a new empty database (no tables)."""
        name = f"{self._prefix}{len(self._made)}_{uuid.uuid4().hex[:8]}"
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
        self._made.append(name)
        return self.url_of(name)

    def fresh_database(self) -> str:
        """The URL of a new database at the newest schema, with no sessions."""
        if self._template is None:
            url = self.empty_database()
            template = self._made[-1]

            async def migrate() -> None:
                repo = SqlRepository(SessionConfig(database_url=url))
                await repo.open()
                await repo.aclose()

            in_thread(migrate)
            self._template = template
        name = f"{self._prefix}{len(self._made)}_{uuid.uuid4().hex[:8]}"
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
        self._made.append(name)
        return self.url_of(name)

    def drop_all(self) -> None:
        made, self._made = self._made, []
        if os.environ.get(PG_THROWAWAY_VARIABLE):
            return  # the whole server goes when the run ends (dropping ~400 takes ~45 s)
        if made:
            self._admin(*(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in made))


_PG_SERVER: PgServer | None = None


def pg_server() -> PgServer:
    """The test run's :class:`PgServer` (skips the test when no server is configured)."""
    global _PG_SERVER
    url = postgres_url()
    if url is None:
        pytest.skip(PG_SKIP_REASON)
    if _PG_SERVER is None:
        _PG_SERVER = PgServer(url)
    return _PG_SERVER


def drop_pg_databases() -> None:
    """Drop every database the run made (the session fixture calls this at the end)."""
    if _PG_SERVER is not None:
        _PG_SERVER.drop_all()


class JsonDirStorage(SessionStorage):
    """A user's own storage, as the README's custom-storage section describes: one JSON
    file per session in a directory, each written atomically (a temporary file in the
    same directory, fsynced, then renamed over the old one). Every instance on the same
    directory sees what the others saved, so ``Store.reopen`` works as on SQLite."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _file(self, name: str) -> Path:
        # any name is allowed: the file name is its UTF-8 bytes in hex
        return self.directory / f"{name.encode('utf-8', 'surrogatepass').hex()}.json"

    def save(self, session: SessionData) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        document = {
            "id": session.id,
            "name": session.name,
            "created_at": session.created_at.isoformat(),
            "updated_at": session.updated_at.isoformat(),
            "metadata": session.metadata,
            "messages": session.get_messages(),
            "message_ids": session.message_ids,
            "message_timestamps": session.message_timestamps,
            "last_message_id": session.last_message_id,
            "root_id": session.root_id,
            "parent_id": session.parent_id,
            "fork_point": session.fork_point,
        }
        text = json.dumps(document, ensure_ascii=False)
        fd, temp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self._file(session.name))
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def _read(self, path: Path) -> SessionData:
        document = json.loads(path.read_text(encoding="utf-8", errors="surrogatepass"))
        document["created_at"] = datetime.fromisoformat(document["created_at"])
        document["updated_at"] = datetime.fromisoformat(document["updated_at"])
        return SessionData(**document)

    def load(self, name: str) -> SessionData | None:
        path = self._file(name)
        return self._read(path) if path.exists() else None

    def delete(self, name: str) -> None:
        self._file(name).unlink(missing_ok=True)

    def list_all(self) -> list[SessionInfo]:
        if not self.directory.exists():
            return []
        return [self._read(p).info() for p in sorted(self.directory.glob("*.json"))]


class DictStorage(SessionStorage):
    """A user's storage in a dict: it keeps deep copies of what it is given, counts the
    saves, and keeps the messages of the last one as given (``seen``)."""

    def __init__(self) -> None:
        self.data: dict[str, SessionData] = {}
        self.saves = 0
        self.seen: list[dict[str, Any]] = []

    def save(self, session: SessionData) -> None:
        self.saves += 1
        self.seen = session.get_messages()
        self.data[session.name] = session.model_copy(deep=True)

    def load(self, name: str) -> SessionData | None:
        found = self.data.get(name)
        return None if found is None else found.model_copy(deep=True)

    def delete(self, name: str) -> None:
        self.data.pop(name, None)

    def list_all(self) -> list[SessionInfo]:
        return [s.info() for s in self.data.values()]


class Store:
    """Opens managers on one backend's storage; a later manager sees what the earlier ones
    saved (for memory: the same in-process repository; for custom: the same directory)."""

    def __init__(self, backend: str, path: Path) -> None:
        self.backend = backend
        self.path = path
        self.url: str | None = None
        if backend == "postgresql":
            self.url = pg_server().fresh_database()
            self.config = SessionConfig.from_mapping({"session": {"database_url": self.url}})
        else:
            backend_key = "sqlite" if backend in ("sqlite", "sqlite-core") else "memory"
            self.config = SessionConfig.from_mapping(
                {"session": {"backend": backend_key, "storage_path": str(path)}}
            )
        self.memory = MemoryRepository() if backend == "memory" else None

    def repository(self, *, private_loop: bool = False) -> Repository | SessionStorage:
        """What a manager runs on: a repository, or (custom) the user's storage."""
        if self.memory is not None:
            return self.memory
        if self.backend == "custom":
            return JsonDirStorage(self.path)
        if self.backend == "sqlite-core":
            return SqlRepository(self.config, fast_path=False)
        if self.backend == "postgresql":
            return SqlRepository(self.config)
        return open_repository(self.config, private_loop=private_loop)

    def async_manager(self, **overrides: Any) -> AsyncSessionManager:
        config = self.config.model_copy(update=overrides) if overrides else self.config
        return AsyncSessionManager(config, self.repository())

    def sync_manager(self) -> SessionManager:
        return SessionManager(self.config, self.repository(private_loop=True))

    def execute(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one raw SQL statement on the store's database, outside the library (as
        another program would), and return its rows. ``?`` placeholders; on PostgreSQL
        they become ``$1``, ``$2``, ... For the SQL backends only."""
        if self.database is not None:
            conn = sqlite3.connect(self.database)
            try:
                with conn:
                    return [tuple(r) for r in conn.execute(sql, params).fetchall()]
            finally:
                conn.close()
        if self.url is None:
            raise TypeError(f"the {self.backend} backend has no database")
        pieces = sql.split("?")
        numbered = pieces[0] + "".join(f"${i}{p}" for i, p in enumerate(pieces[1:], 1))
        rows: list[tuple[Any, ...]] = []
        url = self.url

        async def run() -> None:
            import asyncpg
            from sqlalchemy.engine import make_url

            args = make_url(url).translate_connect_args(username="user")
            conn = await asyncpg.connect(**args, timeout=30)
            try:
                rows.extend(tuple(r) for r in await conn.fetch(numbered, *params))
            finally:
                await conn.close()

        in_thread(run)
        return rows

    @property
    def database(self) -> Path | None:
        """The SQLite file (None when the backend has none)."""
        return self.path / "sessions.db" if self.backend in ("sqlite", "sqlite-core") else None


def user(text: str) -> dict[str, str]:
    """A user message."""
    return {"role": "user", "content": text}


def strip_ts(messages: list[dict[str, object]]) -> list[dict[str, object]]:
    """The messages without their timestamps."""
    return [{k: v for k, v in m.items() if k != "timestamp"} for m in messages]


def db_of(config: dict[str, Any]) -> Path:
    """The SQLite file of a ``{"session": {"storage_path": ...}}`` config."""
    return Path(config["session"]["storage_path"]) / "sessions.db"


def alembic(*args: str, storage: Path) -> subprocess.CompletedProcess[str]:
    """The real ``alembic`` CLI, from the project root, on ``storage``."""
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"storage_path={storage}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


CROSS_WRITER = (
    "SessionStorage has no atomic read-modify-write across managers: two managers (or "
    "processes) on one store each save the whole session and the later save wins"
)
"""Why the tests of two managers writing one session do not run on the custom backend."""

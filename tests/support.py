"""Helpers shared by the test files (conftest.py only defines fixtures).

``BACKENDS`` are the storage backends every ``store``/``backend``-parametrized test runs on,
each a ``pytest.param`` with its marks (``-m memory``, ``-m sqlite``, ``-m sqlite_core``,
``-m custom``); ``Store`` opens managers on one of them; ``JsonDirStorage`` is the
``custom`` backend: a user-style :class:`~coda_session.SessionStorage` of JSON files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
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

BACKEND_NAMES = ["memory", "sqlite", "sqlite-core", "custom"]
BACKENDS = [
    pytest.param("memory", marks=pytest.mark.memory, id="memory"),
    pytest.param("sqlite", marks=pytest.mark.sqlite, id="sqlite"),
    pytest.param(
        "sqlite-core", marks=[pytest.mark.sqlite, pytest.mark.sqlite_core], id="sqlite-core"
    ),
    pytest.param("custom", marks=pytest.mark.custom, id="custom"),
]
"""Every backend, as parameters carrying their marks (for ``pytest.mark.parametrize``)."""


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
            "last_message_id": session.last_message_id,
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


class Store:
    """Opens managers on one backend's storage; a later manager sees what the earlier ones
    saved (for memory: the same in-process repository; for custom: the same directory)."""

    def __init__(self, backend: str, path: Path) -> None:
        self.backend = backend
        self.path = path
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
        return open_repository(self.config, private_loop=private_loop)

    def async_manager(self, **overrides: Any) -> AsyncSessionManager:
        config = self.config.model_copy(update=overrides) if overrides else self.config
        return AsyncSessionManager(config, self.repository())

    def sync_manager(self) -> SessionManager:
        return SessionManager(self.config, self.repository(private_loop=True))

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

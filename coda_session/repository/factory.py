"""The repository for a configuration: the one module that names every backend."""

from __future__ import annotations

from typing import Any

from ..config import SessionConfig
from ..errors import InvalidConfigError
from .custom import SessionStorage
from .memory import MemoryRepository
from .protocol import Repository
from .storage_adapter import StorageAdapter

__all__ = ["open_repository"]


def open_repository(
    config: SessionConfig, storage: Any = None, *, private_loop: bool = False
) -> Repository:
    """The repository for a configuration, or the one that serves ``storage``.

    ``storage`` is a :class:`~coda_session.SessionStorage` of the caller's, or a ready
    repository (one that inherits :class:`.Repository` or only has its methods).
    ``private_loop`` says the caller's event loop serves no one else (the blocking API's),
    so the SQLite backend may run its short transactions on it directly. The SQL backend
    is imported only here, so a memory-only program never loads it.
    """
    if storage is None:
        if config.backend == "memory":
            return MemoryRepository()
        from .sql import SqlRepository

        return SqlRepository(config, inline=private_loop)
    if isinstance(storage, SessionStorage):
        return StorageAdapter(storage)
    if isinstance(storage, Repository):
        return storage
    raise InvalidConfigError(
        f"storage must be a SessionStorage or a Repository, not {type(storage).__name__}"
    )

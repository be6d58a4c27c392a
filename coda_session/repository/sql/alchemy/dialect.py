"""A database the library has no dialect package for, run through SQLAlchemy alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from ....config import SessionConfig
from ..dialect import Failure, NoCosts, Runner
from .runner import AlchemyRunner

__all__ = ["GenericDialect"]


class GenericDialect:
    """A database the library has no error table for: nothing is retried, every failure
    is a plain StorageError; operations run through SQLAlchemy's engine."""

    costs = NoCosts()

    def __init__(self, name: str) -> None:
        self.name = name

    def classify(self, exc: BaseException) -> Failure:
        return Failure.OTHER

    def retryable(self, failure: Failure) -> bool:
        return False

    def database_file(self, url: URL) -> Path | None:
        return None

    def engine_options(
        self, config: SessionConfig, url: URL, *, migrations: bool
    ) -> dict[str, Any]:
        return {"pool_size": config.connection_pool_size}

    def prepare_engine(self, engine: AsyncEngine) -> None:
        return None

    async def open_runner(
        self,
        config: SessionConfig,
        url: URL,
        make_engine: Callable[[], AsyncEngine],
        *,
        fast_path: bool | None,
        inline: bool,
    ) -> Runner:
        return AlchemyRunner(make_engine)

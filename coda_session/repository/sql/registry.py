"""Which dialect serves a database: the one place a backend's name is looked up.

Each dialect package is imported only when a URL names its database (asyncpg, for one,
loads only for PostgreSQL).
"""

from __future__ import annotations

from .dialect import Dialect

__all__ = ["dialect_for"]


def dialect_for(backend_name: str) -> Dialect:
    """The dialect for a SQLAlchemy backend name (``url.get_backend_name()``)."""
    if backend_name == "sqlite":
        from .sqlite import SQLITE

        return SQLITE
    if backend_name == "postgresql":
        from .postgresql import POSTGRESQL

        return POSTGRESQL
    from .alchemy import GenericDialect

    return GenericDialect(backend_name)

"""Everything specific to PostgreSQL: SQLSTATE rules, server settings, the pool and runner
on asyncpg connections of the library's own, their executor and greenlet bridge, and the
operations it does in one statement (with their statements). asyncpg is imported only
when the runner is opened. Imports no other dialect package (the generic SQLAlchemy path
of :mod:`..alchemy` is what it runs on with ``fast_path=False``)."""

from .dialect import POSTGRESQL, PostgresDialect

__all__ = ["POSTGRESQL", "PostgresDialect"]

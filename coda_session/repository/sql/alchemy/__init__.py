"""The generic SQLAlchemy path: any database through SQLAlchemy's async engine.

The runner and executor here serve every dialect that has no faster way (and SQLite and
PostgreSQL with ``fast_path=False``); :class:`GenericDialect` is the dialect of a database
the library has no package for. Imports no other dialect package.
"""

from .dialect import GenericDialect
from .runner import AlchemyRunner, write_option

__all__ = ["AlchemyRunner", "GenericDialect", "write_option"]

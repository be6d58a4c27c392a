"""The generic SQLAlchemy path: any database through SQLAlchemy's async engine.

The runner and executor here serve every dialect that has no faster way (and SQLite and
PostgreSQL with ``fast_path=False``); :class:`AlchemyDialect` is the base every dialect
builds on, :class:`GenericDialect` the dialect of a database the library has no package
for. Imports no other dialect package.
"""

from .dialect import AlchemyDialect, GenericDialect
from .runner import AlchemyRunner

__all__ = ["AlchemyDialect", "AlchemyRunner", "GenericDialect"]

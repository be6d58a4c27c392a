"""Everything specific to SQLite: its error codes, its connections and PRAGMAs (written
once for both drivers), its runner with its modes and cost model, the worker threads and
the executor on ``sqlite3``. Imports no other dialect package (the generic SQLAlchemy path
of :mod:`..alchemy` is what it falls back on)."""

from .dialect import SQLITE, SqliteDialect

__all__ = ["SQLITE", "SqliteDialect"]

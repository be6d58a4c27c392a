"""The SQL backend: SQLAlchemy 2 models and an async repository (SQLite by default)."""

from .repository import SqlRepository

__all__ = ["SqlRepository"]

"""The SQL backend: SQLAlchemy 2 models and an async repository (SQLite by default)."""

from .repository import SqlRepository
from .tables import Base

__all__ = ["SqlRepository", "metadata"]

#: The schema's ``MetaData`` (every table), which ``migrations/env.py`` hands Alembic as
#: ``target_metadata``. Held here, in the package, because tools that check that every
#: model reaches it (pytest-alembic's ``all_models_register_on_metadata``) find the
#: package whose namespace refers to it and import everything below that package.
metadata = Base.metadata

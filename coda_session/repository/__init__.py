"""Storage backends behind one protocol.

Importing this package loads no backend: the SQL one (and its drivers) is imported only
when a configuration asks for it.
"""

from .protocol import Repository, open_repository

__all__ = ["Repository", "open_repository"]

"""Storage backends behind one protocol.

Importing this package loads no SQL backend: it (and its drivers) is imported only when a
configuration asks for it (:func:`open_repository`).
"""

from .factory import open_repository
from .protocol import Repository

__all__ = ["Repository", "open_repository"]

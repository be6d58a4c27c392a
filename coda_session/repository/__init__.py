"""Storage backends behind one protocol."""

from .memory import MemoryRepository
from .protocol import Repository, SaveRequest, SaveResult, Truncation

__all__ = ["MemoryRepository", "Repository", "SaveRequest", "SaveResult", "Truncation"]

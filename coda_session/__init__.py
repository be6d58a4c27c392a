"""coda_session: store, resume and branch the conversations of LLM agents."""

from .config import SessionConfig
from .errors import (
    DamagedDataError,
    ExportFileExistsError,
    FileFormatError,
    ImportFileNotFoundError,
    InvalidConfigError,
    InvalidCursorError,
    InvalidMessageError,
    InvalidQueryError,
    ManagerClosedError,
    ReadOnlyError,
    SchemaVersionError,
    SessionError,
    SessionExistsError,
    SessionNotFoundError,
    SessionTooLargeError,
    StorageError,
    UnsavedChangesWarning,
)
from .manager import AsyncSessionManager
from .models import Message, MessageEntry, MessageInput, MessageModel, SessionInfo, SessionList
from .repository.custom import SessionData, SessionStorage
from .repository.searching import SearchIndexReport
from .search.results import SearchHit, SearchResult, SessionRef
from .search.snippet import Snippet
from .session import AsyncSession
from .sync import Session, SessionManager

__version__ = "0.1.0"

__all__ = [
    "AsyncSession",
    "AsyncSessionManager",
    "DamagedDataError",
    "ExportFileExistsError",
    "FileFormatError",
    "ImportFileNotFoundError",
    "InvalidConfigError",
    "InvalidCursorError",
    "InvalidMessageError",
    "InvalidQueryError",
    "ManagerClosedError",
    "Message",
    "MessageEntry",
    "MessageInput",
    "MessageModel",
    "ReadOnlyError",
    "SchemaVersionError",
    "SearchHit",
    "SearchIndexReport",
    "SearchResult",
    "Session",
    "SessionConfig",
    "SessionData",
    "SessionError",
    "SessionExistsError",
    "SessionInfo",
    "SessionList",
    "SessionManager",
    "SessionNotFoundError",
    "SessionRef",
    "SessionStorage",
    "SessionTooLargeError",
    "Snippet",
    "StorageError",
    "UnsavedChangesWarning",
    "__version__",
]

"""The exceptions coda_session raises: one root, a shallow tree.

::

    SessionError                      base of everything the library raises
    ├── SessionNotFoundError          (also LookupError) no session of that name or id
    ├── SessionExistsError            a session of that name exists already
    ├── InvalidMessageError           (also ValueError) a message, name or metadata rejected
    ├── InvalidConfigError            (also ValueError) a configuration key rejected
    ├── InvalidQueryError             (also ValueError) a search or listing argument rejected
    ├── InvalidCursorError            (also ValueError) a paging cursor is bad or another query's
    ├── SessionTooLargeError          a save or add would take a session past max_session_size
    ├── FileFormatError               (also ValueError) an import file is malformed or truncated
    ├── ImportFileNotFoundError       (also FileNotFoundError) no file to import at that path
    ├── ExportFileExistsError         (also FileExistsError) an export would replace a file
    ├── ManagerClosedError            the manager was closed
    ├── ReadOnlyError                 (also TypeError) session.metadata was changed in place
    └── StorageError                  the storage failed (I/O, locking, corruption)
        ├── SchemaVersionError        the database schema is unknown or newer than this library
        └── DamagedDataError          a stored row cannot be decoded (names session and message)

And one warning: :class:`UnsavedChangesWarning` (a ``UserWarning``, shown by default)
names the sessions whose unsaved changes were dropped (a manager closed with autosave
off, or never closed).

Input errors are raised before anything is written. Errors of the database driver and of
SQLAlchemy never reach the caller as such: they are translated into :class:`StorageError`
(chained, so ``__cause__`` keeps the original).
"""

from __future__ import annotations

__all__ = [
    "DamagedDataError",
    "ExportFileExistsError",
    "FileFormatError",
    "ImportFileNotFoundError",
    "InvalidConfigError",
    "InvalidCursorError",
    "InvalidMessageError",
    "InvalidQueryError",
    "ManagerClosedError",
    "ReadOnlyError",
    "SchemaVersionError",
    "SessionError",
    "SessionExistsError",
    "SessionNotFoundError",
    "SessionTooLargeError",
    "StorageError",
    "UnsavedChangesWarning",
]


class SessionError(Exception):
    """Base class of every error raised by coda_session."""


class SessionNotFoundError(SessionError, LookupError):
    """No session with the given name or id exists."""


class SessionExistsError(SessionError):
    """A session with the given name exists already."""


class InvalidMessageError(SessionError, ValueError):
    """A message, session name or metadata value was rejected; nothing was written."""


class InvalidConfigError(SessionError, ValueError):
    """A configuration value was rejected. The message names the offending key."""


class SessionTooLargeError(SessionError):
    """A save or add would take a session past ``max_session_size``; nothing was written.

    ``name``, ``size`` (bytes the session would take) and ``limit`` (bytes) say which and
    by how much.
    """

    def __init__(self, name: str, size: int, limit: int) -> None:
        self.name, self.size, self.limit = name, size, limit
        super().__init__(
            f"session {name!r} would take {size:,} bytes, over its max_session_size of "
            f"{limit:,} bytes ({limit / 1_000_000:g} MB); nothing was written"
        )


class FileFormatError(SessionError, ValueError):
    """An import file is malformed, truncated or of an unknown format version; the message
    names the file and line. Nothing was written."""


class _FileError(SessionError, OSError):
    """An OSError of the library: built as ``OSError(errno, message, path)`` (so ``errno``
    and ``filename`` are set, and it pickles), shown as its message alone."""

    def __str__(self) -> str:
        return str(self.strerror)


class ImportFileNotFoundError(_FileError, FileNotFoundError):
    """The file to import does not exist; ``filename`` is its path. Nothing was written."""


class ExportFileExistsError(_FileError, FileExistsError):
    """An export's target file exists already (pass ``overwrite=True`` to replace it);
    ``filename`` is its path. Nothing was written."""


class InvalidCursorError(SessionError, ValueError):
    """A paging cursor (``search`` or ``list_sessions``) is malformed, from another version,
    or was made for another query or other filters than the call it is passed to."""


class InvalidQueryError(SessionError, ValueError):
    """A search or listing argument other than the query string is rejected (a bad
    ``order``, a ``limit`` below 1, a filter of the wrong type). Any query *string* is
    valid and never raises this."""


class ManagerClosedError(SessionError):
    """The session manager was closed and cannot be used any more."""


class ReadOnlyError(SessionError, TypeError):
    """A read-only view was changed in place: ``session.metadata`` is a snapshot, and
    ``session.update_metadata({...})`` is how metadata changes (written by the next save)."""


class UnsavedChangesWarning(UserWarning):
    """Unsaved changes of the named sessions were dropped: the manager was closed with
    ``autosave_interval = 0`` (close saves nothing then), or it was never closed and its
    changes could not be flushed. Save first (``save_session``), or call
    ``discard_changes()`` on a session to drop its changes on purpose, without a warning."""


class StorageError(SessionError):
    """The storage backend failed: I/O error, lock timeout, corrupt or unreadable database."""


class SchemaVersionError(StorageError):
    """The database schema is newer than (or unknown to) this version of coda_session."""


class DamagedDataError(StorageError):
    """A stored row cannot be decoded (damaged on disk, or written by other code): the
    message names the session and the message id. Other rows stay readable."""

"""The file side of a transfer: a target written privately and renamed into place, a
source opened as UTF-8 text, and a reader pulled a page at a time from a worker thread."""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import stat
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

import anyio

from ..errors import ExportFileExistsError, FileFormatError, ImportFileNotFoundError, StorageError
from ..models import MessageRecord
from .format import Event

__all__ = [
    "PAGE",
    "Puller",
    "Sink",
    "Source",
    "Spool",
    "Target",
    "export_format",
    "open_source",
    "remove_stale_temps",
]

PAGE = 1000  # messages per read, write and insert: what bounds memory
Target = str | os.PathLike[str] | IO[str]
Source = str | os.PathLike[str] | IO[str]


TEMP_PREFIX = ".coda-export-"
#: A temp file of an exporter that names no process (earlier versions' names), or whose
#: process is alive but has not written for this long, is stale.
STALE_AFTER = 3600.0
STALE_AFTER_LIVE = 24 * 3600.0


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return True  # cannot tell: keep the file
    return True


def remove_stale_temps(directory: Path) -> None:
    """Remove the temp files exporters killed midway left in ``directory``.

    A temp file is named ``.coda-export-<pid>-<random>``: it is stale when that process
    is gone (or has not written to it for a day); one without a pid, when it has not been
    written to for an hour. Only regular files of this user are removed; any error just
    leaves the file (this is tidying, never a reason for an export to fail).
    """
    try:
        names = [n for n in os.listdir(directory) if n.startswith(TEMP_PREFIX)]
    except OSError:
        return
    now = time.time()
    for name in names:
        path = directory / name
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
                continue
            age = now - info.st_mtime
            pid_text = name[len(TEMP_PREFIX) :].split("-", 1)[0]
            if pid_text.isdigit() and "-" in name[len(TEMP_PREFIX) :]:
                stale = not _alive(int(pid_text)) or age > STALE_AFTER_LIVE
            else:
                stale = age > STALE_AFTER
            if stale:
                os.unlink(path)
        except OSError:
            continue


def export_format(target: Target, fmt: str | None) -> str:
    """The format an export writes: ``fmt`` when given, else the one a path's extension
    names (``.json``: JSON; anything else, ``.jsonl`` included, and a stream: JSON Lines)."""
    if fmt is not None:
        return fmt
    if isinstance(target, str | os.PathLike) and Path(target).suffix.lower() == ".json":
        return "json"
    return "jsonl"


def _cannot_write(path: Path, exc: OSError) -> StorageError:
    """The error of an export whose target cannot be written: names the target (never the
    temporary file beside it) and what to do."""
    parent = path.parent
    if not parent.is_dir():
        return StorageError(
            f"cannot export to {path}: the directory {parent} does not exist; create it "
            "first (or name a file in an existing directory)"
        )
    if isinstance(exc, PermissionError):
        return StorageError(
            f"cannot export to {path}: this user may not write in {parent}; choose another "
            "directory or change its permissions"
        )
    return StorageError(f"cannot export to {path}: {exc.strerror or exc}")


def _exists(path: Path) -> ExportFileExistsError:
    return ExportFileExistsError(
        errno.EEXIST,
        f"cannot export to {path}: the file exists; pass overwrite=True to replace it, or "
        "name another file",
        str(path),
    )


class Sink:
    """A text target; a path is written to a private temp file renamed into place at the
    end, so a failed export never leaves a partial file behind (and one a killed exporter
    left is removed by the next export to that directory: :func:`remove_stale_temps`).

    An existing file is replaced only with ``overwrite``; without it, one that appears
    while the export runs is kept too (the temp file is linked into place, which fails
    if the name is taken)."""

    def __init__(self, target: Target, overwrite: bool = False) -> None:
        self._path: Path | None = None
        self._tmp: str | None = None
        self._overwrite = overwrite
        if isinstance(target, str | os.PathLike):
            self._path = Path(target).expanduser()
            if self._path.is_dir():
                raise StorageError(f"cannot export to {self._path}: it is a directory; name a file")
            if not overwrite and os.path.lexists(self._path):
                raise _exists(self._path)
            remove_stale_temps(self._path.parent)
            try:
                fd, self._tmp = tempfile.mkstemp(
                    prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=self._path.parent
                )
            except OSError as exc:
                raise _cannot_write(self._path, exc) from exc
            self.fh: IO[str] = os.fdopen(fd, "w", encoding="utf-8")  # mkstemp: mode 0600
        else:
            self.fh = target

    async def write(self, text: str) -> None:
        try:
            await anyio.to_thread.run_sync(self.fh.write, text)
        except OSError as exc:
            where = f" to {self._path}" if self._path is not None else ""
            raise StorageError(f"writing the export{where} failed: {exc}") from exc

    def _place(self, tmp: str, path: Path) -> None:
        if self._overwrite:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)  # fails if the name was taken meanwhile: never replaces
        except FileExistsError:
            raise _exists(path) from None
        except OSError:
            # a file system without hard links: check, then rename (a file created in
            # between would be replaced: the narrow window the link above closes)
            if os.path.lexists(path):
                raise _exists(path) from None
            os.replace(tmp, path)
            return
        with contextlib.suppress(OSError):  # exported; a temp left is tidied later
            os.unlink(tmp)

    async def finish(self, ok: bool) -> None:
        if self._path is None:
            await anyio.to_thread.run_sync(self.fh.flush)
            return
        assert self._tmp is not None
        await anyio.to_thread.run_sync(self.fh.close)
        if ok:
            try:
                self._place(self._tmp, self._path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(self._tmp)
                if isinstance(exc, ExportFileExistsError):
                    raise
                raise _cannot_write(self._path, exc) from exc
        else:
            os.unlink(self._tmp)


def open_source(source: Source) -> tuple[IO[str], str, Callable[[], None]]:
    """(the text stream, its name for messages, how to close it)."""
    if isinstance(source, str | os.PathLike):
        path = Path(source).expanduser()
        try:
            fh = open(path, encoding="utf-8")  # noqa: SIM115 - closed by the caller
        except FileNotFoundError:
            where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
            raise ImportFileNotFoundError(
                errno.ENOENT,
                f"cannot import {path}: no such file{where}; check the path",
                str(path),
            ) from None
        except IsADirectoryError:
            raise FileFormatError(
                f"cannot import {path}: it is a directory; name an exported file"
            ) from None
        except OSError as exc:
            raise FileFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
        return fh, str(path), fh.close
    return source, getattr(source, "name", "<stream>"), lambda: None


class Puller:
    """Pulls events from a reader in a worker thread, a page at a time.

    An error the reader raises while reading ahead is raised in its place in the stream,
    after the events read before it (so the sessions before a damaged line are imported,
    as import_store documents)."""

    def __init__(self, events: Iterator[Event]) -> None:
        self._events = events
        self._queue: deque[Event] = deque()
        self._done = False
        self._error: Exception | None = None

    def _fill(self) -> list[Event]:
        out = []
        try:
            for event in self._events:
                out.append(event)
                if len(out) >= PAGE:
                    break
        except Exception as exc:
            if not out:
                raise
            self._error = exc  # raised once the events before it are taken
        return out

    async def next(self) -> Event | None:
        if not self._queue and self._error is not None:
            error, self._error = self._error, None
            self._done = True
            raise error
        if not self._queue and not self._done:
            got = await anyio.to_thread.run_sync(self._fill)
            if not got:
                self._done = True
            self._queue.extend(got)
        return self._queue.popleft() if self._queue else None


class Spool(Iterable[Sequence[MessageRecord]]):
    """An import's validated messages, staged in a private temporary file (0600, already
    unlinked, so nothing is left behind on any path) a batch at a time, so memory stays
    bounded and storage is written only once the whole input is known to be good.

    Iterating reads the batches back from the start, every time (a storage may retry its
    transaction); one iteration at a time.
    """

    def __init__(self) -> None:
        try:
            self._fh = tempfile.TemporaryFile(prefix=".coda-import-")  # noqa: SIM115
        except OSError as exc:
            raise StorageError(f"cannot stage the import in a temporary file: {exc}") from exc
        self._batches = 0
        self.count = 0
        self.size = 0

    def add(self, batch: Sequence[MessageRecord]) -> None:
        """Append one batch (blocking I/O: call it from a worker thread)."""
        try:
            pickle.dump(list(batch), self._fh, protocol=pickle.HIGHEST_PROTOCOL)
        except OSError as exc:
            raise StorageError(f"cannot stage the import in a temporary file: {exc}") from exc
        self._batches += 1
        self.count += len(batch)
        self.size += sum(r.byte_size() for r in batch)

    def __iter__(self) -> Iterator[Sequence[MessageRecord]]:
        self._fh.flush()
        self._fh.seek(0)
        for _ in range(self._batches):
            batch: list[MessageRecord] = pickle.load(self._fh)
            yield batch

    def close(self) -> None:
        self._fh.close()

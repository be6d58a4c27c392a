"""The file side of a transfer: a target written privately and renamed into place, a
source opened as UTF-8 text, and a reader pulled a page at a time from a worker thread."""

from __future__ import annotations

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

from ..errors import FileFormatError, StorageError
from ..models import MessageRecord
from .format import Event

__all__ = [
    "PAGE",
    "Puller",
    "Sink",
    "Source",
    "Spool",
    "Target",
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


class Sink:
    """A text target; a path is written to a private temp file renamed into place at the
    end, so a failed export never leaves a partial file behind (and one a killed exporter
    left is removed by the next export to that directory: :func:`remove_stale_temps`)."""

    def __init__(self, target: Target) -> None:
        self._path: Path | None = None
        self._tmp: str | None = None
        if isinstance(target, str | os.PathLike):
            self._path = Path(target).expanduser()
            remove_stale_temps(self._path.parent)
            try:
                fd, self._tmp = tempfile.mkstemp(
                    prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=self._path.parent
                )
            except OSError as exc:
                raise StorageError(f"cannot write the export {self._path}: {exc}") from exc
            self.fh: IO[str] = os.fdopen(fd, "w", encoding="utf-8")  # mkstemp: mode 0600
        else:
            self.fh = target

    async def write(self, text: str) -> None:
        try:
            await anyio.to_thread.run_sync(self.fh.write, text)
        except OSError as exc:
            raise StorageError(f"writing the export failed: {exc}") from exc

    async def finish(self, ok: bool) -> None:
        if self._path is None:
            await anyio.to_thread.run_sync(self.fh.flush)
            return
        assert self._tmp is not None
        await anyio.to_thread.run_sync(self.fh.close)
        if ok:
            try:
                os.replace(self._tmp, self._path)
            except OSError as exc:
                os.unlink(self._tmp)
                raise StorageError(f"cannot write the export {self._path}: {exc}") from exc
        else:
            os.unlink(self._tmp)


def open_source(source: Source) -> tuple[IO[str], str, Callable[[], None]]:
    """(the text stream, its name for messages, how to close it)."""
    if isinstance(source, str | os.PathLike):
        path = Path(source).expanduser()
        try:
            fh = open(path, encoding="utf-8")  # noqa: SIM115 - closed by the caller
        except OSError as exc:
            raise FileFormatError(f"cannot read {path}: {exc}") from exc
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

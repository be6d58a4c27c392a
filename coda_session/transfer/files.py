"""The file side of a transfer: a target written privately and renamed into place, a
source opened as UTF-8 text, and a reader pulled a page at a time from a worker thread."""

from __future__ import annotations

import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import anyio

from ..errors import FileFormatError, StorageError
from .format import Event

__all__ = ["PAGE", "Puller", "Sink", "Source", "Target", "open_source"]

PAGE = 1000  # messages per read, write and insert: what bounds memory
Target = str | os.PathLike[str] | IO[str]
Source = str | os.PathLike[str] | IO[str]


class Sink:
    """A text target; a path is written to a private temp file renamed into place at the
    end, so a failed export never leaves a partial file behind."""

    def __init__(self, target: Target) -> None:
        self._path: Path | None = None
        self._tmp: str | None = None
        if isinstance(target, str | os.PathLike):
            self._path = Path(target).expanduser()
            try:
                fd, self._tmp = tempfile.mkstemp(prefix=".coda-export-", dir=self._path.parent)
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
    """Pulls events from a reader in a worker thread, a page at a time."""

    def __init__(self, events: Iterator[Event]) -> None:
        self._events = events
        self._queue: deque[Event] = deque()
        self._done = False

    def _fill(self) -> list[Event]:
        out = []
        for event in self._events:
            out.append(event)
            if len(out) >= PAGE:
                break
        return out

    async def next(self) -> Event | None:
        if not self._queue and not self._done:
            got = await anyio.to_thread.run_sync(self._fill)
            if not got:
                self._done = True
            self._queue.extend(got)
        return self._queue.popleft() if self._queue else None

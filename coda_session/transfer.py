"""Export and import of sessions as JSON Lines or JSON, streamed in both directions.

Format (version 1). JSON Lines, one session::

    {"coda_session": 1, "kind": "session", "id": ..., "name": ..., "created_at": ...,
     "updated_at": ..., "metadata": {...}}
    {"role": "user", "content": "Hello!", "timestamp": "...", ...}     one line per message
    {"coda_session": 1, "kind": "end", "message_count": 2}

A whole store is one JSON Lines stream: ``{"coda_session": 1, "kind": "store"}`` and then
one such block per session. JSON, one session: the same header fields and the messages in
one object, ``{"coda_session": 1, "kind": "session", ..., "messages": [...],
"message_count": 2}`` (one message per line, so it streams too). Any JSON object with a
``"messages"`` list (and optional ``"metadata"``) imports as well, e.g. the spec's
hand-written export, given a ``name``.

The end line (``message_count`` after the messages in JSON) proves the file is whole:
a truncated or malformed file raises :class:`FileFormatError` naming the line, and an
import writes nothing unless the whole session is valid (one transaction).
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio

from .codec import check_name, encode_message, encode_metadata
from .errors import FileFormatError, InvalidMessageError, SessionNotFoundError, StorageError
from .models import MessageRecord, SessionRecord, utcnow
from .repository.sql.tables import from_db_timestamp

if TYPE_CHECKING:
    from .manager import AsyncSessionManager
    from .session import AsyncSession

__all__ = ["FORMAT_VERSION", "Source", "Target"]

FORMAT_VERSION = 1
PAGE = 1000  # messages per read, write and insert: what bounds memory
Target = str | os.PathLike[str] | IO[str]
Source = str | os.PathLike[str] | IO[str]

Event = tuple[str, Any, int]  # ("session" | "message" | "end", payload, line)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# -- writing -------------------------------------------------------------------------------


class _Sink:
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


def _header(record: SessionRecord) -> dict[str, Any]:
    return {
        "coda_session": FORMAT_VERSION,
        "kind": "session",
        "id": record.id,
        "name": record.name,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "metadata": record.metadata,
    }


async def _pages(manager: AsyncSessionManager, record: SessionRecord) -> AsyncIterator[list[str]]:
    after = 0
    while True:
        page = await manager._repository.read_page(
            record.id, after_id=after, upto_id=record.last_message_id, limit=PAGE
        )
        if not page:
            return
        after = page[-1].id or after
        yield [_dumps(r.to_dict()) for r in page]


async def _write_session(
    manager: AsyncSessionManager, record: SessionRecord, sink: _Sink, fmt: str
) -> int:
    count = 0
    if fmt == "jsonl":
        await sink.write(_dumps(_header(record)) + "\n")
        async for lines in _pages(manager, record):
            count += len(lines)
            await sink.write("\n".join(lines) + "\n")
        end = {"coda_session": FORMAT_VERSION, "kind": "end", "message_count": count}
        await sink.write(_dumps(end) + "\n")
        return count
    head = _dumps(_header(record))
    await sink.write(head[:-1] + ',"messages":[')
    async for lines in _pages(manager, record):
        await sink.write(("," if count else "") + "\n" + ",\n".join(lines))
        count += len(lines)
    await sink.write(f'\n],"message_count":{count}}}\n')
    return count


async def export_session(
    manager: AsyncSessionManager, name: str, target: Target, fmt: str = "jsonl"
) -> int:
    if fmt not in ("jsonl", "json"):
        raise FileFormatError(f"unknown export format {fmt!r} (use 'jsonl' or 'json')")
    name = check_name(name)
    repo = await manager._ready()
    record = await repo.load_session(name=name)
    if record is None:
        raise SessionNotFoundError(f"no session with name {name!r}")
    sink = _Sink(target)
    ok = False
    try:
        count = await _write_session(manager, record, sink, fmt)
        ok = True
        return count
    finally:
        await sink.finish(ok)


async def export_store(manager: AsyncSessionManager, target: Target) -> int:
    repo = await manager._ready()
    sink = _Sink(target)
    ok = False
    try:
        await sink.write(_dumps({"coda_session": FORMAT_VERSION, "kind": "store"}) + "\n")
        infos = await repo.list_sessions()
        for info in infos:
            record = await repo.load_session(session_id=info.id)
            if record is not None:  # deleted meanwhile: nothing to export
                await _write_session(manager, record, sink, "jsonl")
        ok = True
        return len(infos)
    finally:
        await sink.finish(ok)


# -- reading -------------------------------------------------------------------------------


def _jsonl_events(fh: IO[str], where: str) -> Iterator[Event]:
    number = 0
    in_session = False
    for number, line in enumerate(fh, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FileFormatError(f"{where}: line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            raise FileFormatError(f"{where}: line {number}: expected a JSON object")
        # a message may carry any extra keys, "kind" included: control lines have no role
        kind = item.get("kind") if "coda_session" in item and "role" not in item else None
        if kind is not None and item.get("coda_session") != FORMAT_VERSION:
            raise FileFormatError(
                f"{where}: line {number}: format version {item.get('coda_session')!r} "
                f"is not one this library reads ({FORMAT_VERSION})"
            )
        if kind == "store" and not in_session:
            continue
        if kind == "session" and not in_session:
            in_session = True
            yield ("session", item, number)
        elif kind == "end" and in_session:
            in_session = False
            yield ("end", item, number)
        elif kind is None and in_session:
            yield ("message", item, number)
        else:
            what = "a message line" if kind is None else f"a {kind!r} line"
            raise FileFormatError(f"{where}: line {number}: {what} out of place")
    if in_session:
        raise FileFormatError(
            f"{where}: the file ends after line {number} inside a session without its end "
            "line: it is truncated"
        )


class _JsonStream:
    """Just enough of an incremental JSON reader to stream ``{..., "messages": [...]}``."""

    CHUNK = 1 << 16

    def __init__(self, fh: IO[str], where: str) -> None:
        self.fh, self.where = fh, where
        self.buf, self.pos, self.eof, self.lines = "", 0, False, 0
        self.decoder = json.JSONDecoder()

    def line(self) -> int:
        return self.lines + self.buf.count("\n", 0, self.pos) + 1

    def error(self, problem: str) -> FileFormatError:
        return FileFormatError(f"{self.where}: line {self.line()}: {problem}")

    def more(self) -> bool:
        if self.eof:
            return False
        chunk = self.fh.read(self.CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.lines += self.buf.count("\n", 0, self.pos)
        self.buf, self.pos = self.buf[self.pos :] + chunk, 0
        return True

    def peek(self) -> str:
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def take(self, char: str) -> None:
        found = self.peek()
        if found != char:
            shown = repr(found) if found else "the end of the file (truncated?)"
            raise self.error(f"expected {char!r}, found {shown}")
        self.pos += 1

    def value(self) -> Any:
        if not self.peek():
            raise self.error("unexpected end of the file (truncated?)")
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:
                    self.pos = end
                    return value
            except json.JSONDecodeError as exc:
                if self.eof:
                    if exc.pos >= len(self.buf.rstrip()):
                        raise self.error("the file ends inside a value: it is truncated") from None
                    raise self.error(f"not valid JSON ({exc.msg})") from None
            self.more()  # the value may go on in the next chunk


def _json_events(fh: IO[str], where: str) -> Iterator[Event]:
    stream = _JsonStream(fh, where)
    stream.take("{")
    header: dict[str, Any] = {}
    seen_messages = False
    count = 0
    if stream.peek() == "}":
        stream.pos += 1
    else:
        while True:
            key = stream.value()
            if not isinstance(key, str):
                raise stream.error("expected a key")
            stream.take(":")
            if key == "messages" and not seen_messages:
                seen_messages = True
                yield ("session", dict(header), stream.line())
                header = {}
                stream.take("[")
                if stream.peek() == "]":
                    stream.pos += 1
                else:
                    while True:
                        line = stream.line()
                        yield ("message", stream.value(), line)
                        count += 1
                        if stream.peek() == ",":
                            stream.pos += 1
                            continue
                        stream.take("]")
                        break
            else:
                header[key] = stream.value()
            if stream.peek() == ",":
                stream.pos += 1
                continue
            stream.take("}")
            break
    if stream.peek():
        raise stream.error("unexpected data after the JSON object")
    if not seen_messages:
        raise FileFormatError(f"{where}: the JSON object has no 'messages' list")
    header.setdefault("message_count", count)
    yield ("end", header, stream.line())


def _events(fh: IO[str], where: str, fmt: str | None) -> Iterator[Event]:
    if fmt is None:
        first = fh.readline()
        fmt = "json"
        try:
            head = json.loads(first)
            if (
                isinstance(head, dict)
                and head.get("kind") in ("session", "store")
                and ("coda_session" in head)
            ):
                fmt = "jsonl"
        except json.JSONDecodeError:
            pass
        try:
            fh.seek(0)
        except (OSError, ValueError) as exc:
            raise FileFormatError(
                f"{where}: cannot detect the format of a stream that cannot seek: pass format="
            ) from exc
    if fmt == "jsonl":
        return _jsonl_events(fh, where)
    if fmt == "json":
        return _json_events(fh, where)
    raise FileFormatError(f"unknown import format {fmt!r} (use 'jsonl' or 'json')")


def _guarded(events: Iterator[Event], where: str) -> Iterator[Event]:
    try:
        yield from events
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{where}: the file is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise FileFormatError(f"{where}: cannot read the file: {exc}") from exc


class _Puller:
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


def _when(value: Any, field: str, where: str, line: int) -> datetime:
    if value is None:
        return utcnow()
    try:
        return from_db_timestamp(value)
    except (TypeError, ValueError):
        raise FileFormatError(
            f"{where}: line {line}: {field} {value!r:.40} is not a date-time"
        ) from None


def _record(header: dict[str, Any], name: str | None, where: str, line: int) -> SessionRecord:
    chosen = name if name is not None else header.get("name")
    if chosen is None:
        raise FileFormatError(f"{where}: line {line}: the file names no session: pass name=")
    try:
        chosen = check_name(chosen)
        metadata = encode_metadata(header.get("metadata") or {})
    except InvalidMessageError as exc:
        raise FileFormatError(f"{where}: line {line}: {exc}") from exc
    created = _when(header.get("created_at"), "created_at", where, line)
    return SessionRecord(
        id=str(uuid.uuid4()),
        name=chosen,
        created_at=created,
        updated_at=_when(header.get("updated_at", created.isoformat()), "updated_at", where, line),
        metadata=metadata,
        message_count=0,
        size_bytes=0,
        last_message_id=0,
    )


async def _import_block(
    manager: AsyncSessionManager,
    puller: _Puller,
    header: dict[str, Any],
    line: int,
    name: str | None,
    where: str,
) -> SessionRecord:
    record = _record(header, name, where, line)
    compress = manager.config.compress_messages

    async def batches() -> AsyncIterator[list[MessageRecord]]:
        batch: list[MessageRecord] = []
        count = 0
        while True:
            event = await puller.next()
            if event is None:
                raise FileFormatError(f"{where}: the file ends inside a session: it is truncated")
            kind, payload, at = event
            if kind == "message":
                try:
                    batch.append(encode_message(payload, compress=compress))
                except InvalidMessageError as exc:
                    raise FileFormatError(
                        f"{where}: line {at}: message {count + 1}: {exc}"
                    ) from exc
                count += 1
                if len(batch) >= PAGE:
                    yield batch
                    batch = []
                continue
            if kind != "end":
                raise FileFormatError(f"{where}: line {at}: a new session before the end line")
            expected = payload.get("message_count")
            if expected is not None and expected != count:
                raise FileFormatError(
                    f"{where}: line {at}: the end line counts {expected!r} messages but "
                    f"{count} were read: the file is damaged"
                )
            if "metadata" in payload:  # a JSON file may give its metadata after the messages
                try:
                    record.metadata = encode_metadata(payload["metadata"] or {})
                except InvalidMessageError as exc:
                    raise FileFormatError(f"{where}: line {at}: {exc}") from exc
            if batch:
                yield batch
            return

    return await manager._repository.import_session(
        record, batches(), max_bytes=manager.config.max_session_bytes
    )


def _open(source: Source) -> tuple[IO[str], str, Callable[[], None]]:
    if isinstance(source, str | os.PathLike):
        path = Path(source).expanduser()
        try:
            fh = open(path, encoding="utf-8")  # noqa: SIM115 - closed by the caller
        except OSError as exc:
            raise FileFormatError(f"cannot read {path}: {exc}") from exc
        return fh, str(path), fh.close
    return source, getattr(source, "name", "<stream>"), lambda: None


async def import_session(
    manager: AsyncSessionManager, source: Source, name: str | None, fmt: str | None
) -> AsyncSession:
    await manager._ready()
    fh, where, close = _open(source)
    try:
        try:
            events = await anyio.to_thread.run_sync(_events, fh, where, fmt)
        except UnicodeDecodeError as exc:
            raise FileFormatError(f"{where}: the file is not UTF-8 text ({exc.reason})") from None
        puller = _Puller(_guarded(events, where))
        first = await puller.next()
        if first is None or first[0] != "session":
            raise FileFormatError(f"{where}: no session in the file")
        record = await _import_block(manager, puller, first[1], first[2], name, where)
        rest = await puller.next()
        if rest is not None:
            raise FileFormatError(
                f"{where}: line {rest[2]}: more than one session; use import_store"
            )
    finally:
        close()
    return manager._session(record)


async def import_store(manager: AsyncSessionManager, source: Source) -> list[str]:
    await manager._ready()
    fh, where, close = _open(source)
    done: list[str] = []
    try:
        puller = _Puller(_guarded(_jsonl_events(fh, where), where))
        while (event := await puller.next()) is not None:
            if event[0] != "session":
                raise FileFormatError(f"{where}: line {event[2]}: expected a session header")
            try:
                record = await _import_block(manager, puller, event[1], event[2], None, where)
            except Exception as exc:
                if done:
                    exc.add_note(f"imported before the failure: {', '.join(done)}")
                raise
            done.append(record.name)
    finally:
        close()
    return done

"""Export and import of sessions as JSON Lines or JSON, streamed in both directions.

Runs on a :class:`~coda_session.repository.Repository`: :mod:`.format` knows the file
format, :mod:`.files` the files; this module moves sessions between them and storage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio

from ..codec import check_name
from ..config import SessionConfig
from ..errors import FileFormatError, SessionNotFoundError
from ..models import MessageRecord, SessionRecord, as_dicts
from ..repository.protocol import Repository
from . import format as fmt_
from .files import PAGE, Puller, Sink, Source, Target, open_source

__all__ = [
    "Source",
    "Target",
    "export_session",
    "export_store",
    "import_session",
    "import_store",
]


async def _pages(repo: Repository, record: SessionRecord) -> AsyncIterator[list[str]]:
    after = 0
    while True:
        page = await repo.read_page(
            record.id, after_id=after, upto_id=record.last_message_id, limit=PAGE
        )
        if not page:
            return
        after = page[-1].id or after
        yield [fmt_.dumps(d) for d in as_dicts(page, record.name)]


async def _write_session(repo: Repository, record: SessionRecord, sink: Sink, fmt: str) -> int:
    count = 0
    if fmt == "jsonl":
        await sink.write(fmt_.dumps(fmt_.header(record)) + "\n")
        async for lines in _pages(repo, record):
            count += len(lines)
            await sink.write("\n".join(lines) + "\n")
        await sink.write(fmt_.dumps(fmt_.end_line(count)) + "\n")
        return count
    head = fmt_.dumps(fmt_.header(record))
    await sink.write(head[:-1] + ',"messages":[')
    async for lines in _pages(repo, record):
        await sink.write(("," if count else "") + "\n" + ",\n".join(lines))
        count += len(lines)
    await sink.write(f'\n],"message_count":{count}}}\n')
    return count


async def export_session(repo: Repository, name: str, target: Target, fmt: str = "jsonl") -> int:
    """Write one session's saved state to ``target``; returns the messages written."""
    if fmt not in ("jsonl", "json"):
        raise FileFormatError(f"unknown export format {fmt!r} (use 'jsonl' or 'json')")
    name = check_name(name, lookup=True)
    record = await repo.load_session(name=name)
    if record is None:
        raise SessionNotFoundError(f"no session with name {name!r}")
    sink = Sink(target)
    ok = False
    try:
        count = await _write_session(repo, record, sink, fmt)
        ok = True
        return count
    finally:
        await sink.finish(ok)


async def export_store(repo: Repository, target: Target) -> int:
    """Write every session to one JSON Lines stream; returns how many."""
    sink = Sink(target)
    ok = False
    try:
        await sink.write(fmt_.dumps({"coda_session": fmt_.FORMAT_VERSION, "kind": "store"}) + "\n")
        infos = await repo.list_sessions()
        for info in infos:
            record = await repo.load_session(session_id=info.id)
            if record is not None:  # deleted meanwhile: nothing to export
                await _write_session(repo, record, sink, "jsonl")
        ok = True
        return len(infos)
    finally:
        await sink.finish(ok)


async def _import_block(
    repo: Repository,
    config: SessionConfig,
    puller: Puller,
    header: dict[str, Any],
    line: int,
    name: str | None,
    where: str,
) -> SessionRecord:
    record = fmt_.session_record(header, name, where, line)
    compress = config.compress_messages

    async def batches() -> AsyncIterator[list[MessageRecord]]:
        batch: list[MessageRecord] = []
        count = 0
        while True:
            event = await puller.next()
            if event is None:
                raise FileFormatError(f"{where}: the file ends inside a session: it is truncated")
            kind, payload, at = event
            if kind == "message":
                count += 1
                batch.append(
                    fmt_.message(payload, compress=compress, where=where, line=at, number=count)
                )
                if len(batch) >= PAGE:
                    yield batch
                    batch = []
                continue
            if kind != "end":
                raise FileFormatError(f"{where}: line {at}: a new session before the end line")
            metadata = fmt_.check_end(payload, count, where, at)
            if metadata is not None:
                record.metadata = metadata
            if batch:
                yield batch
            return

    return await repo.import_session(record, batches(), max_bytes=config.max_session_bytes)


async def import_session(
    repo: Repository, config: SessionConfig, source: Source, name: str | None, fmt: str | None
) -> SessionRecord:
    """Import the one session of ``source`` in one transaction; returns what was stored."""
    fh, where, close = open_source(source)
    try:
        try:
            events = await anyio.to_thread.run_sync(fmt_.events, fh, where, fmt)
        except UnicodeDecodeError as exc:
            raise FileFormatError(f"{where}: the file is not UTF-8 text ({exc.reason})") from None
        puller = Puller(fmt_.guarded(events, where))
        first = await puller.next()
        if first is None or first[0] != "session":
            raise FileFormatError(f"{where}: no session in the file")
        record = await _import_block(repo, config, puller, first[1], first[2], name, where)
        rest = await puller.next()
        if rest is not None:
            raise FileFormatError(
                f"{where}: line {rest[2]}: more than one session; use import_store"
            )
    finally:
        close()
    return record


async def import_store(repo: Repository, config: SessionConfig, source: Source) -> list[str]:
    """Import every session of an ``export_store`` stream, each in its own transaction."""
    fh, where, close = open_source(source)
    done: list[str] = []
    try:
        puller = Puller(fmt_.guarded(fmt_.jsonl_events(fh, where), where))
        while (event := await puller.next()) is not None:
            if event[0] != "session":
                raise FileFormatError(f"{where}: line {event[2]}: expected a session header")
            try:
                record = await _import_block(repo, config, puller, event[1], event[2], None, where)
            except Exception as exc:
                if done:
                    exc.add_note(f"imported before the failure: {', '.join(done)}")
                raise
            done.append(record.name)
    finally:
        close()
    return done

"""Export and import of sessions as JSON Lines or JSON, streamed in both directions.

Runs on a :class:`~coda_session.repository.Repository`: :mod:`.format` knows the file
format, :mod:`.files` the files; this module moves sessions between them and storage.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

import anyio

from ..codec import check_name
from ..config import SessionConfig
from ..errors import FileFormatError, SessionExistsError, SessionNotFoundError
from ..models import MessageRecord, SessionRecord, naming_session
from ..repository.base import check_import_size, parents_first
from ..repository.capabilities import snapshot
from ..repository.protocol import Repository, Snapshot
from . import format as fmt_
from .files import PAGE, Puller, Sink, Source, Spool, Target, export_format, open_source

__all__ = [
    "Source",
    "Target",
    "export_session",
    "export_store",
    "import_session",
    "import_store",
]


#: A written session's messages as (message id, hash of its line), in order: what a branch
#: later in the same store stream compares its first messages with.
Written = list[tuple[int, int]]


async def _pages(
    repo: Snapshot, record: SessionRecord, after: int = 0, seen: Written | None = None
) -> AsyncGenerator[list[str], None]:
    while True:
        page = await repo.read_page(
            record.id,
            after_id=after,
            upto_id=record.last_message_id,
            limit=PAGE,
            root_id=record.root_id or None,
        )
        if not page:
            return
        after = page[-1].id or after
        with naming_session(record.name):
            lines = [fmt_.dumps(fmt_.entry(r)) for r in page]
        if seen is not None:
            seen.extend((r.id or 0, hash(line)) for r, line in zip(page, lines, strict=True))
        yield lines


async def _shared(repo: Snapshot, record: SessionRecord, parent: Written) -> tuple[int, int]:
    """(how many of the branch's first messages are its parent's first ones, the last
    such message's id): the same message id with the same content, in the same place."""
    if repo.global_ids:
        return await _shared_ids(repo, record, parent)
    shared = last = 0
    mine: Written = []
    async with aclosing(_pages(repo, record, seen=mine)) as pages:
        async for _ in pages:
            while shared < len(mine):
                if shared >= len(parent) or parent[shared] != mine[shared]:
                    return shared, last
                last = mine[shared][0]
                shared += 1
    return shared, last


async def _shared_ids(repo: Snapshot, record: SessionRecord, parent: Written) -> tuple[int, int]:
    """:func:`_shared` where an id names one message in the store, reading only what the
    branch shows after its fork point (what its block holds anyway), not everything it
    shares (an export of a chain of forks read each level's whole conversation again).

    A view that shows message ``x`` shows, below ``x``, the newest of the messages its
    writer showed below ``x`` when it stored ``x`` (rows below a kept one only ever go
    from the oldest end; a fork takes a prefix). So two views that show ``x`` at the
    same position show the same messages before it. The branch shows the parent's
    ``g``-th message (``g``: its fork point) at position ``g`` when it shows it and
    ``message_count - g`` messages after it; from there the two are compared message by
    message. Otherwise (either was cut since) it falls back to comparing from the start."""
    g = min(record.fork_point or 0, len(parent))
    if g >= 1:
        mark = parent[g - 1][0]
        found = await repo.read_page(
            record.id,
            after_id=mark - 1,
            upto_id=record.last_message_id,
            limit=1,
            root_id=record.root_id or None,
        )
        if found and found[0].id == mark:
            after: list[int] = []
            at = mark
            while True:
                page = await repo.read_page(
                    record.id,
                    after_id=at,
                    upto_id=record.last_message_id,
                    limit=PAGE,
                    root_id=record.root_id or None,
                )
                if not page:
                    break
                after.extend(r.id or 0 for r in page)
                at = page[-1].id or at
            if record.message_count - len(after) == g:
                shared = g
                while shared < len(parent) and shared - g < len(after):
                    if after[shared - g] != parent[shared][0]:
                        break
                    shared += 1
                return shared, parent[shared - 1][0]
    shared = last = 0
    mine: Written = []
    async with aclosing(_pages(repo, record, seen=mine)) as pages:
        async for _ in pages:
            while shared < len(mine):
                if shared >= len(parent) or parent[shared][0] != mine[shared][0]:
                    return shared, last
                last = mine[shared][0]
                shared += 1
    return shared, last


async def _write_session(
    repo: Snapshot,
    record: SessionRecord,
    sink: Sink,
    fmt: str,
    shares: int | None = None,
    after: int = 0,
    seen: Written | None = None,
) -> int:
    count = 0
    if fmt == "jsonl":
        await sink.write(fmt_.dumps(fmt_.header(record, shares)) + "\n")
        async for lines in _pages(repo, record, after, seen):
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


async def export_session(
    repo: Repository,
    name: str,
    target: Target,
    fmt: str | None = None,
    overwrite: bool = False,
) -> int:
    """Write one session's saved state to ``target``; returns the messages written.
    ``fmt`` None: the target's extension says (:func:`.files.export_format`)."""
    fmt = export_format(target, fmt)
    if fmt not in ("jsonl", "json"):
        raise FileFormatError(f"unknown export format {fmt!r} (use 'jsonl' or 'json')")
    name = check_name(name, lookup=True)
    # one read transaction for the whole export: a writer rewriting the session meanwhile
    # never shows up in it half-done
    sink = Sink(target, overwrite)  # first: a target that cannot be written fails before any read
    ok = False
    try:
        async with snapshot(repo) as snap:
            record = await snap.load_session(name=name)
            if record is None:
                raise SessionNotFoundError(f"no session with name {name!r}")
            count = await _write_session(snap, record, sink, fmt)
        ok = True
        return count
    finally:
        await sink.finish(ok)


async def export_store(repo: Repository, target: Target, overwrite: bool = False) -> int:
    """Write every session to one JSON Lines stream, parents before their branches; a
    branch shares the messages it shows of its parent's block (format version 2). Returns
    how many sessions were written."""
    sink = Sink(target, overwrite)
    ok = False
    try:
        await sink.write(fmt_.dumps({"coda_session": fmt_.FORMAT_VERSION, "kind": "store"}) + "\n")
        async with snapshot(repo) as snap:  # the whole store as of one moment
            infos = parents_first(await snap.list_sessions())
            # branches still to write, per parent: a parent's messages are kept until
            # its last branch is written (a chain of forks keeps one level, not all)
            waiting = Counter(i.parent_id for i in infos if i.parent_id is not None)
            written: dict[str, Written] = {}
            for info in infos:
                record = await snap.load_session(session_id=info.id)
                if record is None:
                    continue
                shares, after, seen = None, 0, None
                parent = written.get(record.parent_id or "")
                if parent is not None:
                    shares, after = await _shared(snap, record, parent)
                if waiting[info.id]:
                    seen = list(parent[:shares]) if parent is not None and shares else []
                    written[info.id] = seen
                up = record.parent_id
                if up is not None and waiting[up]:
                    waiting[up] -= 1
                    if not waiting[up]:
                        written.pop(up, None)
                await _write_session(snap, record, sink, "jsonl", shares, after, seen)
        ok = True
        return len(infos)
    finally:
        await sink.finish(ok)


async def _stage(
    config: SessionConfig,
    puller: Puller,
    header: dict[str, Any],
    line: int,
    name: str | None,
    where: str,
    check_open: Callable[[], None],
) -> tuple[SessionRecord, Spool]:
    """Read one session's block up to its end line, validated, into a spool: storage is
    not touched (nor its write lock held) while the source is read."""
    record = fmt_.session_record(header, name, where, line)
    compress, max_bytes = config.compress_messages, config.max_session_bytes
    entries = fmt_.holds_entries(header)
    spool = Spool()
    try:
        batch: list[MessageRecord] = []
        count = size = 0
        while True:
            event = await puller.next()
            check_open()  # a manager closed meanwhile: stop reading, write nothing
            if event is None:
                raise FileFormatError(f"{where}: the file ends inside a session: it is truncated")
            kind, payload, at = event
            if kind == "message":
                count += 1
                item = fmt_.message(
                    payload, compress=compress, where=where, line=at, number=count, entry=entries
                )
                batch.append(item)
                size += item.byte_size()
                check_import_size(record.name, size, max_bytes)  # refused early, not at the end
                if len(batch) >= PAGE:
                    await anyio.to_thread.run_sync(spool.add, batch)
                    batch = []
                continue
            if kind != "end":
                raise FileFormatError(f"{where}: line {at}: a new session before the end line")
            metadata = fmt_.check_end(payload, count, where, at)
            if metadata is not None:
                record.metadata = metadata
            if batch:
                await anyio.to_thread.run_sync(spool.add, batch)
            return record, spool
    except BaseException:
        spool.close()
        raise


async def _store(
    repo: Repository,
    config: SessionConfig,
    record: SessionRecord,
    spool: Spool,
    check_open: Callable[[], None],
    fork: tuple[str, int] | None = None,
    *,
    where: str,
    if_exists: str,
) -> SessionRecord:
    """Write one staged session; ``if_exists``: what to do when its name is taken."""
    try:
        check_open()  # a manager closed while the source was read writes nothing
        return await repo.import_session(
            record, spool, max_bytes=config.max_session_bytes, fork=fork
        )
    except SessionExistsError as exc:
        raise SessionExistsError(
            f"{where}: cannot import session {record.name!r}: a session of that name exists "
            f"already; {if_exists}"
        ) from exc
    finally:
        spool.close()


#: What to do about a name that exists already, for import_session and import_store.
_RENAME_OR_REPLACE = (
    "pass name= to import it under another name, or delete the existing session first to replace it"
)
_KEPT_NAMES = (
    "import_store keeps the stream's names: delete the existing session first to replace "
    "it, or import the stream into another store"
)


def _still_open() -> None:
    return None


async def import_session(
    repo: Repository,
    config: SessionConfig,
    source: Source,
    name: str | None,
    fmt: str | None,
    check_open: Callable[[], None] = _still_open,
) -> SessionRecord:
    """Import the one session of ``source`` in one transaction; returns what was stored.

    The whole stream is read and validated first, to its end (one session, nothing after
    it): a file that fails anywhere writes nothing. ``check_open`` raises if the caller
    was closed meanwhile (ManagerClosedError), before anything is written.
    """
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
        if fmt_.tree_keys(first[1], where, first[2])[0] is not None:
            raise FileFormatError(
                f"{where}: line {first[2]}: this session shares the first messages of its "
                f"parent's block in a store export ({fmt_.SHARES_KEY!r}): import the whole "
                "stream with import_store"
            )
        record, spool = await _stage(config, puller, first[1], first[2], name, where, check_open)
        try:
            rest = await puller.next()
            if rest is not None:
                raise FileFormatError(
                    f"{where}: line {rest[2]}: more than one session; use import_store"
                )
        except BaseException:
            spool.close()
            raise
    finally:
        close()
    return await _store(
        repo, config, record, spool, check_open, where=where, if_exists=_RENAME_OR_REPLACE
    )


async def import_store(
    repo: Repository,
    config: SessionConfig,
    source: Source,
    check_open: Callable[[], None] = _still_open,
) -> list[str]:
    """Import every session of an ``export_store`` stream, each in its own transaction.

    On an error, the sessions imported before it stay and the error's notes name them.
    """
    fh, where, close = open_source(source)
    done: list[str] = []
    new_ids: dict[str, str] = {}  # a session's id in the stream -> its id here
    shown: dict[str, tuple[int, str]] = {}  # ... -> (the messages it shows, its name)
    try:
        puller = Puller(fmt_.guarded(fmt_.jsonl_events(fh, where), where))
        while (event := await puller.next()) is not None:
            if event[0] != "session":
                raise FileFormatError(f"{where}: line {event[2]}: expected a session header")
            parent, shares = fmt_.tree_keys(event[1], where, event[2])
            fork = None
            if parent is not None and shares is not None:
                if parent not in new_ids:
                    raise FileFormatError(
                        f"{where}: line {event[2]}: the session shares messages of session "
                        f"{parent!r}, which is not earlier in the stream"
                    )
                fork = (new_ids[parent], shares)
                if shares > shown[parent][0]:
                    count, parent_name = shown[parent]
                    raise FileFormatError(
                        f"{where}: line {event[2]}: {fmt_.SHARES_KEY!r} is {shares} but its "
                        f"parent, {parent_name!r} (earlier in the stream), shows {count} "
                        "messages: the file was damaged or edited; export the store again "
                        "from its source"
                    )
            record, spool = await _stage(
                config, puller, event[1], event[2], None, where, check_open
            )
            stored = await _store(
                repo, config, record, spool, check_open, fork, where=where, if_exists=_KEPT_NAMES
            )
            if isinstance(event[1].get("id"), str):
                new_ids[event[1]["id"]] = stored.id
                shown[event[1]["id"]] = (stored.message_count, stored.name)
            done.append(stored.name)
    except Exception as exc:
        if done:
            exc.add_note(f"imported before the failure: {', '.join(done)}")
        raise
    finally:
        close()
    return done

"""The export format: its lines and headers, and a streaming reader for it (no I/O of its own).

Format (version 3). JSON Lines, one session::

    {"coda_session": 3, "kind": "session", "escaped_strings": true, "id": ..., "name": ...,
     "created_at": ..., "updated_at": ..., "metadata": {...}}
    {"timestamp": "...", "message": {"role": "user", "content": "Hello!"}}   one per message
    {"coda_session": 3, "kind": "end", "message_count": 2}

Each message line holds the time the message is filed under and the message exactly as
it was added (messages are stored exactly since version 3; versions 1 and 2 wrote the
message itself, with the ``timestamp`` key the library then added, and still import so:
filed under that key, which the message keeps).

A branch's header also names its parent and fork point (``"parent_id"``, ``"fork_point"``,
as in :class:`~coda_session.SessionInfo`). A whole store is one JSON Lines stream:
``{"coda_session": 3, "kind": "store"}`` and then one such block per session, every parent
before its branches. There, a branch whose parent's block came earlier has ``"shares": k``
in its header: it shows the parent's first ``k`` messages (as that block lists them)
followed by the block's own lines, which hold only the rest. Importing the stream rebuilds
the tree, the shared messages stored once. A branch exported alone (or whose parent is not
in the stream) has no ``"shares"`` and holds everything it shows.

JSON, one session: the same header fields and the messages in one object,
``{"coda_session": 3, "kind": "session", ..., "messages": [...], "message_count": 2}``
(one message line per line, so it streams too). Any JSON object with a ``"messages"`` list (and
optional ``"metadata"``) imports as well, e.g. the spec's hand-written export, given a
``name``. Version 1 files (no tree keys) import as before.

With ``"escaped_strings": true`` in its header, a session's strings are in the codec's
stored form: the few holding NUL, a lone surrogate or ``␛`` have those written as ``␛`` +
four hex digits (``"a␛0000b"``), every other string is plain; so the file is valid UTF-8
JSON and imports exactly. Without it (older exports, other tools) strings are read as
plain JSON (``\\u0000`` and ``\\udc80`` escapes included).

The end line (``message_count`` after the messages in JSON) proves the file is whole:
a truncated or malformed file raises :class:`FileFormatError` naming the line, and an
import writes nothing unless the whole session is valid (one transaction).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any

from ..codec import check_name, encode_message, encode_metadata, is_timestamp
from ..errors import FileFormatError, InvalidMessageError
from ..escaping import ESCAPE, escape_json, unescape_json
from ..models import MessageRecord, SessionRecord
from ..timeutil import from_db_timestamp, utcnow

__all__ = [
    "FORMAT_VERSION",
    "MAX_LINE_CHARS",
    "READABLE_VERSIONS",
    "SHARES_KEY",
    "Event",
    "check_end",
    "detect",
    "dumps",
    "end_line",
    "entry",
    "events",
    "guarded",
    "header",
    "holds_entries",
    "jsonl_events",
    "message",
    "session_record",
    "tree_keys",
]

FORMAT_VERSION = 3
#: the versions an import reads (1: before branches were kept as a tree; 2: before
#: messages were stored exactly, each line the message with the timestamp added)
READABLE_VERSIONS = (1, 2, 3)

#: The longest line of a JSON Lines file, and the longest value of a JSON file, an import
#: reads (in characters): a longer one raises FileFormatError instead of exhausting memory
#: (``/dev/zero``, a file with no line breaks). 256 MiB is far past any message a session
#: can store, since a stored session is at most ``max_session_size``.
MAX_LINE_CHARS = 256 * 1024 * 1024

Event = tuple[str, Any, int]  # ("session" | "message" | "end", payload, line)


#: The header key saying that every string of the session's lines (header, messages, end
#: line) is in the codec's stored form (:mod:`coda_session.escaping`): ``␛`` + four hex
#: digits stands for a NUL, a lone surrogate or ``␛``. Files without it (older exports,
#: hand-written ones) are read as plain JSON.
ESCAPED_KEY = "escaped_strings"
#: The header key of a branch that shows the first n messages of its parent's block,
#: earlier in the same store stream (its own block then holds only the rest).
SHARES_KEY = "shares"

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def dumps(value: Any) -> str:
    """One line of an export: JSON, as UTF-8 text, its strings in the stored form.

    A value whose strings hold no NUL, lone surrogate or ``␛`` (nearly all) is plain JSON
    with its non-ASCII characters as they are. The others have their strings in the
    codec's stored form (``"a␛0000b"`` for ``"a\\x00b"``): JSON escapes could not keep
    them exact, as ``json.loads`` joins the escapes of a lone high and a lone low
    surrogate side by side into one character.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if (
        ESCAPE in text
        or "\\u0000" in text
        or (not text.isascii() and _SURROGATE.search(text) is not None)
    ):
        text = json.dumps(escape_json(value), ensure_ascii=False, separators=(",", ":"))
    return text


def _read_back(value: Any, escaped: bool) -> Any:
    """A value read from a session's lines, its strings decoded when the header says so."""
    return unescape_json(value) if escaped else value


# -- writing -------------------------------------------------------------------------------


def header(record: SessionRecord, shares: int | None = None) -> dict[str, Any]:
    """A session's header line; ``shares``: how many of its first messages are its
    parent's block's (the parent came earlier in the same stream)."""
    head: dict[str, Any] = {
        "coda_session": FORMAT_VERSION,
        "kind": "session",
        ESCAPED_KEY: True,
        "id": record.id,
        "name": record.name,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "metadata": record.metadata,
    }
    if record.parent_id is not None:
        head["parent_id"] = record.parent_id
        head["fork_point"] = record.fork_point
    if shares is not None:
        head[SHARES_KEY] = shares
    return head


# -- reading -------------------------------------------------------------------------------


def _too_long(where: str, line: int) -> FileFormatError:
    return FileFormatError(
        f"{where}: line {line}: longer than {MAX_LINE_CHARS} characters, the most an "
        "import reads in one line or value: not an export of this library"
    )


def _lines(fh: IO[str], where: str) -> Iterator[tuple[int, str]]:
    """The numbered lines of ``fh``, none longer than MAX_LINE_CHARS (read bounded)."""
    number = 0
    while True:
        limit = MAX_LINE_CHARS
        line = fh.readline(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit:
            raise _too_long(where, number)
        yield number, line


def jsonl_events(fh: IO[str], where: str) -> Iterator[Event]:
    number = 0
    in_session = escaped = False
    for number, line in _lines(fh, where):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FileFormatError(f"{where}: line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            hint = _LIST_HINT if isinstance(item, list) else ""
            raise FileFormatError(f"{where}: line {number}: expected a JSON object{hint}")
        # a message may carry any extra keys, "kind" included: control lines have no role
        kind = item.get("kind") if "coda_session" in item and "role" not in item else None
        if kind is not None and item.get("coda_session") not in READABLE_VERSIONS:
            raise FileFormatError(
                f"{where}: line {number}: format version {item.get('coda_session')!r} "
                f"is not one this library reads ({', '.join(map(str, READABLE_VERSIONS))})"
            )
        if kind == "store" and not in_session:
            continue
        if kind == "session" and not in_session:
            if "messages" in item:
                raise FileFormatError(
                    f"{where}: line {number}: a JSON export (one object holding its "
                    "'messages'), not JSON Lines: import it with import_session, its format "
                    "detected (or format='json')"
                )
            in_session, escaped = True, item.get(ESCAPED_KEY) is True
            yield ("session", _read_back(item, escaped), number)
        elif kind == "end" and in_session:
            in_session = False
            yield ("end", _read_back(item, escaped), number)
        elif kind is None and in_session:
            yield ("message", _read_back(item, escaped), number)
        else:
            what = "a message line" if kind is None else f"a {kind!r} line"
            raise FileFormatError(f"{where}: line {number}: {what} out of place")
    if in_session:
        raise FileFormatError(
            f"{where}: the file ends after line {number} inside a session without its end "
            "line: it is truncated"
        )


class JsonStream:
    """Just enough of an incremental JSON reader to stream ``{..., "messages": [...]}``."""

    CHUNK = 1 << 16

    def __init__(self, fh: IO[str], where: str) -> None:
        self.fh, self.where = fh, where
        self.buf, self.pos, self.eof, self.lines = "", 0, False, 0
        self.counted = 0  # buf[:counted] has had its line breaks added to lines
        self.decoder = json.JSONDecoder()

    def line(self) -> int:
        # counted incrementally: a big buffer holding many messages is scanned once
        self.lines += self.buf.count("\n", self.counted, self.pos)
        self.counted = self.pos
        return self.lines + 1

    def error(self, problem: str) -> FileFormatError:
        return FileFormatError(f"{self.where}: line {self.line()}: {problem}")

    def more(self, size: int = CHUNK) -> bool:
        if self.eof:
            return False
        chunk = self.fh.read(size)
        if not chunk:
            self.eof = True
            return False
        self.line()  # count the line breaks of the part dropped
        self.buf, self.pos, self.counted = self.buf[self.pos :] + chunk, 0, 0
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
            # the value may go on: read as much again as it already has, so a value of n
            # characters is decoded O(log n) times (linear work), not once per chunk
            held = len(self.buf) - self.pos
            if held > MAX_LINE_CHARS:
                raise _too_long(self.where, self.line())
            self.more(max(self.CHUNK, held))


#: What an import expects, for the error of a file holding something else (a JSON list).
_LIST_HINT = (
    ": an import reads an export of this library, or one JSON object with a 'messages' "
    'list; wrap a bare list of messages as {"messages": [...]} and pass name='
)


def json_events(fh: IO[str], where: str) -> Iterator[Event]:
    stream = JsonStream(fh, where)
    if stream.peek() == "[":
        raise stream.error(f"a JSON list{_LIST_HINT}")
    stream.take("{")
    header: dict[str, Any] = {}
    seen_messages = escaped = False
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
                escaped = header.get(ESCAPED_KEY) is True
                yield ("session", _read_back(dict(header), escaped), stream.line())
                header = {}
                stream.take("[")
                if stream.peek() == "]":
                    stream.pos += 1
                else:
                    while True:
                        line = stream.line()
                        yield ("message", _read_back(stream.value(), escaped), line)
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
    yield ("end", _read_back(header, escaped), stream.line())


def detect(fh: IO[str], where: str) -> str:
    """The format of ``fh`` from its first line that is not blank (then rewound): JSON
    Lines when that line is a whole session or store header, JSON otherwise. A JSON
    export's first line is ``{``, or its header up to ``"messages":[``, or (re-saved on
    one line, as ``jq -c`` writes it) the whole object, which holds its ``"messages"``:
    a JSON Lines header never does."""
    first, number = "", 0
    while not first.strip():
        first = fh.readline(MAX_LINE_CHARS + 1)
        number += 1
        if len(first) > MAX_LINE_CHARS:
            raise _too_long(where, number)
        if not first:
            break
    found = "json"
    try:
        head = json.loads(first)
        if (
            isinstance(head, dict)
            and head.get("kind") in ("session", "store")
            and "coda_session" in head
            and "messages" not in head
        ):
            found = "jsonl"
    except json.JSONDecodeError:
        pass
    try:
        fh.seek(0)
    except (OSError, ValueError) as exc:
        raise FileFormatError(
            f"{where}: cannot detect the format of a stream that cannot seek: pass format="
        ) from exc
    return found


def events(fh: IO[str], where: str, fmt: str | None) -> Iterator[Event]:
    if fmt is None:
        fmt = detect(fh, where)
    if fmt == "jsonl":
        return jsonl_events(fh, where)
    if fmt == "json":
        return json_events(fh, where)
    raise FileFormatError(f"unknown import format {fmt!r} (use 'jsonl' or 'json')")


def guarded(events: Iterator[Event], where: str) -> Iterator[Event]:
    try:
        yield from events
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{where}: the file is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise FileFormatError(f"{where}: cannot read the file: {exc}") from exc


def parse_when(value: Any, field: str, where: str, line: int) -> datetime:
    if value is None:
        return utcnow()
    try:
        return from_db_timestamp(value)
    except (TypeError, ValueError):
        raise FileFormatError(
            f"{where}: line {line}: {field} {value!r:.40} is not a date-time"
        ) from None


def tree_keys(header: dict[str, Any], where: str, line: int) -> tuple[str | None, int | None]:
    """(the parent's id in the source store, how many of its messages the block shares)
    of a session header; (None, None) for a session that shares nothing."""
    shares = header.get(SHARES_KEY)
    if shares is None:
        return None, None
    parent = header.get("parent_id")
    if type(shares) is not int or shares < 0 or not isinstance(parent, str):
        raise FileFormatError(
            f"{where}: line {line}: {SHARES_KEY!r} must be a non-negative integer with a parent_id"
        )
    return parent, shares


def session_record(
    header: dict[str, Any], name: str | None, where: str, line: int
) -> SessionRecord:
    chosen = name if name is not None else header.get("name")
    if chosen is None:
        raise FileFormatError(f"{where}: line {line}: the file names no session: pass name=")
    try:
        chosen = check_name(chosen)
        metadata = encode_metadata(header.get("metadata") or {})
    except InvalidMessageError as exc:
        raise FileFormatError(f"{where}: line {line}: {exc}") from exc
    created = parse_when(header.get("created_at"), "created_at", where, line)
    return SessionRecord(
        id=str(uuid.uuid4()),
        name=chosen,
        created_at=created,
        updated_at=parse_when(
            header.get("updated_at", created.isoformat()), "updated_at", where, line
        ),
        metadata=metadata,
        message_count=0,
        size_bytes=0,
        last_message_id=0,
        fork_point=_fork_point(header.get("fork_point")),
    )


def _fork_point(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def entry(record: MessageRecord) -> dict[str, Any]:
    """A message's line (version 3): the time it is filed under and the message exactly as
    it was added."""
    return {"timestamp": record.timestamp, "message": record.to_dict()}


def holds_entries(header: dict[str, Any]) -> bool:
    """Whether a session's message lines are :func:`entry` lines (version 3 on); older
    exports and hand-written files hold the messages themselves."""
    version = header.get("coda_session")
    return type(version) is int and version >= 3


def message(
    payload: Any, *, compress: bool, where: str, line: int, number: int, entry: bool = False
) -> MessageRecord:
    """One message line validated as ``add_message`` does (FileFormatError naming the line);
    ``entry``: the line is an :func:`entry` (version 3), else the message itself (whose
    ``timestamp`` key, which versions 1 and 2 always wrote, it is filed under)."""
    try:
        if not entry:
            return encode_message(payload, compress=compress)
        if (
            not isinstance(payload, dict)
            or set(payload) != {"timestamp", "message"}
            or not is_timestamp(payload["timestamp"])
        ):
            raise InvalidMessageError(
                'expected {"timestamp": <ISO-8601 date-time>, "message": {...}} '
                "(a format version 3 message line)"
            )
        return encode_message(payload["message"], compress=compress, at=payload["timestamp"])
    except InvalidMessageError as exc:
        raise FileFormatError(f"{where}: line {line}: message {number}: {exc}") from exc


def check_end(payload: dict[str, Any], count: int, where: str, line: int) -> dict[str, Any] | None:
    """Check an end line against the messages read; returns the metadata it carries (a JSON
    file may give its metadata after the messages), or None."""
    expected = payload.get("message_count")
    if expected is not None and expected != count:
        raise FileFormatError(
            f"{where}: line {line}: the end line counts {expected!r} messages but "
            f"{count} were read: the file is damaged"
        )
    if "metadata" not in payload:
        return None
    try:
        return encode_metadata(payload["metadata"] or {})
    except InvalidMessageError as exc:
        raise FileFormatError(f"{where}: line {line}: {exc}") from exc


def end_line(count: int) -> dict[str, Any]:
    """The JSON Lines end line of a session of ``count`` messages."""
    return {"coda_session": FORMAT_VERSION, "kind": "end", "message_count": count}

"""Validation and encoding of messages, names and metadata, before anything is written.

The rules hold for every backend alike, so that a conversation moves between them intact:

* values must be JSON: ``None``, ``bool``, ``int``, finite ``float``, ``str``, ``list`` or
  ``tuple`` (stored as a list), and ``dict`` with string keys;
* NaN and infinities are rejected (JSON has no spelling for them and PostgreSQL jsonb
  refuses them);
* nesting deeper than :data:`MAX_DEPTH` is rejected;
* any string is accepted in a content, in the extra keys (keys and values) and in session
  metadata (keys and values), NUL characters and lone surrogates included (tool outputs
  carry them: PDF text, shell output decoded with ``surrogateescape``), and is returned
  exactly as given; roles, timestamps and session names are identifiers and still refuse
  NUL and lone surrogates.

Messages stored exactly
-----------------------
A message (or item) comes back exactly as given: every key in its order, none added. Its
``role`` (or, for an item without one, its ``type``) goes to the role column, a string
``content`` to the content column (or compressed), and everything else to the extra keys'
JSON, which begins with a key ``"␛"`` holding the order of the keys
(:data:`~coda_session.models.ITEM_PREFIX`). The time the message is filed under (its own
``timestamp`` when it gives one, else the time it was added) goes to the timestamp column
only. Rows of earlier versions have no such key and read as they did, with the
``timestamp`` key those versions added. A message's size is, as before, the UTF-8 size of
its role, content (a non-string one as JSON), the time it is filed under and the JSON of
its other keys (a ``timestamp`` key among them counted once, as the filed time); its
characters the same without the time (:func:`_chars`), so every message earlier versions
accepted measures what it did.

The stored form
---------------
Neither NUL (PostgreSQL refuses it in ``text``, and as ``\\u0000`` in ``jsonb``) nor a
lone surrogate (not UTF-8 at all) can be stored as text everywhere. So every string is
written in a stored form (:mod:`coda_session.escaping`) in which NUL, a lone surrogate
and the escape character ``␛`` (U+241B SYMBOL FOR ESCAPE) are written as ``␛`` followed
by the code point in four lowercase hex digits, and nothing else changes::

    given "ls: \\udc80.txt: cannot read\\x00"  stored as  ls: ␛dc80.txt: cannot read␛0000
    given "a ␛ b"                         stored as  a ␛241b b

A string without NUL, lone surrogates or ``␛`` (nearly all text) is stored byte for byte
as before; the check costs an ``isascii`` and a substring test or two (:func:`_scan`). The
encoding is applied here, once, to a string content, to every string (keys too) inside a
JSON content and the extra keys (before they become JSON text), and to session metadata
(:func:`dumps_metadata` / :func:`read_metadata`); :meth:`MessageRecord.to_dict
<coda_session.models.MessageRecord.to_dict>` decodes. The memory backend keeps the same
records, the custom backend's storage receives and returns the original strings
(``to_dict()`` / :func:`encode_message`), and exports write the few strings that need it
in this same form, under an ``"escaped_strings": true`` header (JSON escapes could not
keep them exact: ``json.loads`` joins a lone high and a lone low surrogate written side by
side as ``\\ud83d\\ude00`` into one character; see :mod:`coda_session.transfer.format`).
Sizes and characters are measured on the original strings (:func:`_measure`), so they
are the same on every backend and the plain text stays what is measured and returned.

Why a migration (revision 0007)
-------------------------------
No stored form can be told apart from old data by its text alone: earlier versions
stored any string without NUL or lone surrogates, so an old row may hold ``"␛0000"``
literally, which must read back as itself while the new stored form of a NUL is that
same text. Revision 0007 therefore escapes every pre-existing string that holds ``␛``
(in plain contents, compressed contents, extra keys and session metadata; old data has
no NUL or surrogates, except from databases written by other code, which it escapes
too). From then on every ``␛`` in the database begins a code, and each string decodes
exactly. Its downgrade decodes them back, and refuses, naming the row, when a string
holds NUL or a lone surrogate (the older code cannot store those).
"""

from __future__ import annotations

import dataclasses
import json
import math
import unicodedata
import zlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .errors import InvalidMessageError
from .escaping import ESCAPE, escape, escape_json, unescape_json
from .models import ITEM_PREFIX, MessageRecord, message_record
from .timeutil import utcnow

__all__ = [
    "COMPRESS_THRESHOLD",
    "MAX_DEPTH",
    "MAX_NAME_LENGTH",
    "UNREADABLE_METADATA_KEY",
    "as_item",
    "check_name",
    "decode_metadata",
    "encode_message",
    "encode_metadata",
    "is_timestamp",
    "measure_message",
    "read_metadata",
    "shown_text",
]

MAX_DEPTH = 100
MAX_NAME_LENGTH = 255
#: Contents of at least this many UTF-8 bytes are stored compressed (``compress_messages``).
COMPRESS_THRESHOLD = 1024
#: zlib's level: 6 is its default, a good trade of speed for size on chat text.
COMPRESS_LEVEL = 6
_CORE_KEYS = ("role", "content", "timestamp")
#: How ``json.dumps`` writes a NUL.
_JSON_NUL = "\\u0000"


def _check_str(value: str, where: str) -> None:
    """Refuse NUL and lone surrogates in an identifier (role, timestamp, session name)."""
    if "\x00" in value:
        raise InvalidMessageError(
            f"{where}: NUL characters are not allowed in names, roles and timestamps "
            "(contents, extra keys and metadata may hold them)"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMessageError(
            f"{where}: lone surrogate characters are not allowed in names, roles and "
            "timestamps (contents, extra keys and metadata may hold them)"
        ) from None


def _scan(text: str, nul: str) -> tuple[int, bool]:
    """(UTF-8 size of ``text``, a lone surrogate counting 3 bytes as with
    ``surrogatepass``; whether ``text`` holds a character the stored form escapes).

    ``nul`` is how a NUL appears in ``text``: ``"\\x00"`` in plain text, ``"\\\\u0000"``
    in JSON text (which ``json.dumps`` gives every NUL as; a literal backslash before
    ``u0000`` only sends the value down the exact, slower path). The common case costs an
    ``isascii`` and one or two substring checks besides the ``encode`` the size needs.
    """
    if text.isascii():
        return len(text), nul in text
    try:
        size = len(text.encode())
    except UnicodeEncodeError:  # a lone surrogate
        return len(text.encode("utf-8", "surrogatepass")), True
    return size, nul in text or ESCAPE in text


def _check_json(value: Any, where: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise InvalidMessageError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if value is None or value is True or value is False:
        return
    kind = type(value)
    if kind is str or kind is int:
        return
    elif kind is float:
        if not math.isfinite(value):
            raise InvalidMessageError(
                f"{where}: {value!r} cannot be stored: NaN and infinities are not JSON "
                "numbers (PostgreSQL refuses them too)"
            )
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]", depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str:
                raise InvalidMessageError(f"{where}: key {key!r} is not a string")
            _check_json(item, f"{where}[{key[:40]!r}]", depth + 1)
    elif isinstance(value, str | int | float):
        # subclasses (enums, numpy scalars...) would be stored as something else: refuse
        raise InvalidMessageError(f"{where}: {kind.__name__} is not a plain JSON value")
    else:
        raise InvalidMessageError(f"{where}: {kind.__name__} is not JSON-serializable")


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError) as exc:
        # e.g. an integer past Python's int/str conversion limit (4300 digits)
        raise InvalidMessageError(f"value cannot be stored as JSON: {exc}") from None


def _timestamp(value: Any) -> str:
    if value is None:
        return utcnow().isoformat()
    if isinstance(value, datetime):
        return value.isoformat()
    if type(value) is not str:
        raise InvalidMessageError(
            f"message 'timestamp' must be an ISO-8601 string or a datetime, not {type(value).__name__}"
        )
    # the extended form (YYYY-MM-DD...) only: a basic-form '20240101' would read back as a number
    if len(value) < 10 or value[4] != "-" or value[7] != "-":
        raise InvalidMessageError(
            f"message 'timestamp' {value[:40]!r} is not an ISO-8601 date-time"
        )
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise InvalidMessageError(
            f"message 'timestamp' {value[:40]!r} is not an ISO-8601 date-time"
        ) from None
    _check_str(value, "message 'timestamp'")
    return value


def as_item(message: Any) -> Any:
    """A pydantic model or a dataclass instance as the dict its framework serialises it
    to (``model_dump(mode="json", exclude_unset=True, by_alias=True)``, as the OpenAI
    Agents SDK turns its items into input items; ``dataclasses.asdict``); anything else
    as given."""
    if isinstance(message, Mapping):
        return message
    dump = getattr(message, "model_dump", None)
    if dump is not None and callable(dump):
        try:
            return dump(mode="json", exclude_unset=True, by_alias=True)
        except Exception as exc:  # a model that cannot serialise itself as JSON
            raise InvalidMessageError(f"the message's model_dump() failed: {exc}") from exc
    if dataclasses.is_dataclass(message) and not isinstance(message, type):
        return dataclasses.asdict(message)
    return message


def _identifier(value: Any, key: str) -> str:
    if type(value) is not str:
        raise InvalidMessageError(f"message {key!r} must be a non-empty string, got {value!r:.60}")
    if not value or value.isspace():
        raise InvalidMessageError(
            f"message {key!r} must not be empty or only whitespace, got {value!r:.60}"
        )
    _check_str(value, f"message {key!r}")
    return value


def encode_message(message: Any, *, compress: bool = False, at: str | None = None) -> MessageRecord:
    """Validate one message and return its stored form (raises InvalidMessageError).

    A message is a mapping with string keys and JSON values, stored exactly: every key,
    in its order, none added. It must have a non-empty string ``role`` or, for an item
    without one, a non-empty string ``type``; ``content`` is optional. A ``timestamp``,
    when given, must be an ISO-8601 date-time string (or a ``datetime``, stored as its
    ``isoformat()``): it is kept as a key like any other and is the time the message is
    filed under; without one the message is filed under ``at`` or else now (UTC). With
    ``compress``, a content of :data:`COMPRESS_THRESHOLD` bytes or more is stored
    zlib-compressed when that is smaller.
    """
    if type(message) is not dict:
        message = as_item(message)
        if not isinstance(message, Mapping):
            raise InvalidMessageError(f"a message must be a dict, not {type(message).__name__}")
    layout: list[str] = []
    others: dict[str, Any] = {}
    role: str | None = None
    has_content = False
    content: Any = None
    for key, value in message.items():
        if key == "role":
            role = _identifier(value, "role")
            layout.append("r")
        elif key == "content":
            has_content, content = True, value
            layout.append("c")
        else:
            if key == "timestamp" and value is not None:
                # the one key the library reads: the time to file the message under
                value = _timestamp(value)
            others[key] = value
            layout.append(".")
    if role is None:
        if "type" not in message:
            raise InvalidMessageError(
                "message has no 'role' (an item without one needs a non-empty 'type')"
            )
        column_role = _identifier(message["type"], "type")
    else:
        column_role = role
    stamp = others.get("timestamp")
    timestamp = stamp if type(stamp) is str else at if at is not None else utcnow().isoformat()
    if others:
        _check_json(others, "message")
    is_text = not has_content or type(content) is str
    if is_text:
        body = content if has_content else ""
        body_size, special = _scan(body, "\x00")
        stored = escape(body) if special else body
    else:
        _check_json(content, "message 'content'")
        body = _dumps(content)
        body_size, special = _scan(body, _JSON_NUL)
        stored = _dumps(escape_json(content)) if special else body
    extra: str | None = None
    extra_size = 0
    stored_extra = ITEM_PREFIX + "".join(layout) + '"}'
    if others:
        extra = _dumps(others)
        extra_size, special = _scan(extra, _JSON_NUL)
        stored_others = _dumps(escape_json(others)) if special else extra
        stored_extra = stored_extra[:-1] + "," + stored_others[1:]
        if "timestamp" in others:
            # measured as earlier versions did: the timestamp as text (below), the other
            # keys' JSON without it
            rest = {key: value for key, value in others.items() if key != "timestamp"}
            extra = _dumps(rest) if rest else None
            extra_size = _utf8_len(extra) if extra is not None else 0
    size = (_utf8_len(role) if role is not None else 0) + body_size
    size += _utf8_len(timestamp) + extra_size
    chars = _chars(role or "", body, is_text, extra)
    text: str | None = stored if is_text and has_content else None
    zcontent = None
    if compress and has_content:
        raw = stored.encode()
        if len(raw) >= COMPRESS_THRESHOLD:
            packed = zlib.compress((b"t" if is_text else b"j") + raw, COMPRESS_LEVEL)
            if len(packed) < len(raw):
                zcontent, text = packed, None
    if not is_text and zcontent is None:
        # a non-string content is stored as the last key of the extra keys' JSON
        stored_extra = _with_content(stored_extra, stored)
    return message_record(
        role=column_role,
        content=text,
        timestamp=timestamp,
        extra=stored_extra,
        size=size,
        chars=chars,
        zcontent=zcontent,
    )


def _utf8_len(text: str) -> int:
    """UTF-8 size; a lone surrogate counts the 3 bytes ``surrogatepass`` gives it."""
    if text.isascii():
        return len(text)
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        return len(text.encode("utf-8", "surrogatepass"))


def _with_content(extra: str, content_json: str) -> str:
    """``_dumps({**extras, "content": content})`` from the two JSON texts."""
    return extra[:-1] + ',"content":' + content_json + "}"


def _chars(role: str, body: str, is_text: bool, extra: str | None) -> int:
    """The characters of role + content + extra keys (see :func:`_measure`)."""
    if is_text:
        return len(role) + len(body) + (len(extra) if extra is not None else 0)
    # len('{"content":' + body + '}'), or extra with ',"content":' + body inserted
    return len(role) + len(body) + (len(extra) + 11 if extra is not None else 12)


def _measure(
    role: str, body: str, is_text: bool, timestamp: str, extra: str | None
) -> tuple[int, int]:
    """(size, chars) of a message: the one formula every backend stores and sums.

    All of it is measured on the message as ``get_messages()`` returns it (the original
    strings, never their stored form). ``body`` is the content as text (a string content
    as is, any other as its JSON); ``extra`` the JSON of the other keys (``None``: none).
    The size is the UTF-8 size of role + content + timestamp + extra keys, whether or not
    the content is then stored compressed; a lone surrogate counts 3 bytes (UTF-8 with
    ``surrogatepass``). The characters are role + content + extra keys (a non-string
    content inside the extra keys' JSON), timestamps not counted.
    """
    size = _utf8_len(role) + _utf8_len(body) + _utf8_len(timestamp)
    if extra is not None:
        size += _utf8_len(extra)
    return size, _chars(role, body, is_text, extra)


def measure_message(message: Mapping[str, Any]) -> tuple[int, int]:
    """(size, chars) of a row stored by an earlier version, as ``get_messages()`` returns
    it (with its ``timestamp`` key): the figures ``encode_message`` puts on a record (for
    rows stored without them; adoption and the migrations measure such rows)."""
    content = message.get("content")
    extras = {key: value for key, value in message.items() if key not in _CORE_KEYS}
    is_text = isinstance(content, str)
    body = content if isinstance(content, str) else _dumps(content)
    return _measure(
        str(message.get("role") or ""),
        body,
        is_text,
        str(message.get("timestamp") or ""),
        _dumps(extras) if extras else None,
    )


def encode_metadata(metadata: Any, where: str = "metadata") -> dict[str, Any]:
    """Validate session metadata (a dict of JSON values) and return a private deep copy."""
    if not isinstance(metadata, Mapping):
        raise InvalidMessageError(f"{where} must be a dict, not {type(metadata).__name__}")
    value = dict(metadata)
    _check_json(value, where)
    copied: dict[str, Any] = json.loads(_dumps(value))
    return copied


def dumps_metadata(metadata: Mapping[str, Any]) -> str:
    """The stored JSON text of (already validated) session metadata: its strings, keys
    included, in their stored form."""
    text = _dumps(metadata)
    if _scan(text, _JSON_NUL)[1]:
        return _dumps(escape_json(metadata))
    return text


#: The key under which session metadata that cannot be decoded is shown (its stored text).
UNREADABLE_METADATA_KEY = "_unreadable_metadata"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_metadata(text: Any) -> dict[str, Any] | None:
    """Session metadata from its stored JSON text (``{}`` for NULL; a JSON value that is
    not an object as ``{"value": ...}``), or None when the stored value cannot be decoded."""
    if text is None or text == "" or text == "{}":
        return {}
    if type(text) is not str:
        return None
    try:
        value = json.loads(text, parse_constant=_no_constant)
        if ESCAPE in text:
            value = unescape_json(value)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else {"value": value}


def shown_text(value: Any) -> str:
    """A stored value that cannot be decoded, as text to show (bytes: UTF-8, with
    backslash escapes for what is not)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "backslashreplace")
    return value if isinstance(value, str) else repr(value)


def decode_metadata(text: Any) -> dict[str, Any]:
    """Session metadata from its stored JSON text; never raises: what cannot be decoded is
    kept, as text, under :data:`UNREADABLE_METADATA_KEY` (so a later save keeps it too)."""
    value = read_metadata(text)
    if value is None:
        return {UNREADABLE_METADATA_KEY: shown_text(text)}
    return value


def is_timestamp(value: Any) -> bool:
    """Whether ``value`` is a message timestamp ``add_message`` accepts as given."""
    try:
        return type(value) is str and _timestamp(value) == value
    except InvalidMessageError:
        return False


def check_name(name: Any, what: str = "session name", *, lookup: bool = False) -> str:
    """Validate a session name: a string of printable characters, not only whitespace.

    ``lookup=True`` checks a name that finds an existing session: one made only of
    whitespace is accepted there, so sessions earlier versions let through stay reachable.
    """
    if type(name) is not str:
        raise InvalidMessageError(f"{what} must be a string, not {type(name).__name__}")
    if not name or (name.isspace() and not lookup):
        raise InvalidMessageError(f"{what} must not be empty or only whitespace, got {name!r:.60}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidMessageError(f"{what} must be 1 to {MAX_NAME_LENGTH} characters long")
    _check_str(name, what)
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise InvalidMessageError(f"{what} {name!r} contains control characters")
    return name

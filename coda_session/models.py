"""Value types: the typed message, SessionInfo, and the records the backends exchange."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator
from typing_extensions import TypedDict

from .errors import DamagedDataError
from .escaping import ESCAPE, unescape, unescape_json

if TYPE_CHECKING:
    from collections.abc import Mapping

    from _typeshed import DataclassInstance

__all__ = [
    "ITEM_PREFIX",
    "PLAIN_ITEM",
    "Message",
    "MessageEntry",
    "MessageInput",
    "MessageModel",
    "MessageRecord",
    "SessionInfo",
    "SessionList",
    "SessionRecord",
    "as_dicts",
    "message_record",
    "naming_session",
    "trusted_info",
]


#: Mypy (up to at least 2.4, the version this project pins) does not implement PEP 728's
#: ``extra_items``: under mypy a TypedDict refuses every key it does not list, so a
#: message with a key of the caller's own (``model``, ``call_id``...) would not type-check.
#: Mypy treats a condition on a name ``MYPY`` as true, other checkers and the interpreter
#: see this constant: so mypy reads ``Message`` as ``dict[str, Any]`` and everything else
#: as the TypedDict below.
MYPY = False
if MYPY:
    Message: TypeAlias = dict[str, Any]
else:

    class Message(TypedDict, total=False, extra_items=Any):
        """One message or item, as ``add_message`` takes it and ``get_messages`` returns
        it: a dict with string keys and JSON values, any keys at all, stored exactly.

        The keys listed are the ones the library (or a common chat API) gives a meaning
        to; none is required by the type. At run time a message must have a non-empty
        ``role`` or, for an item without one (``function_call``, ``reasoning``...), a
        non-empty ``type``; a ``timestamp``, when given, must be an ISO-8601 string (the
        time the library files the message under). Every other key is the caller's
        (``extra_items=Any``, PEP 728). Under mypy, which does not implement PEP 728 yet,
        ``Message`` is ``dict[str, Any]``: checkers that do (pyright) check the keys
        listed here.
        """

        role: str
        content: JsonValue
        type: str
        name: str
        id: str
        tool_calls: list[dict[str, Any]]
        tool_call_id: str
        call_id: str
        arguments: str
        output: JsonValue
        timestamp: str


#: What ``add_message`` and ``set_messages`` accept: a :data:`Message` (any mapping with
#: string keys), a pydantic model (stored as ``model_dump(mode="json", exclude_unset=True,
#: by_alias=True)``) or a dataclass instance (stored as ``dataclasses.asdict``).
MessageInput: TypeAlias = "Message | Mapping[str, Any] | BaseModel | DataclassInstance"


class MessageEntry(NamedTuple):
    """One message with what the library keeps beside it (``get_entries()``)."""

    id: int | None
    """The message's stable id in storage (``get_messages_with_ids``); None until saved."""
    timestamp: str
    """The ISO-8601 time the library filed the message under (what ``after:`` and
    ``before:`` search filters compare): the message's own ``timestamp`` when it gave one,
    else the time it was added, in UTC."""
    message: Message
    """The message exactly as it was added."""


class MessageModel(BaseModel):
    """A pydantic view of one message, for validating one in an application (a request
    body, a config file): ``MessageModel.model_validate(d)``.

    The library itself stores plain dicts (:data:`Message`) and never needs this class.
    Keys besides ``role``, ``content``, ``type`` and ``timestamp`` are kept as extra
    fields. ``model_dump(exclude_unset=True)`` gives the dict back as given (this is also
    what ``add_message`` stores when given a pydantic model).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    role: str | None = Field(default=None, min_length=1)
    content: JsonValue = None
    type: str | None = Field(default=None, min_length=1)
    timestamp: str | None = None


class SessionInfo(BaseModel):
    """What ``list_sessions()`` and ``get_session_info()`` report about one session.

    ``created_at`` and ``updated_at`` are timezone-aware UTC datetimes: compare them with
    ``datetime.now(timezone.utc)``, not with a naive ``datetime.now()`` (Python raises
    ``TypeError`` for that comparison). ``size_bytes`` is the size of the session's
    messages in UTF-8 bytes as ``get_messages()`` returns them, uncompressed (role,
    content, timestamp and the JSON of the extra keys); ``message_count`` the number of
    stored messages. Both describe the saved state, and for a branch count everything it
    shows (what it inherited too). ``root_id``, ``parent_id`` and ``fork_point`` place
    it in its branching tree.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    created_at: datetime
    updated_at: datetime
    message_count: int
    size_bytes: int
    metadata: dict[str, Any]
    root_id: str = ""
    """The id of the first session of the branching tree this one belongs to (its own id
    when it is no branch; kept when that session is deleted)."""
    parent_id: str | None = None
    """The id of the session this one was branched from (which may since have been
    deleted), or None."""
    fork_point: int | None = None
    """How many of the parent's messages the branch started with, or None."""

    @model_validator(mode="before")
    @classmethod
    def _own_root(cls, values: Any) -> Any:
        if isinstance(values, dict) and not values.get("root_id") and "id" in values:
            return {**values, "root_id": values["id"]}
        return values

    @classmethod
    def _trusted(
        cls,
        id: str,
        name: str,
        created_at: datetime,
        updated_at: datetime,
        message_count: int,
        size_bytes: int,
        metadata: dict[str, Any],
        root_id: str = "",
        parent_id: str | None = None,
        fork_point: int | None = None,
    ) -> SessionInfo:
        """Build from values the storage already guarantees (no validation).

        ``list_sessions`` builds thousands of these per call; this sets exactly the state
        ``model_construct`` sets, at a third of its cost (a test keeps the two equal).
        """
        return trusted_info(
            {
                "id": id,
                "name": name,
                "created_at": created_at,
                "updated_at": updated_at,
                "message_count": message_count,
                "size_bytes": size_bytes,
                "metadata": metadata,
                "root_id": root_id or id,
                "parent_id": parent_id,
                "fork_point": fork_point,
            }
        )


def trusted_info(values: dict[str, Any]) -> SessionInfo:
    """A SessionInfo around ``values`` (its fields, in order), unvalidated."""
    info = _new(SessionInfo)
    _set_dict(info, values)
    _set_fields(info, _INFO_FIELDS)
    _set_extra(info, None)
    _set_private(info, None)
    return info


def _slot_setter(name: str) -> Callable[[Any, Any], None]:
    # BaseModel keeps these four in slots: calling the slot's own setter skips the generic
    # attribute lookup of object.__setattr__ (a third of the cost of building the object)
    for klass in SessionInfo.__mro__:
        slot = vars(klass).get(name)
        if slot is not None and hasattr(slot, "__set__"):
            setter: Callable[[Any, Any], None] = slot.__set__
            return setter
    return lambda obj, value: object.__setattr__(obj, name, value)


_new = object.__new__
_set_dict = _slot_setter("__dict__")
_set_fields = _slot_setter("__pydantic_fields_set__")
_set_extra = _slot_setter("__pydantic_extra__")
_set_private = _slot_setter("__pydantic_private__")
_INFO_FIELDS = frozenset(SessionInfo.model_fields)


@dataclass(slots=True)
class MessageRecord:
    """One message in its stored form; the unit the repositories read and write.

    Treated as immutable (``with_id`` makes a new one), but not ``frozen``: a frozen
    dataclass sets each field through ``object.__setattr__``, five times the cost of
    building one, and every read row and every saved message builds one.

    Every string in it is in its stored form (:mod:`coda_session.escaping`: NUL, lone
    surrogates and ``␛`` written as ``␛`` + four hex digits; any other string as is);
    ``to_dict()`` returns the original strings.
    ``content`` holds a string content (stored form); a non-string content (a list of parts, a
    dict, ``None``) is kept JSON-encoded under the key ``"content"`` of ``extra`` and
    ``content`` is ``None`` (no extra key can be named ``content``, so this never clashes).
    ``extra`` is the JSON text of the message's other keys, led by its key layout
    (:data:`ITEM_PREFIX`); ``None`` or without the layout only in rows of earlier
    versions, which read with their ``timestamp`` key. ``role`` is the role, or the
    ``type`` of an item without one; ``timestamp`` the time the message is filed under.
    ``id`` is the storage's monotonic ordering key (``None`` until saved).
    ``damage``, when set, says why the stored row cannot be read (a column of the wrong
    type or NULL); reading it (``to_dict``, ``text_length``) raises
    :class:`~coda_session.errors.DamagedDataError`, as does a content or extra JSON that
    cannot be decoded. Nothing is decoded before it is read, so one damaged message never
    makes the others unreadable.
    ``zcontent``, when set, is the content compressed (zlib of ``b"t"`` + UTF-8 text, or of
    ``b"j"`` + JSON for a non-string content); ``content`` is then ``None`` and ``extra``
    has no ``"content"`` key.
    ``size`` and ``chars`` are computed once, by the codec (``encode_message``), and stored
    with the row: ``size`` is the UTF-8 size of the message as ``to_dict()`` returns it,
    uncompressed (role + content, a non-string one as its JSON, + the JSON of the other
    keys; rows of earlier versions: + their timestamp; a lone surrogate counts its 3
    bytes of UTF-8 with ``surrogatepass``);
    ``chars`` the characters the token estimate counts (role, content and extra keys, as
    ``to_dict()`` returns them, a non-string content inside the extra keys' JSON;
    timestamps not).
    """

    role: str
    content: str | None
    timestamp: str
    extra: str | None
    size: int
    chars: int
    id: int | None = None
    zcontent: bytes | None = None
    damage: str | None = None

    def with_id(self, id_: int) -> MessageRecord:
        return message_record(
            role=self.role,
            content=self.content,
            timestamp=self.timestamp,
            extra=self.extra,
            size=self.size,
            chars=self.chars,
            id=id_,
            zcontent=self.zcontent,
            damage=self.damage,
        )

    def damaged(self, reason: str) -> DamagedDataError:
        """The error for this message when it cannot be read."""
        which = "a stored message" if self.id is None else f"message {self.id}"
        return DamagedDataError(f"{which} is damaged: {reason}")

    def _extra(self) -> Any:
        assert self.extra is not None
        try:
            value = json.loads(self.extra)
            return unescape_json(value) if ESCAPE in self.extra else value
        except (ValueError, TypeError, RecursionError) as exc:
            raise self.damaged("its extra keys (metadata) are not JSON") from exc

    def _unpacked(self) -> tuple[bool, Any]:
        """(True, content) when the content is stored compressed, else (False, None)."""
        if self.damage is not None:
            raise self.damaged(self.damage)
        if self.zcontent is None:
            return False, None
        try:
            data = zlib.decompress(self.zcontent)
            if data[:1] == b"t":
                return True, unescape(data[1:].decode())
            if data[:1] == b"j":
                text = data[1:].decode()
                value = json.loads(text)
                return True, unescape_json(value) if ESCAPE in text else value
        except (zlib.error, ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSON
            raise self.damaged("its compressed content cannot be read") from exc
        raise self.damaged("its compressed content has an unknown tag")

    def byte_size(self) -> int:
        """The message's size in UTF-8 bytes, uncompressed (``size``)."""
        return self.size

    def text_length(self) -> int:
        """Characters of role, content and extra keys (``chars``: the token estimate's)."""
        return self.chars

    def to_dict(self) -> dict[str, Any]:
        """The message exactly as the caller gave it (see :data:`ITEM_PREFIX`); a row an
        earlier version stored reads as it always did, with its ``timestamp`` key."""
        if self.damage is not None:
            raise self.damaged(self.damage)
        extra = self.extra
        if extra is not None and extra.startswith(ITEM_PREFIX):
            if extra == PLAIN_ITEM and self.zcontent is None:
                content = self.content
                return {
                    "role": self.role,
                    "content": unescape(content)
                    if content is not None and ESCAPE in content
                    else content,
                }
            return self._item(extra)
        content = self.content
        out: dict[str, Any] = {
            "role": self.role,
            "content": unescape(content) if content is not None and ESCAPE in content else content,
            "timestamp": self.timestamp,
        }
        if self.zcontent is not None:
            out["content"] = self._unpacked()[1]
        if extra is not None:
            extras = self._extra()
            if not isinstance(extras, dict):
                # a database written by other code may hold any JSON here: keep it visible
                extras = {"metadata": extras} if extras is not None else {}
            if self.content is None and "content" in extras:
                out["content"] = extras.pop("content")
            out.update(extras)
        return out

    def _item(self, extra: str) -> dict[str, Any]:
        """An item stored exactly: its keys put back in their order (:data:`ITEM_PREFIX`)."""
        end = extra.find('"', len(ITEM_PREFIX))
        layout = extra[len(ITEM_PREFIX) : end]
        rest = extra[end + 1 :]
        if end < 0 or not rest or rest[0] not in ",}":
            raise self.damaged("its layout of keys cannot be read")
        others: dict[str, Any] = {}
        if rest != "}":
            try:
                text = "{" + rest[1:]
                others = json.loads(text)
                if ESCAPE in text:
                    others = unescape_json(others)
            except (ValueError, TypeError, RecursionError) as exc:
                raise self.damaged("its extra keys (metadata) are not JSON") from exc
        content: Any = None
        if "c" in layout:
            if self.zcontent is not None:
                content = self._unpacked()[1]
            elif self.content is not None:
                content = self.content
                if ESCAPE in content:
                    content = unescape(content)
            elif "content" in others:
                content = others.pop("content")
            else:
                raise self.damaged("its content is missing")
        out: dict[str, Any] = {}
        rest_items = iter(others.items())
        try:
            for kind in layout:
                if kind == "r":
                    out["role"] = self.role
                elif kind == "c":
                    out["content"] = content
                else:
                    key, value = next(rest_items)
                    out[key] = value
        except StopIteration:
            raise self.damaged("its layout of keys does not match its keys") from None
        if next(rest_items, None) is not None:
            raise self.damaged("its layout of keys does not match its keys")
        return out


#: How the extra keys' JSON of a message stored exactly (this version on) begins: a first
#: key ``"␛"`` (no string of a caller's can be stored as that: every ``␛`` of theirs is
#: stored as ``␛241b``, see :mod:`coda_session.escaping`) whose value is the message's key
#: layout, one character per key in the caller's order: ``r`` the ``role`` (in the role
#: column), ``c`` the ``content`` (content column, compressed content, or else the
#: ``"content"`` key at the end of this JSON), ``.`` the next of the other keys of this
#: JSON, in order. Rows without it were stored by earlier versions: they read with the
#: ``timestamp`` key those versions added.
ITEM_PREFIX = '{"' + ESCAPE + '":"'
#: The extra keys' JSON of a message of just ``role`` and a string ``content``, in that
#: order (most messages): compared, not parsed.
PLAIN_ITEM = ITEM_PREFIX + 'rc"}'


def message_record(
    *,
    role: str,
    content: str | None,
    timestamp: str,
    extra: str | None,
    size: int,
    chars: int,
    id: int | None = None,
    zcontent: bytes | None = None,
    damage: str | None = None,
) -> MessageRecord:
    """A :class:`MessageRecord` built by keyword, at the cost of a positional call.

    Calling the class itself with keywords makes CPython build a dict of them and unpack
    it again (about 0.35 µs a record, measured: decoding a row would cost two thirds
    more); a keyword call to a function does not. The library builds every record here, so no
    call site depends on the order of the fields; this one positional call does, and a
    test keeps its parameters the class's fields, in order.
    """
    return MessageRecord(role, content, timestamp, extra, size, chars, id, zcontent, damage)


@contextmanager
def naming_session(name: str) -> Iterator[None]:
    """Re-raise a :class:`DamagedDataError` from inside with the session's name in front."""
    try:
        yield
    except DamagedDataError as exc:
        raise DamagedDataError(f"session {name!r}: {exc}") from exc.__cause__


def as_dicts(records: Iterable[MessageRecord], session: str) -> list[dict[str, Any]]:
    """``[r.to_dict() for r in records]``; a damaged one raises naming ``session``."""
    with naming_session(session):
        return [r.to_dict() for r in records]


class SessionList(list[SessionInfo]):
    """What ``list_sessions()`` returns: a list of :class:`SessionInfo` (compares, copies
    and pickles as one) with ``next_cursor``: the cursor of the next page when a
    ``limit`` cut the listing short, else None."""

    next_cursor: str | None

    def __init__(self, items: Iterable[SessionInfo] = (), next_cursor: str | None = None) -> None:
        super().__init__(items)
        self.next_cursor = next_cursor

    def __reduce__(self) -> Any:
        return (SessionList, (list(self), self.next_cursor))


@dataclass(slots=True)
class SessionRecord:
    """A session row as the repositories return it (never an ORM object)."""

    id: str
    name: str
    created_at: datetime
    updated_at: datetime
    metadata: dict[str, Any]
    message_count: int
    size_bytes: int
    last_message_id: int
    tail: list[MessageRecord] = field(default_factory=list)
    metadata_version: int = 0
    """Changes whenever the stored metadata changes (a save reports it; see SaveResult)."""
    root_id: str = ""
    """The branching tree's key (the session's own id when empty)."""
    parent_id: str | None = None
    fork_point: int | None = None

    def info(self) -> SessionInfo:
        return SessionInfo._trusted(
            id=self.id,
            name=self.name,
            created_at=self.created_at,
            updated_at=self.updated_at,
            message_count=self.message_count,
            size_bytes=self.size_bytes,
            metadata=self.metadata,
            root_id=self.root_id,
            parent_id=self.parent_id,
            fork_point=self.fork_point,
        )

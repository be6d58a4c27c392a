"""Filtered, ordered and paged session listings: the filter, its rules, and its cursor.

What a filter matches is defined here once, in Python (:func:`matches`); the SQL backends
look the same conditions up in the side tables migration 0011 keeps
(:func:`field_conditions` gives them), memory and custom storage evaluate
:func:`matches` over ``list_sessions()``. The rules:

* ``metadata``: every key given must be present with an equal value. A mapping value
  descends (``{"a": {"b": 1}}`` asks for ``metadata["a"]["b"] == 1`` and lets ``a`` hold
  other keys; ``{"a": {}}`` asks for ``a`` to be a mapping); any other value is compared
  whole, as JSON: ``True`` is not ``1``, ``1`` is ``1.0``, strings are compared exactly,
  lists item by item, a mapping inside a list by all of its keys. A missing key never
  matches (``None`` matches a stored null only). Keys and strings are compared as given
  (stored escaped, found as written). A filter reaches at most :data:`DEPTH` levels.
* ``tags``: every tag given is one of the strings of ``metadata["tags"]`` (a list).
* ``name_prefix``: the name starts with it, case and all.
* ``created_after``/``created_before`` (and ``updated_*``): ``after <= t < before``.
* ``parent``: sessions forked from the session of that name; ``root``: the sessions of
  the branching tree the session of that name belongs to (itself included);
  ``roots_only``: sessions that are no branch. A name no session has matches nothing.
* order ``created`` (oldest first), ``updated`` (newest first) or ``name``
  (code-point order), each reversible, the name breaking ties.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from ..errors import InvalidCursorError, InvalidQueryError
from ..escaping import escape, escape_json
from ..models import SessionInfo

__all__ = [
    "DEPTH",
    "ORDERS",
    "FieldCondition",
    "Order",
    "SessionFilter",
    "SessionPage",
    "decode_cursor",
    "encode_cursor",
    "field_conditions",
    "make_filter",
    "matches",
    "name_upper_bound",
    "order_key",
    "page_of",
]

#: How many levels of mappings and lists a metadata filter reaches (migration 0011
#: indexes that many, on every database).
DEPTH = 8

Order = Literal["created", "updated", "name"]
ORDERS: tuple[Order, ...] = ("created", "updated", "name")
_CURSOR_VERSION = 1


@dataclass(frozen=True, slots=True)
class FieldCondition:
    """One row a session's ``session_fields`` must hold: ``path`` (escaped keys, as the
    migration encodes them), ``kind`` and the value (``txt`` for a string; ``num``, as
    text, for a number, or the size of a mapping or list; neither for the others)."""

    path: str
    kind: str
    txt: str | None = None
    num: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class SessionFilter:
    """A validated listing request (build it with :func:`make_filter`).

    ``after`` is the keyset position pages continue from (the last key of the previous
    page: ``(timestamp, name)``, or ``(name,)`` for order ``name``); ``updated_upto``
    (order ``updated``, pages after the first) leaves out sessions updated after the
    first page was read: they moved, and would otherwise be listed twice.
    """

    metadata: Mapping[str, Any] | None = None
    tags: tuple[str, ...] = ()
    name_prefix: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    parent: str | None = None
    root: str | None = None
    roots_only: bool = False
    order: Order = "created"
    descending: bool = False
    limit: int | None = None
    after: tuple[Any, ...] | None = None
    updated_upto: datetime | None = None
    conditions: tuple[FieldCondition, ...] = field(default=())

    @property
    def unfiltered(self) -> bool:
        """True when the filter keeps every session (only order and paging remain)."""
        return not (
            self.conditions
            or self.metadata
            or self.tags
            or self.name_prefix is not None
            or self.created_after is not None
            or self.created_before is not None
            or self.updated_after is not None
            or self.updated_before is not None
            or self.parent is not None
            or self.root is not None
            or self.roots_only
            or self.updated_upto is not None
        )


@dataclass(frozen=True, slots=True)
class SessionPage:
    """What :meth:`~.capabilities.SessionFiltering.find_sessions` returns: a page of
    sessions in the filter's order, and whether more follow it."""

    sessions: list[SessionInfo]
    more: bool


# -- validation ---------------------------------------------------------------------------


def _json_value(value: Any, where: str, depth: int) -> Any:
    """``value`` checked as a JSON value a metadata filter may compare (a copy)."""
    if depth > DEPTH:
        raise InvalidQueryError(f"metadata filter {where} is nested more than {DEPTH} levels")
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidQueryError(f"metadata filter {where} is {value!r}, which JSON has not")
        return value
    if isinstance(value, Mapping):
        return {
            _key(k, where): _json_value(v, f"{where}[{k!r}]", depth + 1) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_json_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    raise InvalidQueryError(
        f"metadata filter {where} is a {type(value).__name__}, not a JSON value"
    )


def _key(key: Any, where: str) -> str:
    if not isinstance(key, str):
        raise InvalidQueryError(f"metadata filter {where} has a key that is no string: {key!r}")
    return key


def _check_metadata(metadata: Any) -> dict[str, Any] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise InvalidQueryError(f"metadata must be a mapping, not {type(metadata).__name__}")
    checked = _json_value(metadata, "metadata", 0)
    assert isinstance(checked, dict)
    return checked


def _check_time(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidQueryError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidQueryError(f"{name} must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return value.astimezone(UTC)


def _check_name(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidQueryError(f"{name} must be a session name (str), not {type(value).__name__}")
    return value


def _check_tags(tags: Any) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str):
        return (tags,)
    if not isinstance(tags, Sequence) and not isinstance(tags, (set, frozenset)):
        raise InvalidQueryError(
            f"tags must be a str or a sequence of str, not {type(tags).__name__}"
        )
    for tag in tags:
        if not isinstance(tag, str):
            raise InvalidQueryError(f"tags must be strings, not {type(tag).__name__}: {tag!r}")
    return tuple(dict.fromkeys(tags))


def make_filter(
    *,
    metadata: Mapping[str, Any] | None = None,
    tags: str | Sequence[str] | None = None,
    name_prefix: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    updated_after: datetime | None = None,
    updated_before: datetime | None = None,
    parent: str | None = None,
    root: str | None = None,
    roots_only: bool = False,
    order: str = "created",
    descending: bool | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> SessionFilter:
    """The listing ``list_sessions(**arguments)`` asks for, validated
    (:class:`~coda_session.errors.InvalidQueryError` for a bad argument,
    :class:`~coda_session.errors.InvalidCursorError` for a bad cursor or one made for
    other filters)."""
    if order not in ORDERS:
        raise InvalidQueryError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    if descending is None:
        descending = order == "updated"
    elif not isinstance(descending, bool):
        raise InvalidQueryError(f"descending must be a bool, not {type(descending).__name__}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidQueryError(f"limit must be a positive int or None, not {limit!r}")
    if not isinstance(roots_only, bool):
        raise InvalidQueryError(f"roots_only must be a bool, not {type(roots_only).__name__}")
    checked = _check_metadata(metadata)
    flt = SessionFilter(
        metadata=checked,
        tags=_check_tags(tags),
        name_prefix=_check_name(name_prefix, "name_prefix"),
        created_after=_check_time(created_after, "created_after"),
        created_before=_check_time(created_before, "created_before"),
        updated_after=_check_time(updated_after, "updated_after"),
        updated_before=_check_time(updated_before, "updated_before"),
        parent=_check_name(parent, "parent"),
        root=_check_name(root, "root"),
        roots_only=roots_only,
        order=order,
        descending=descending,
        limit=limit,
        conditions=tuple(field_conditions(checked)) if checked else (),
    )
    if cursor is None:
        return flt
    after, upto = decode_cursor(cursor, flt)
    return _replace(flt, after=after, updated_upto=upto)


def _replace(flt: SessionFilter, **changes: Any) -> SessionFilter:
    values = {name: getattr(flt, name) for name in SessionFilter.__dataclass_fields__}
    values.update(changes)
    return SessionFilter(**values)


# -- the conditions SQL looks up ----------------------------------------------------------


def _segment(key: str | int) -> str:
    # as migration 0011 writes a path: a key as its length, ':' and itself (no two paths
    # share an encoding), a list index as [i]
    if isinstance(key, int):
        return f"[{key}]"
    return f"{len(key)}:{key}"


def _number(value: int | float) -> str:
    # the number as text the database reads back exactly (CAST AS NUMERIC)
    return str(value) if isinstance(value, int) else repr(value)


def field_conditions(metadata: Mapping[str, Any]) -> list[FieldCondition]:
    """The ``session_fields`` rows a session must hold to match ``metadata`` (a checked
    filter): paths and strings in their stored (escaped) form."""
    found: list[FieldCondition] = []
    _descend(escape_json(dict(metadata)), "", found)
    return found


def _descend(mapping: Mapping[str, Any], path: str, found: list[FieldCondition]) -> None:
    for key, value in mapping.items():
        here = path + _segment(key)
        if isinstance(value, dict):
            if not value:
                found.append(FieldCondition(here, "o"))
            _descend(value, here, found)
        else:
            _whole(value, here, found)


def _whole(value: Any, path: str, found: list[FieldCondition]) -> None:
    if value is None:
        found.append(FieldCondition(path, "z"))
    elif value is True:
        found.append(FieldCondition(path, "t"))
    elif value is False:
        found.append(FieldCondition(path, "f"))
    elif isinstance(value, str):
        found.append(FieldCondition(path, "s", txt=value))
    elif isinstance(value, (int, float)):
        found.append(FieldCondition(path, "n", num=_number(value)))
    elif isinstance(value, dict):
        found.append(FieldCondition(path, "o", num=str(len(value))))
        for key, item in value.items():
            _whole(item, path + _segment(key), found)
    else:
        found.append(FieldCondition(path, "a", num=str(len(value))))
        for index, item in enumerate(value):
            _whole(item, path + _segment(index), found)


def name_upper_bound(prefix: str) -> str | None:
    """The least string above every string starting with ``prefix`` in code-point order
    (None when there is none: the prefix is all U+10FFFF), for a range on the name."""
    chars = list(prefix)
    while chars:
        point = ord(chars[-1]) + 1
        if point == 0xD800:  # stored names hold no surrogate (the codec escapes them)
            point = 0xE000
        if point <= 0x10FFFF:
            chars[-1] = chr(point)
            return "".join(chars)
        chars.pop()
    return None


# -- the reference semantics (memory, custom storage) -------------------------------------


def _equal(stored: Any, wanted: Any) -> bool:
    """JSON equality: types as JSON has them (a bool is no number), numbers by value."""
    if wanted is None or isinstance(wanted, bool):
        return stored is wanted
    if isinstance(wanted, (int, float)):
        return (
            isinstance(stored, (int, float)) and not isinstance(stored, bool) and stored == wanted
        )
    if isinstance(wanted, str):
        return isinstance(stored, str) and stored == wanted
    if isinstance(wanted, dict):
        return (
            isinstance(stored, dict)
            and len(stored) == len(wanted)
            and all(k in stored and _equal(stored[k], v) for k, v in wanted.items())
        )
    return (
        isinstance(stored, list)
        and len(stored) == len(wanted)
        and all(_equal(s, w) for s, w in zip(stored, wanted, strict=True))
    )


def _has(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    for key, value in wanted.items():
        if key not in stored:
            return False
        here = stored[key]
        if isinstance(value, dict):
            if not isinstance(here, dict) or not _has(here, value):
                return False
        elif not _equal(here, value):
            return False
    return True


def matches(
    flt: SessionFilter,
    info: SessionInfo,
    by_name: Mapping[str, SessionInfo],
) -> bool:
    """True when ``info`` passes ``flt``'s filters (paging aside); ``by_name`` resolves
    ``parent`` and ``root`` (the listed sessions by name)."""
    if flt.metadata and not _has(info.metadata, flt.metadata):
        return False
    if flt.tags:
        stored = info.metadata.get("tags")
        if not isinstance(stored, list):
            return False
        have = {t for t in stored if isinstance(t, str)}
        if not all(t in have for t in flt.tags):
            return False
    if flt.name_prefix is not None and not info.name.startswith(flt.name_prefix):
        return False
    if not _within(info.created_at, flt.created_after, flt.created_before):
        return False
    if not _within(info.updated_at, flt.updated_after, flt.updated_before):
        return False
    if flt.updated_upto is not None and info.updated_at > flt.updated_upto:
        return False
    if flt.roots_only and info.parent_id is not None:
        return False
    if flt.parent is not None:
        parent = by_name.get(flt.parent)
        if parent is None or info.parent_id != parent.id:
            return False
    if flt.root is not None:
        member = by_name.get(flt.root)
        if member is None or info.root_id != member.root_id:
            return False
    return True


def _within(when: datetime, after: datetime | None, before: datetime | None) -> bool:
    return (after is None or when >= after) and (before is None or when < before)


def order_key(flt: SessionFilter, info: SessionInfo) -> tuple[Any, ...]:
    """``info``'s key in ``flt``'s order (ascending; the name, in its stored form as SQL
    compares it, breaks ties)."""
    name = escape(info.name)
    if flt.order == "name":
        return (name,)
    when = info.created_at if flt.order == "created" else info.updated_at
    return (when, name)


def page_of(flt: SessionFilter, infos: Sequence[SessionInfo]) -> SessionPage:
    """The page ``flt`` asks for, picked out of every listed session (the Python path)."""
    by_name = {i.name: i for i in infos}
    kept = [i for i in infos if matches(flt, i, by_name)]
    kept.sort(key=lambda i: order_key(flt, i), reverse=flt.descending)
    if flt.after is not None:
        after = flt.after
        if flt.descending:
            kept = [i for i in kept if order_key(flt, i) < after]
        else:
            kept = [i for i in kept if order_key(flt, i) > after]
    if flt.limit is None:
        return SessionPage(kept, more=False)
    return SessionPage(kept[: flt.limit], more=len(kept) > flt.limit)


# -- the cursor ---------------------------------------------------------------------------


def _fingerprint(flt: SessionFilter) -> str:
    """What a cursor must have been made for: every filter and the order."""

    def when(t: datetime | None) -> str | None:
        return None if t is None else t.isoformat()

    described = [
        escape_json(flt.metadata) if flt.metadata else None,
        sorted(escape(t) for t in flt.tags),
        None if flt.name_prefix is None else escape(flt.name_prefix),
        when(flt.created_after),
        when(flt.created_before),
        when(flt.updated_after),
        when(flt.updated_before),
        None if flt.parent is None else escape(flt.parent),
        None if flt.root is None else escape(flt.root),
        flt.roots_only,
        flt.order,
        flt.descending,
    ]
    text = json.dumps(described, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def encode_cursor(flt: SessionFilter, last: SessionInfo, upto: datetime | None) -> str:
    """The cursor of the page after one that ended with ``last``; ``upto`` (order
    ``updated``) is when the listing's first page was read."""
    key = order_key(flt, last)
    body = {
        "v": _CURSOR_VERSION,
        "f": _fingerprint(flt),
        "k": [k.isoformat() if isinstance(k, datetime) else k for k in key],
        "u": None if upto is None else upto.isoformat(),
    }
    raw = json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, flt: SessionFilter) -> tuple[tuple[Any, ...], datetime | None]:
    """(the keyset position, the pin of order ``updated``) of a cursor made for ``flt``."""
    if not isinstance(cursor, str):
        raise InvalidCursorError(f"a cursor is a str, not {type(cursor).__name__}")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        body = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursorError("the cursor is malformed (not one list_sessions made)") from exc
    if not isinstance(body, dict) or body.get("v") != _CURSOR_VERSION:
        raise InvalidCursorError("the cursor is not one this version of list_sessions made")
    if body.get("f") != _fingerprint(flt):
        raise InvalidCursorError(
            "the cursor was made for other filters or another order than this call's"
        )
    key, upto = body.get("k"), body.get("u")
    width = 1 if flt.order == "name" else 2
    if not isinstance(key, list) or len(key) != width or not all(isinstance(k, str) for k in key):
        raise InvalidCursorError("the cursor is malformed (its position)")
    try:
        position: tuple[Any, ...]
        position = (key[0],) if width == 1 else (_aware(key[0]), key[1])
        pin = None if upto is None else _aware(upto)
    except (ValueError, TypeError) as exc:
        raise InvalidCursorError("the cursor is malformed (its position)") from exc
    return position, pin


def _aware(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("naive")
    return value.astimezone(UTC)

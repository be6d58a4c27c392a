"""The stored form of text: any Python string, kept storable as UTF-8 by every database.

This is the codec's lowest layer (see :mod:`coda_session.codec` for the whole picture); it
lives apart only so that :class:`~coda_session.models.MessageRecord`, below the codec,
can decode what it reads.

Three kinds of character are written as :data:`ESCAPE` (U+241B, ``␛``, SYMBOL FOR
ESCAPE) followed by the character's code point as four lowercase hex digits:

* NUL (U+0000) — ``␛0000``;
* a lone surrogate (U+D800 to U+DFFF, e.g. from bytes decoded with ``surrogateescape``)
  — ``␛dc80``;
* the escape character itself — ``␛241b``.

Every other character is stored as it is, so a string holding none of the three is stored
unchanged. The stored form never holds NUL or a surrogate, and in it every ``␛`` begins
one of these codes: reading it back left to right is unambiguous, and :func:`unescape`
undoes exactly what :func:`escape` did. :func:`unescape` decodes only those codes (a
``␛`` followed by anything else is left as it is).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ESCAPE", "escape", "escape_json", "unescape", "unescape_json"]

#: The escape character of the stored form (U+241B SYMBOL FOR ESCAPE, shown as ``␛``).
ESCAPE = "\u241b"

_SPECIAL = re.compile(r"[\x00\u241b\ud800-\udfff]")
_CODED = re.compile(r"\u241b(0000|241b|d[89a-f][0-9a-f]{2})")


def _code(match: re.Match[str]) -> str:
    return f"{ESCAPE}{ord(match.group()):04x}"


def _char(match: re.Match[str]) -> str:
    return chr(int(match.group(1), 16))


def escape(text: str) -> str:
    """``text`` in its stored form (the same string when nothing needs escaping)."""
    return _SPECIAL.sub(_code, text)


def unescape(text: str) -> str:
    """The string whose stored form is ``text`` (the inverse of :func:`escape`)."""
    return _CODED.sub(_char, text) if ESCAPE in text else text


def escape_json(value: Any) -> Any:
    """A copy of a JSON value with every string in it (dict keys too) escaped; a tuple
    becomes a list, as JSON stores it."""
    kind = type(value)
    if kind is str:
        return _SPECIAL.sub(_code, value)
    if kind is list or kind is tuple:
        return [escape_json(item) for item in value]
    if kind is dict:
        return {_SPECIAL.sub(_code, key): escape_json(item) for key, item in value.items()}
    return value


def unescape_json(value: Any) -> Any:
    """The inverse of :func:`escape_json` (on a value decoded from JSON)."""
    kind = type(value)
    if kind is str:
        return _CODED.sub(_char, value) if ESCAPE in value else value
    if kind is list:
        return [unescape_json(item) for item in value]
    if kind is dict:
        return {
            (_CODED.sub(_char, key) if ESCAPE in key else key): unescape_json(item)
            for key, item in value.items()
        }
    return value

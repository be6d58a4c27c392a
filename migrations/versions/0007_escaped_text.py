"""Strings are stored in the codec's escaped form: escape the ``␛`` of existing rows.

From this revision on, every string of a message (its content, plain or compressed, and
the keys and values of its extra keys) and of a session's metadata is stored in the form
:mod:`coda_session.escaping` defines: NUL, a lone surrogate and ``␛`` (U+241B) are written
as ``␛`` + the code point in four lowercase hex digits (``␛0000``, ``␛dc80``, ``␛241b``);
every other character as it is. So that every ``␛`` in the database begins such a code,
this revision rewrites the strings that already hold one (``"a ␛ b"`` becomes
``"a ␛241b b"``; they read back unchanged), and the NUL characters a database written by
other code may hold. Rows without either are not touched, nor are their sizes (they are
measured on the strings as returned, which do not change).

Downgrading decodes the strings back; it refuses, naming the message or session, when one
holds a NUL or a lone surrogate, which the older code cannot store (delete or edit those
first).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

import contextlib
import json
import re
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: rows rewritten in Python per page (keeps the migration's memory bounded)
PAGE = 1000
#: what the older code cannot store: NUL and lone surrogates
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")

messages = sa.table(
    "messages",
    sa.column("id", sa.Integer),
    sa.column("session_id", sa.Text),
    sa.column("content", sa.Text),
    sa.column("metadata", sa.Text),
    sa.column("content_zlib", sa.LargeBinary),
)
sessions = sa.table(
    "sessions",
    sa.column("id", sa.Text),
    sa.column("name", sa.Text),
    sa.column("metadata", sa.Text),
)

Text = Callable[[str], str]
Json = Callable[[Any], Any]


# -- the stored form, frozen ------------------------------------------------------------
# coda_session.escaping as it was when this revision was written down, copied here: a
# later library must not change what an old revision writes. A test
# (tests/test_frozen_migrations.py) checks that it still agrees with the live module.

#: The escape character of the stored form (U+241B SYMBOL FOR ESCAPE, shown as ``␛``).
ESCAPE = "\u241b"

_SPECIAL = re.compile(r"[\x00\u241b\ud800-\udfff]")
_CODED = re.compile(r"\u241b(0000|241b|d[89a-f][0-9a-f]{2})")


class FrozenError(Exception):
    """What the library raised here: ``coda_error`` names its class in
    ``coda_session.errors``, which ``migrations/env.py`` raises in its place with the same
    message (a revision imports nothing of the library)."""

    def __init__(self, coda_error: str, message: str) -> None:
        super().__init__(message)
        self.coda_error = coda_error


def _code(match: re.Match[str]) -> str:
    return f"{ESCAPE}{ord(match.group()):04x}"


def _char(match: re.Match[str]) -> str:
    return chr(int(match.group(1), 16))


def escape(text: str) -> str:
    """``text`` in its stored form: NUL, lone surrogates and ``␛`` as ``␛`` + four hex
    digits (the same string when nothing needs escaping)."""
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


# -- the revision -------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    # as the codec writes JSON; allow_nan: a value written by other code is kept as it is
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _json_text(text: Any, convert: Json) -> Any:
    """``text`` (JSON) with its strings converted, or ``text`` itself when that changes
    nothing or it is not JSON (damaged rows stay as they are, and read as damaged)."""
    if type(text) is not str:
        return text
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return text
    converted = _dumps(convert(value))
    return text if converted == _dumps(value) else converted


def _packed(data: Any, text: Text, convert: Json) -> Any:
    """A compressed content (zlib of b"t" + text or b"j" + JSON) with its strings
    converted, or ``data`` itself when unchanged or unreadable."""
    if data is None:
        return None
    data = bytes(data)
    try:
        raw = zlib.decompress(data)
        body = raw[1:].decode()
    except (zlib.error, UnicodeDecodeError):
        return data
    if raw[:1] == b"t":
        new = text(body)
    elif raw[:1] == b"j":
        new = _json_text(body, convert)
    else:
        return data
    return data if new == body else zlib.compress(raw[:1] + new.encode(), 6)


def _text(value: Any, text: Text) -> Any:
    return text(value) if type(value) is str else value


def _like(column: Any, needle: str) -> Any:
    # "!" as LIKE's escape character: PostgreSQL's default one is the backslash
    return sa.cast(column, sa.Text).like(f"%{needle}%", escape="!")


def _candidates(sqlite: bool, upgrading: bool) -> Any:
    """Message rows that may hold a string to convert (the rest are not read)."""
    m = messages.c
    found = [
        _like(m.content, ESCAPE),
        _like(m["metadata"], ESCAPE),
        _like(m["metadata"], "\\u"),  # JSON written by other code may spell ␛ or NUL so
        m.content_zlib.is_not(None),
    ]
    if sqlite and upgrading:  # SQLite text may hold NUL (written by other code)
        found.append(sa.func.instr(sa.cast(m.content, sa.LargeBinary), sa.literal(b"\x00")) > 0)
    return sa.or_(*found)


def _as_json(value: Any, sqlite: bool) -> Any:
    """A JSON text for a ``metadata`` column: a server's ``json`` column takes a text
    parameter only through a cast (still a bound parameter)."""
    if sqlite or value is None:
        return value
    return sa.cast(sa.literal(value, sa.Text), sa.JSON)


def _convert(text: Text, convert: Json, check: Callable[..., None] | None) -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    m = messages.c
    # JSON columns read as their text on every database (a server's driver may decode them)
    select = (
        sa.select(m.id, m.session_id, m.content, sa.cast(m["metadata"], sa.Text), m.content_zlib)
        .where(_candidates(sqlite, check is None), m.id > sa.bindparam("after"))
        .order_by(m.id)
        .limit(PAGE)
    )
    after = 0
    while rows := bind.execute(select, {"after": after}).all():
        for row_id, session_id, content, extra, packed in rows:
            new = {
                "content": _text(content, text),
                "metadata": _json_text(extra, convert),
                "content_zlib": _packed(packed, text, convert),
            }
            changed = {
                key: value
                for key, value, old in zip(new, new.values(), (content, extra, packed), strict=True)
                if value is not old and value != old
            }
            if changed:
                if check is not None:
                    check(f"message {row_id} of session {session_id!r}", content, extra, packed)
                if "metadata" in changed:
                    changed["metadata"] = _as_json(changed["metadata"], sqlite)
                bind.execute(sa.update(messages).where(m.id == row_id).values(**changed))
        after = int(rows[-1][0])
    s = sessions.c
    for session_id, name, meta in bind.execute(
        sa.select(s.id, s.name, sa.cast(s["metadata"], sa.Text)).where(
            sa.or_(_like(s["metadata"], ESCAPE), _like(s["metadata"], "\\u"))
        )
    ).all():
        converted = _json_text(meta, convert)
        if converted != meta:
            if check is not None:
                check(f"the metadata of session {name!r}", None, meta, None)
            bind.execute(
                sa.update(sessions)
                .where(s.id == session_id)
                .values(metadata=_as_json(converted, sqlite))
            )


def _refuse_unstorable(where: str, content: Any, extra: Any, packed: Any) -> None:
    """Raise when a string of these stored values decodes to a NUL or a lone surrogate."""
    texts = [v for v in (content, extra) if type(v) is str]
    if packed is not None:
        with contextlib.suppress(zlib.error, UnicodeDecodeError):  # unreadable: kept as is
            texts.append(zlib.decompress(bytes(packed))[1:].decode())
    for stored in texts:
        # a JSON text's strings are decoded the same way: its codes are in the raw text
        if ESCAPE in stored and _UNSTORABLE.search(unescape(stored)) is not None:
            raise FrozenError(
                "SchemaVersionError",
                f"cannot downgrade below revision 0007: {where} holds a NUL character or "
                "a lone surrogate, which revision 0006 cannot store; delete or edit it "
                "first (nothing was changed)",
            )


def upgrade() -> None:
    _convert(escape, escape_json, None)


def downgrade() -> None:
    _convert(unescape, unescape_json, _refuse_unstorable)

"""Each message stores its size and characters; sessions keep a metadata version.

``messages.size_bytes`` is the UTF-8 size of the message as ``get_messages()`` returns it,
uncompressed (role + content, a non-string content as its JSON, + timestamp + the JSON of
the extra keys), and ``messages.char_count`` the characters the token estimate counts.
Both are computed once, by the codec, when a message is written; the session's
``size_bytes``, truncations and the token count sum them. Existing rows are backfilled:
plain text contents in SQL, compressed and non-string contents decoded in Python, a page
at a time. ``sessions.size_bytes`` and ``message_count`` are then recomputed from the
messages, so a session's size no longer depends on compression.

``sessions.metadata_version`` is bumped by every write that changes ``metadata``: a save
whose caller saw the current version neither reads nor decodes the metadata.

Downgrading drops the columns and recounts ``sessions.size_bytes`` as revision 0004's
code counts it (compressed contents at their compressed size).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import json
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: rows decoded in Python per page (keeps the migration's memory bounded)
PAGE = 1000

messages = sa.table(
    "messages",
    sa.column("id", sa.Integer),
    sa.column("role", sa.Text),
    sa.column("content", sa.Text),
    sa.column("timestamp", sa.Text),
    sa.column("metadata", sa.Text),
    sa.column("content_zlib", sa.LargeBinary),
    sa.column("size_bytes", sa.BigInteger),
    sa.column("char_count", sa.BigInteger),
)


# -- the codec's measurement, frozen ----------------------------------------------------
# What the library did to a stored row when this revision was written down
# (MessageRecord.to_dict, then codec.measure_message), copied here and reduced to what this
# revision calls: a later codec must not change what an old revision writes. A test
# (tests/test_frozen_migrations.py) checks that it still agrees with the live codec.

ESCAPE = "\u241b"
_CODED = re.compile(r"\u241b(0000|241b|d[89a-f][0-9a-f]{2})")
_CORE_KEYS = ("role", "content", "timestamp")


class FrozenError(Exception):
    """What the library raised here: ``coda_error`` names its class in
    ``coda_session.errors``, which ``migrations/env.py`` raises in its place with the same
    message (a revision imports nothing of the library)."""

    def __init__(self, coda_error: str, message: str) -> None:
        super().__init__(message)
        self.coda_error = coda_error


def _char(match: re.Match[str]) -> str:
    return chr(int(match.group(1), 16))


def unescape(text: str) -> str:
    """The string whose stored form is ``text`` (escaping.unescape)."""
    return _CODED.sub(_char, text) if ESCAPE in text else text


def unescape_json(value: Any) -> Any:
    """A JSON value decoded with every string in it unescaped (escaping.unescape_json)."""
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


def _damaged(row_id: int, reason: str) -> FrozenError:
    return FrozenError("DamagedDataError", f"message {row_id} is damaged: {reason}")


def _extra(row_id: int, extra: Any) -> Any:
    try:
        value = json.loads(extra)
        return unescape_json(value) if ESCAPE in extra else value
    except (ValueError, TypeError, RecursionError) as exc:
        raise _damaged(row_id, "its extra keys (metadata) are not JSON") from exc


def _unpacked(row_id: int, packed: bytes) -> Any:
    try:
        data = zlib.decompress(packed)
        if data[:1] == b"t":
            return unescape(data[1:].decode())
        if data[:1] == b"j":
            text = data[1:].decode()
            value = json.loads(text)
            return unescape_json(value) if ESCAPE in text else value
    except (zlib.error, ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSON
        raise _damaged(row_id, "its compressed content cannot be read") from exc
    raise _damaged(row_id, "its compressed content has an unknown tag")


def stored_message(
    row_id: int, role: Any, content: Any, timestamp: Any, extra: Any, packed: bytes | None
) -> dict[str, Any]:
    """A stored row as the message dict ``get_messages()`` returned (MessageRecord.to_dict)."""
    out: dict[str, Any] = {
        "role": role,
        "content": unescape(content) if content is not None and ESCAPE in content else content,
        "timestamp": timestamp,
    }
    if packed is not None:
        out["content"] = _unpacked(row_id, packed)
    if extra is not None:
        extras = _extra(row_id, extra)
        if not isinstance(extras, dict):
            # a database written by other code may hold any JSON here: keep it visible
            extras = {"metadata": extras} if extras is not None else {}
        if content is None and "content" in extras:
            out["content"] = extras.pop("content")
        out.update(extras)
    return out


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError) as exc:
        raise FrozenError("InvalidMessageError", f"value cannot be stored as JSON: {exc}") from None


def _utf8_len(text: str) -> int:
    """UTF-8 size; a lone surrogate counts the 3 bytes ``surrogatepass`` gives it."""
    if text.isascii():
        return len(text)
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        return len(text.encode("utf-8", "surrogatepass"))


def _char_count(role: str, body: str, is_text: bool, extra: str | None) -> int:
    if is_text:
        return len(role) + len(body) + (len(extra) if extra is not None else 0)
    # len('{"content":' + body + '}'), or extra with ',"content":' + body inserted
    return len(role) + len(body) + (len(extra) + 11 if extra is not None else 12)


def measure_message(message: Mapping[str, Any]) -> tuple[int, int]:
    """(size, chars) of a message dict (codec.measure_message): the UTF-8 size of role +
    content (a non-string one as its JSON) + timestamp + the JSON of the extra keys, and
    the characters of role + content + extra keys."""
    content = message.get("content")
    extras = {key: value for key, value in message.items() if key not in _CORE_KEYS}
    is_text = isinstance(content, str)
    body = content if isinstance(content, str) else _dumps(content)
    role = str(message.get("role") or "")
    timestamp = str(message.get("timestamp") or "")
    extra = _dumps(extras) if extras else None
    size = _utf8_len(role) + _utf8_len(body) + _utf8_len(timestamp)
    if extra is not None:
        size += _utf8_len(extra)
    return size, _char_count(role, body, is_text, extra)


# -- the revision -------------------------------------------------------------------------


def _octets(column: str, sqlite: bool) -> str:
    if sqlite:
        return f"coalesce(length(CAST({column} AS BLOB)), 0)"
    return f"coalesce(octet_length(CAST({column} AS TEXT)), 0)"


def _chars(column: str) -> str:
    return f"coalesce(length(CAST({column} AS TEXT)), 0)"


def _backfill_in_python(bind: sa.Connection) -> None:
    """Rows whose content is compressed or not a string, decoded as get_messages() does."""
    m = messages.c
    select = (
        sa.select(m.id, m.role, m.content, m.timestamp, m["metadata"], m.content_zlib)
        .where(
            sa.or_(m.content_zlib.is_not(None), m.content.is_(None)), m.id > sa.bindparam("after")
        )
        .order_by(m.id)
        .limit(PAGE)
    )
    update = (
        sa.update(messages)
        .where(m.id == sa.bindparam("row_id"))
        .values(size_bytes=sa.bindparam("size"), char_count=sa.bindparam("chars"))
    )
    after = 0
    while True:
        rows = bind.execute(select, {"after": after}).all()
        if not rows:
            return
        values = []
        for row_id, role, content, ts, extra, packed in rows:
            stored = stored_message(
                int(row_id),
                role if role is not None else "",
                content,
                ts if isinstance(ts, str) else ("" if ts is None else str(ts)),
                extra,
                None if packed is None else bytes(packed),
            )
            size, chars = measure_message(stored)
            values.append({"row_id": row_id, "size": size, "chars": chars})
        bind.execute(update, values)
        after = int(rows[-1][0])


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    # plain ALTER TABLE ADD COLUMN, on SQLite too: batch mode would rebuild messages and
    # lose its AUTOINCREMENT (0004); SQLite adds a NOT NULL column with a default in place
    for name in ("size_bytes", "char_count"):
        op.add_column(
            "messages",
            sa.Column(name, sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        )
    op.add_column(
        "sessions",
        sa.Column("metadata_version", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    # a plain text content, stored as the codec writes it: its figures are the columns'
    size = " + ".join(_octets(c, sqlite) for c in ("role", "content", "timestamp", "metadata"))
    chars = " + ".join(_chars(c) for c in ("role", "content", "metadata"))
    # built from constant column names only; no value is spliced in
    op.execute(
        f"UPDATE messages SET size_bytes = {size}, char_count = {chars} "  # noqa: S608
        "WHERE content_zlib IS NULL AND content IS NOT NULL"
    )
    _backfill_in_python(bind)
    op.execute(
        "UPDATE sessions SET "
        "message_count = (SELECT count(*) FROM messages m WHERE m.session_id = sessions.id), "
        "size_bytes = (SELECT coalesce(sum(m.size_bytes), 0) FROM messages m "
        "WHERE m.session_id = sessions.id)"
    )


def downgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    # revision 0004's code counts stored bytes, a compressed content at its compressed size
    size = " + ".join(
        [_octets(f"m.{c}", sqlite) for c in ("role", "content", "timestamp", "metadata")]
        + [f"coalesce({'length' if sqlite else 'octet_length'}(m.content_zlib), 0)"]
    )
    op.execute(
        f"UPDATE sessions SET size_bytes = (SELECT coalesce(sum({size}), 0) "  # noqa: S608
        "FROM messages m WHERE m.session_id = sessions.id)"
    )
    # on SQLite dropping columns rebuilds the table: keep its AUTOINCREMENT (0004)
    with op.batch_alter_table(
        "messages", table_kwargs={"sqlite_autoincrement": True} if sqlite else {}
    ) as batch:
        batch.drop_column("char_count")
        batch.drop_column("size_bytes")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("metadata_version")

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

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from coda_session.codec import measure_message
from coda_session.models import MessageRecord

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
            stored = MessageRecord(
                role if role is not None else "",
                content,
                ts if isinstance(ts, str) else ("" if ts is None else str(ts)),
                extra,
                0,
                0,
                int(row_id),
                None if packed is None else bytes(packed),
            )
            size, chars = measure_message(stored.to_dict())
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

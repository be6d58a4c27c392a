"""Store large message contents compressed: messages.content_zlib.

With ``compress_messages`` on, a content of 1 KiB or more is stored zlib-compressed in
this column (``content`` is then NULL). Rows written before keep their plain content, so a
database holds both kinds and reads them alike. Downgrading inflates every compressed
content back into ``content`` (or into the message's JSON metadata for a non-string
content) before the column goes, so no message is lost.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import json
import zlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("content_zlib", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    bind = op.get_bind()
    messages = sa.table(
        "messages",
        sa.column("id", sa.Integer),
        sa.column("content", sa.Text),
        sa.column("metadata", sa.Text),
        sa.column("content_zlib", sa.LargeBinary),
    )
    rows = bind.execute(
        sa.select(messages.c.id, messages.c["metadata"], messages.c.content_zlib).where(
            messages.c.content_zlib.is_not(None)
        )
    ).all()
    for row_id, meta, packed in rows:
        data = zlib.decompress(packed)
        values: dict[str, object] = {"content_zlib": None}
        if data[:1] == b"t":
            values["content"] = data[1:].decode()
        else:
            extra = json.loads(meta) if meta else {}
            extra["content"] = json.loads(data[1:])
            dumped = json.dumps(extra, ensure_ascii=False, separators=(",", ":"))
            # a server's JSON column takes no text parameter as is (PostgreSQL: "column
            # is of type json but expression is of type character varying"): cast it
            values["metadata"] = (
                dumped
                if bind.dialect.name == "sqlite"
                else sa.cast(sa.literal(dumped, sa.Text()), sa.JSON())
            )
        bind.execute(sa.update(messages).where(messages.c.id == row_id).values(**values))
    # sizes were counted compressed: recount them as the older schema does
    size = " + ".join(
        (
            f"coalesce(length(CAST(m.{c} AS BLOB)), 0)"
            if bind.dialect.name == "sqlite"
            else f"coalesce(octet_length(CAST(m.{c} AS TEXT)), 0)"
        )
        for c in ("role", "content", "timestamp", "metadata")
    )
    op.execute(
        f"UPDATE sessions SET size_bytes = (SELECT coalesce(sum({size}), 0) "  # noqa: S608
        "FROM messages m WHERE m.session_id = sessions.id)"
    )
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("content_zlib")

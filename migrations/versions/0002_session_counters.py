"""Keep message_count and size_bytes on sessions, so listing never scans messages.

Both columns are filled from the messages already stored (a database adopted from the
spec's raw schema keeps every row and gets correct counters).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _bytes(column: str) -> str:
    if op.get_bind().dialect.name == "sqlite":
        return f"coalesce(length(CAST(m.{column} AS BLOB)), 0)"
    return f"coalesce(octet_length(CAST(m.{column} AS TEXT)), 0)"


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(
            sa.Column("message_count", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(
            sa.Column("size_bytes", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
    size = " + ".join(_bytes(c) for c in ("role", "content", "timestamp", "metadata"))
    # built from constant column names only; no value is spliced in
    op.execute(
        "UPDATE sessions SET "  # noqa: S608
        "message_count = (SELECT count(*) FROM messages m WHERE m.session_id = sessions.id), "
        f"size_bytes = (SELECT coalesce(sum({size}), 0) FROM messages m "
        "WHERE m.session_id = sessions.id)"
    )


def downgrade() -> None:
    # batch mode rebuilds sessions by copy-and-drop on SQLite: migrations run with foreign
    # keys off and env.py checks PRAGMA foreign_key_check before committing
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("size_bytes")
        batch.drop_column("message_count")

"""Never reuse message ids: messages.id becomes AUTOINCREMENT on SQLite.

Without it SQLite hands the ids of deleted newest rows out again, and a truncation
bounded by "the newest message this writer had seen" could remove messages another
writer saved later under a reused id. Other databases' sequences never reuse ids, so
this changes SQLite only (a table rebuild that keeps every row and id).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "messages", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ):
        pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("messages", recreate="always"):
        pass
